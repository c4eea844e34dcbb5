//! Pretty-printed JSON as a list of classed tokens, for the highlighted "raw JSON" view.
//!
//! The template prints each token's text through auto-escaping inside a `<span class>`, so
//! the highlighting never builds HTML by hand. Adjacent punctuation and whitespace are merged
//! to keep the token count (and the page) small.
use serde::Serialize;
use serde_json::Value;

/// Longest raw JSON shown (characters of pretty-printed text); the rest is cut with a note.
pub const MAX_RAW_BYTES: usize = 256 * 1024;

/// One piece of the pretty-printed text. `c` is the CSS class suffix (`k` key, `s` string,
/// `n` number, `b` boolean, `z` null), empty for punctuation and whitespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Token {
    pub c: &'static str,
    pub t: String,
}

struct Out {
    toks: Vec<Token>,
    len: usize,
    max: usize,
    cut: bool,
}

impl Out {
    fn push(&mut self, c: &'static str, t: &str) {
        if self.cut {
            return;
        }
        if self.len + t.len() > self.max {
            self.cut = true;
            return;
        }
        self.len += t.len();
        match self.toks.last_mut() {
            Some(last) if last.c.is_empty() && c.is_empty() => last.t.push_str(t),
            _ => self.toks.push(Token { c, t: t.to_owned() }),
        }
    }
}

fn walk(v: &Value, indent: usize, out: &mut Out) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Null => out.push("z", "null"),
        Value::Bool(b) => out.push("b", if *b { "true" } else { "false" }),
        Value::Number(n) => out.push("n", &n.to_string()),
        Value::String(s) => out.push("s", &Value::String(s.clone()).to_string()),
        Value::Array(a) if a.is_empty() => out.push("", "[]"),
        Value::Object(o) if o.is_empty() => out.push("", "{}"),
        Value::Array(a) => {
            out.push("", "[\n");
            for (i, x) in a.iter().enumerate() {
                out.push("", &pad(indent + 1));
                walk(x, indent + 1, out);
                out.push("", if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push("", &format!("{}]", pad(indent)));
        }
        Value::Object(o) => {
            out.push("", "{\n");
            for (i, (k, x)) in o.iter().enumerate() {
                out.push("", &pad(indent + 1));
                out.push("k", &Value::String(k.clone()).to_string());
                out.push("", ": ");
                walk(x, indent + 1, out);
                out.push("", if i + 1 < o.len() { ",\n" } else { "\n" });
            }
            out.push("", &format!("{}}}", pad(indent)));
        }
    }
}

/// Tokens of `v` pretty-printed (2-space indent), at most `max` bytes of text, and a note
/// when it was cut.
#[must_use]
pub fn tokens(v: &Value, max: usize) -> (Vec<Token>, Option<String>) {
    let mut out = Out {
        toks: Vec::new(),
        len: 0,
        max,
        cut: false,
    };
    walk(v, 0, &mut out);
    let note = out.cut.then(|| {
        format!(
            "Cut at {} KiB: download the cassette for the rest.",
            max / 1024
        )
    });
    (out.toks, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_text() {
        let v: Value =
            serde_json::from_str(r#"{"a":[1,true,null,"x</script>"],"b":{},"c":{"d":"e"}}"#)
                .unwrap();
        let (toks, note) = tokens(&v, 1 << 20);
        assert!(note.is_none());
        let text: String = toks.iter().map(|t| t.t.as_str()).collect();
        assert_eq!(text, serde_json::to_string_pretty(&v).unwrap());
        assert!(toks.iter().any(|t| t.c == "k" && t.t == "\"a\""));
        assert!(toks.iter().any(|t| t.c == "s" && t.t == "\"x</script>\""));
    }

    #[test]
    fn cuts_long_documents() {
        let v = Value::Array((0..1000).map(Value::from).collect());
        let (toks, note) = tokens(&v, 100);
        let len: usize = toks.iter().map(|t| t.t.len()).sum();
        assert!(len <= 100);
        assert!(note.is_some());
    }
}
