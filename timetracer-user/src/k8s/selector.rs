//! Label selectors as `kubectl -l` takes them: `app=api,tier in (web,edge),!canary`.
//!
//! The `kube` crate evaluates selectors ([`kube::core::Selector`], [`SelectorExt::matches`])
//! and prints them for the API server, but it has no parser for the string syntax, so the
//! parsing is ours (the grammar of apimachinery's `labels.Parse`). The parsed selector is sent
//! to the API server (the watch only returns matching pods) *and* evaluated locally, so a
//! mistake is reported at start with the position and the fix instead of as an API error in
//! a retry loop, and the decision for one pod is testable without a server.
use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt as _};

/// A selector that cannot be used, with where and why.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid label selector {input:?} at character {at}: {why} \
     (examples: `app=api`, `tier in (web,edge)`, `!canary`, `env!=dev`, joined with `,`)"
)]
pub struct SelectorError {
    pub input: String,
    /// 1-based character position.
    pub at: usize,
    pub why: String,
}

/// A parsed label selector; the empty selector matches every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Selector);

impl LabelSelector {
    /// Parses `kubectl -l` syntax: requirements separated by `,`, each `key`, `!key`,
    /// `key=value`, `key==value`, `key!=value`, `key in (v1,v2)` or `key notin (v1,v2)`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser {
            input,
            chars: input.char_indices().collect(),
            i: 0,
        };
        let mut exprs = Vec::new();
        p.skip_ws();
        if p.done() {
            return Ok(Self::default());
        }
        loop {
            exprs.push(p.requirement()?);
            p.skip_ws();
            if p.done() {
                break;
            }
            p.expect(',')?;
        }
        Ok(Self(exprs.into_iter().collect()))
    }

    /// The pod's labels satisfy every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }

    /// Matches every pod (no requirement).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.selects_all()
    }
}

/// The canonical form sent to the API server (`labelSelector=`).
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).map(|&(_, c)| c)
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }
    fn err(&self, why: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_owned(),
            at: self.i + 1,
            why: why.into(),
        }
    }
    fn expect(&mut self, c: char) -> Result<(), SelectorError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!(
                "expected `{c}`, found {}",
                self.peek()
                    .map_or("the end".to_owned(), |c| format!("`{c}`"))
            )))
        }
    }
    /// A run of characters allowed in keys and values.
    fn word(&mut self) -> &str {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            self.i += 1;
        }
        let from = self.chars.get(start).map_or(self.input.len(), |&(b, _)| b);
        let to = self.chars.get(self.i).map_or(self.input.len(), |&(b, _)| b);
        &self.input[from..to]
    }
    fn key(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let at = self.i;
        let k = self.word().to_owned();
        if k.is_empty() {
            return Err(self.err("expected a label key"));
        }
        valid_key(&k).map_err(|why| SelectorError {
            input: self.input.to_owned(),
            at: at + 1,
            why,
        })?;
        Ok(k)
    }
    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let at = self.i;
        let v = self.word().to_owned();
        valid_value(&v).map_err(|why| SelectorError {
            input: self.input.to_owned(),
            at: at + 1,
            why,
        })?;
        Ok(v)
    }
    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect('(')?;
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some(')') => {
                    self.i += 1;
                    return Ok(values);
                }
                _ => return Err(self.err("expected `,` or `)` in a value set")),
            }
        }
    }
    fn requirement(&mut self) -> Result<Expression, SelectorError> {
        self.skip_ws();
        if self.peek() == Some('!') {
            self.i += 1;
            return Ok(Expression::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => Ok(Expression::Exists(key)),
            Some('=') => {
                self.i += 1;
                if self.peek() == Some('=') {
                    self.i += 1;
                }
                Ok(Expression::Equal(key, self.value()?))
            }
            Some('!') => {
                self.i += 1;
                self.expect('=')?;
                Ok(Expression::NotEqual(key, self.value()?))
            }
            Some('<' | '>') => Err(self.err(
                "`<` and `>` compare numbers in node selectors; label selectors have no order",
            )),
            Some(_) => {
                let at = self.i;
                match self.word() {
                    "in" => Ok(Expression::In(key, self.set()?)),
                    "notin" => Ok(Expression::NotIn(key, self.set()?)),
                    other => {
                        let other = other.to_owned();
                        self.i = at;
                        Err(self.err(format!(
                            "expected `=`, `!=`, `in`, `notin`, `,` or the end after `{key}`, \
                             found `{}`",
                            if other.is_empty() {
                                self.peek().map(String::from).unwrap_or_default()
                            } else {
                                other
                            }
                        )))
                    }
                }
            }
        }
    }
}

/// `[prefix/]name`: prefix a DNS subdomain (≤ 253), name ≤ 63 characters, alphanumeric at
/// both ends, `-`, `_`, `.` inside.
fn valid_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "the key prefix {p:?} is not a DNS subdomain (lowercase, e.g. `app.kubernetes.io`)"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("the key {k:?} has no name"));
    }
    valid_name(name).map_err(|why| format!("the key {k:?} {why}"))
}

/// Empty, or a name like a key's.
fn valid_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.contains('/') {
        return Err(format!("the value {v:?} contains `/`"));
    }
    valid_name(v).map_err(|why| format!("the value {v:?} {why}"))
}

fn valid_name(n: &str) -> Result<(), String> {
    if n.len() > 63 {
        return Err("is longer than 63 characters".to_owned());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(n.chars().next()) || !alnum(n.chars().last()) {
        return Err("must start and end with a letter or digit".to_owned());
    }
    if n.contains('/') {
        return Err("has more than one `/`".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_issue_example() {
        let s = LabelSelector::parse("app=api,tier in (web,edge),!canary").unwrap();
        assert_eq!(s.to_string(), "app=api,tier in (edge,web),!canary");
        assert!(s.matches(&labels(&[("app", "api"), ("tier", "web")])));
        assert!(s.matches(&labels(&[("app", "api"), ("tier", "edge"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("tier", "web"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("tier", "web")])));
    }

    #[test]
    fn every_operator() {
        let m = labels(&[
            ("app.kubernetes.io/name", "shop"),
            ("env", "prod"),
            ("team", ""),
        ]);
        for (sel, want) in [
            ("", true),
            ("   ", true),
            ("app.kubernetes.io/name", true),
            ("app.kubernetes.io/name==shop", true),
            ("env = prod", true),
            ("env!=prod", false),
            ("env != dev", true),
            ("missing!=x", true),
            ("env notin (dev, test)", true),
            ("env notin (prod)", false),
            ("missing notin (a)", true),
            ("missing in (a)", false),
            ("team=", true),
            ("team in (,x)", true),
            ("!team", false),
            ("!missing , env", true),
        ] {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&m), want, "{sel:?}");
        }
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
    }

    #[test]
    fn mistakes_say_where() {
        for (sel, at, why) in [
            ("app=api,", 9, "expected a label key"),
            ("app=api tier=web", 9, "expected `,`"),
            ("tier in web", 9, "expected `(`"),
            ("tier in (web", 13, "expected `,` or `)`"),
            ("tier inn (a)", 6, "found `inn`"),
            ("app=-x", 5, "start and end"),
            ("Bad.Prefix/x=1", 1, "DNS subdomain"),
            ("replicas>1", 9, "no order"),
            ("a=b/c", 3, "contains `/`"),
            ("app!x", 5, "expected `=`"),
        ] {
            let e = LabelSelector::parse(sel).unwrap_err();
            assert_eq!(e.at, at, "{sel}: {e}");
            assert!(e.to_string().contains(why), "{sel}: {e}");
            assert!(e.to_string().contains("examples"), "{e}");
        }
        let long = format!("a={}", "x".repeat(64));
        assert!(LabelSelector::parse(&long).unwrap_err().why.contains("63"));
    }
}
