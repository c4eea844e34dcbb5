//! `replay --junit FILE`: the verdict as a JUnit XML report, so CI systems (Jenkins, GitLab,
//! GitHub Actions reporters, Azure DevOps, CircleCI) show a replay as a test suite (issue #26
//! item 7). The format is Maven Surefire's, as the Jenkins xUnit plugin's `junit-10.xsd`
//! defines it (vendored under tests/schemas/, the e2e test validates against it).
//!
//! One `<testsuite>`: one test case per replayed request (classname = the cassette's directory,
//! name = `METHOD target (cassette id)`, time = seconds), failing with the verdict's own text
//! for that request (differences, dependency mismatches, a crash after it); `<error>` when the
//! app gave no response; `<skipped>` when the request was not sent. Two more test cases judge
//! what belongs to no request: `app startup` (startup calls no recorded call answered, a crash
//! before the first request) and `connections outside the recording`. The suite's properties
//! carry the recording id(s), the verdict and the exit code; its `system-err` the crashes'
//! last output lines.
use std::collections::BTreeSet;
use std::path::Path;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::verdict::{
    Crash, Outcome, RequestVerdict, Verdict, render_crash, render_miss, render_request,
};

/// Name of the suite (and of the `testsuites` root).
const SUITE: &str = "timetracer replay";
/// Class of the test cases that belong to no cassette.
const REPLAY_CLASS: &str = "timetracer.replay";

/// How a test case ended.
enum Result<'a> {
    Passed,
    /// `<failure>` (the app answered, but not as recorded, or a dependency did not match).
    Failure {
        kind: &'a str,
        message: String,
        text: String,
    },
    /// `<error>` (the app gave no response).
    Error {
        message: String,
        text: String,
    },
    Skipped {
        message: String,
    },
}

struct Case<'a> {
    classname: String,
    name: String,
    seconds: f64,
    result: Result<'a>,
}

/// The cassette id: the last `__` part of the file name (`GET__users_42__e92ca5c8.json` →
/// `e92ca5c8`), else the file name.
fn cassette_id(path: &str) -> String {
    let file = Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |f| f.to_string_lossy().into_owned());
    let stem = file
        .strip_suffix(".zst")
        .unwrap_or(&file)
        .strip_suffix(".json")
        .unwrap_or(&file);
    stem.rsplit_once("__").map_or(stem, |(_, id)| id).to_owned()
}

/// The cassette's directory (`.` for a bare file name): the test case's class, so a CI view
/// groups requests by where they were recorded.
fn cassette_dir(path: &str) -> String {
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => ".".to_owned(),
    }
}

/// First line of a failure (the `message` attribute; the text has the rest).
fn request_message(r: &RequestVerdict, crash: Option<&Crash>) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &r.error {
        parts.push(e.clone());
    }
    if let Some(status) = r.actual_status
        && i64::from(status) != r.expected_status
    {
        parts.push(format!("status {status} (recorded {})", r.expected_status));
    }
    if !r.differences.is_empty() && r.actual_status.is_some() {
        let fields: Vec<&str> = r.differences.iter().map(|d| d.field.as_str()).collect();
        parts.push(format!("response differs: {}", fields.join(", ")));
    }
    if !r.misses.is_empty() {
        parts.push(format!(
            "{} dependency call(s) did not match",
            r.misses.len()
        ));
    }
    if r.regression {
        parts.push("regression: the app now fails".into());
    }
    if let Some(c) = crash {
        parts.push(format!("the app crashed after this request ({})", c.status));
    }
    if parts.is_empty() {
        parts.push(r.outcome.label().to_owned());
    }
    parts.join("; ")
}

fn request_case<'a>(r: &RequestVerdict, crashes: &[&'a Crash]) -> Case<'a> {
    let crash = crashes.first().copied();
    let mut text = String::new();
    for c in crashes {
        render_crash(&mut text, c);
    }
    render_request(&mut text, r);
    let result = if r.not_sent {
        Result::Skipped {
            message: r.error.clone().unwrap_or_else(|| "not sent".into()),
        }
    } else if r.outcome == Outcome::Error {
        Result::Error {
            message: request_message(r, crash),
            text,
        }
    } else if r.outcome != Outcome::Same || crash.is_some() {
        Result::Failure {
            kind: match r.outcome {
                Outcome::Same => "crash",
                Outcome::Differs => "differs",
                _ => "dependency-mismatch",
            },
            message: request_message(r, crash),
            text,
        }
    } else {
        Result::Passed
    };
    Case {
        classname: cassette_dir(&r.cassette),
        name: format!("{} {} ({})", r.method, r.target, cassette_id(&r.cassette)),
        seconds: r.duration_ms / 1000.0,
        result,
    }
}

/// Every test case of `v`, in verdict order: startup, the requests, the connections.
fn cases(v: &Verdict) -> Vec<Case<'_>> {
    let request_cassettes: BTreeSet<&str> =
        v.requests.iter().map(|r| r.cassette.as_str()).collect();
    // Crashes after no request of the verdict (during startup) belong to the startup case.
    let startup_crashes: Vec<&Crash> = v
        .crashes
        .iter()
        .filter(|c| {
            c.cassette
                .as_deref()
                .is_none_or(|p| !request_cassettes.contains(p))
        })
        .collect();
    let mut out = Vec::with_capacity(v.requests.len() + 2);
    let startup = if v.startup_misses.is_empty() && startup_crashes.is_empty() {
        Result::Passed
    } else {
        let mut text = String::new();
        for c in &startup_crashes {
            render_crash(&mut text, c);
        }
        if !v.startup_misses.is_empty() {
            text.push_str("before the first request (app startup):\n");
            for m in &v.startup_misses {
                render_miss(&mut text, m);
            }
        }
        let mut parts = Vec::new();
        if !v.startup_misses.is_empty() {
            parts.push(format!(
                "{} startup call(s) not answered by the recording",
                v.startup_misses.len()
            ));
        }
        if let Some(c) = startup_crashes.first() {
            parts.push(format!("the app crashed at startup ({})", c.status));
        }
        Result::Failure {
            kind: "startup",
            message: parts.join("; "),
            text,
        }
    };
    out.push(Case {
        classname: REPLAY_CLASS.into(),
        name: "app startup".into(),
        seconds: 0.0,
        result: startup,
    });
    for r in &v.requests {
        let crashes: Vec<&Crash> = v
            .crashes
            .iter()
            .filter(|c| c.cassette.as_deref() == Some(r.cassette.as_str()))
            .collect();
        out.push(request_case(r, &crashes));
    }
    let blocked = if v.blocked.is_empty() {
        Result::Passed
    } else {
        let text = v
            .blocked
            .iter()
            .map(|b| format!("{} ({} connects)\n", b.destination, b.connects))
            .collect();
        Result::Failure {
            kind: "blocked",
            message: format!(
                "{} destination(s) neither recorded nor live were refused; add --live HOST:PORT to let them through",
                v.blocked.len()
            ),
            text,
        }
    };
    out.push(Case {
        classname: REPLAY_CLASS.into(),
        name: "connections outside the recording".into(),
        seconds: 0.0,
        result: blocked,
    });
    out
}

/// XML 1.0 allows no control characters but tab, newline and carriage return, not even
/// escaped (an app's log often has ANSI colour codes): each becomes U+FFFD. The XML writer
/// escapes markup; this is the part escaping cannot do, and no crate we use offers it.
fn xml_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if u32::from(c) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn seconds(s: f64) -> String {
    format!("{:.3}", s.max(0.0))
}

/// The JUnit XML report of `v`; `timestamp` is when the replay ran (ISO 8601, UTC, no zone,
/// as Surefire writes it).
///
/// # Errors
/// Never in practice (the writer writes to memory).
pub fn render(v: &Verdict, timestamp: &str) -> std::io::Result<Vec<u8>> {
    let cases = cases(v);
    let count = |f: fn(&Result<'_>) -> bool| cases.iter().filter(|c| f(&c.result)).count();
    let tests = cases.len().to_string();
    let failures = count(|r| matches!(r, Result::Failure { .. })).to_string();
    let errors = count(|r| matches!(r, Result::Error { .. })).to_string();
    let skipped = count(|r| matches!(r, Result::Skipped { .. })).to_string();
    let time = seconds(cases.iter().map(|c| c.seconds).sum());
    let recordings: BTreeSet<&str> = v
        .requests
        .iter()
        .filter_map(|r| r.recording.as_deref())
        .collect();
    let system_err: String = v
        .crashes
        .iter()
        .map(|c| {
            format!(
                "the app crashed after {} ({}); its last output:\n{}\n",
                c.after,
                c.status,
                c.output_tail.trim_end()
            )
        })
        .collect();

    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("testsuites")
        .with_attributes([
            ("name", SUITE),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", errors.as_str()),
            ("time", time.as_str()),
        ])
        .write_inner_content(|w| {
            w.create_element("testsuite")
                .with_attributes([
                    ("name", SUITE),
                    ("tests", tests.as_str()),
                    ("failures", failures.as_str()),
                    ("errors", errors.as_str()),
                    ("skipped", skipped.as_str()),
                    ("time", time.as_str()),
                    ("timestamp", timestamp),
                ])
                .write_inner_content(|w| {
                    w.create_element("properties").write_inner_content(|w| {
                        let exit = v.exit_code.to_string();
                        let verdict = serde_json::to_value(v.verdict)
                            .ok()
                            .and_then(|j| j.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let mut props: Vec<(&str, String)> = recordings
                            .iter()
                            .map(|r| ("recording", xml_chars(r)))
                            .collect();
                        props.push(("verdict", verdict));
                        props.push(("exit_code", exit));
                        props.push(("summary", xml_chars(&v.summary)));
                        for (name, value) in &props {
                            w.create_element("property")
                                .with_attributes([("name", *name), ("value", value.as_str())])
                                .write_empty()?;
                        }
                        Ok(())
                    })?;
                    for c in &cases {
                        write_case(w, c)?;
                    }
                    if !system_err.is_empty() {
                        w.create_element("system-err")
                            .write_text_content(BytesText::new(&xml_chars(&system_err)))?;
                    }
                    Ok(())
                })?;
            Ok(())
        })?;
    let mut out = w.into_inner();
    out.push(b'\n');
    Ok(out)
}

fn write_case<W: std::io::Write>(w: &mut Writer<W>, c: &Case<'_>) -> std::io::Result<()> {
    let time = seconds(c.seconds);
    let name = xml_chars(&c.name);
    let classname = xml_chars(&c.classname);
    let el = w.create_element("testcase").with_attributes([
        ("classname", classname.as_str()),
        ("name", name.as_str()),
        ("time", time.as_str()),
    ]);
    let (tag, kind, message, text) = match &c.result {
        Result::Passed => {
            el.write_empty()?;
            return Ok(());
        }
        Result::Failure {
            kind,
            message,
            text,
        } => ("failure", *kind, message, Some(text)),
        Result::Error { message, text } => ("error", "no-response", message, Some(text)),
        Result::Skipped { message } => ("skipped", "not-sent", message, None),
    };
    el.write_inner_content(|w| {
        let message = xml_chars(message);
        let inner = w
            .create_element(tag)
            .with_attributes([("type", kind), ("message", message.as_str())]);
        match text {
            Some(t) => inner.write_text_content(BytesText::new(&xml_chars(t)))?,
            None => inner.write_empty()?,
        };
        Ok(())
    })?;
    Ok(())
}

/// Writes the report of `v` to `dest`: atomically, mode 0600 (it holds request paths and the
/// app's output).
///
/// # Errors
/// The file cannot be written (the destination is unchanged).
pub fn write(v: &Verdict, dest: &Path) -> anyhow::Result<()> {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let timestamp = time::OffsetDateTime::now_utc()
        .format(format)
        .unwrap_or_default();
    let xml = render(v, &timestamp)?;
    crate::atomic_file::write(dest, &xml)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::ledger::Diff;
    use super::super::verdict::tests::same;
    use super::*;
    use quick_xml::Reader;

    /// An element: name, attributes, text.
    type El = (String, Vec<(String, String)>, String);

    /// Every start/empty tag with its attributes, and the text of the elements, parsed back.
    fn parse(xml: &[u8]) -> Vec<El> {
        let mut r = Reader::from_reader(xml);
        let mut out: Vec<El> = Vec::new();
        let mut buf = Vec::new();
        loop {
            match r.read_event_into(&mut buf).unwrap() {
                Event::Start(e) | Event::Empty(e) => {
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            (
                                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                                a.unescape_value().unwrap().into_owned(),
                            )
                        })
                        .collect();
                    out.push((
                        String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                        attrs,
                        String::new(),
                    ));
                }
                Event::Text(t) => {
                    if let Some(last) = out.last_mut() {
                        last.2.push_str(&t.decode().unwrap());
                    }
                }
                Event::GeneralRef(g) => {
                    if let Some(last) = out.last_mut() {
                        let c = g.resolve_char_ref().unwrap();
                        match c {
                            Some(c) => last.2.push(c),
                            None => last.2.push_str(
                                quick_xml::escape::resolve_xml_entity(&g.decode().unwrap())
                                    .unwrap(),
                            ),
                        }
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        out
    }

    fn attr<'a>(el: &'a El, k: &str) -> &'a str {
        el.1.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v)
    }

    /// A differing request, a crash after a passing one, a request not sent: each its JUnit
    /// shape, markup and control characters in the app's output kept as text.
    #[test]
    fn each_outcome_has_its_junit_shape() {
        let mut differs = same("/b?x=<1>&y=\"2\"");
        differs.cassette = "cass/2026-12-07/GET__b__0badc0de.json".into();
        differs.outcome = Outcome::Differs;
        differs.actual_status = Some(500);
        differs.regression = true;
        differs.recording = Some("rec-1".into());
        differs.differences = vec![Diff::new("status", 200, 500)];
        let mut ok = same("/a");
        ok.recording = Some("rec-1".into());
        ok.duration_ms = 1500.0;
        let mut skipped = same("/c");
        skipped.not_sent = true;
        skipped.outcome = Outcome::Error;
        skipped.error = Some("not sent: the app crashed 4 times".into());
        let v =
            Verdict::new(vec![ok, differs, skipped], vec![], vec![], vec![]).with_crashes(vec![
                Crash {
                    after: "GET /a".into(),
                    cassette: Some("c//a.json".into()),
                    status: "exit status: 3".into(),
                    output_tail: "\u{1b}[31mfatal\u{1b}[0m: <boom> & \"out\"".into(),
                    restarted: true,
                },
            ]);
        let xml = render(&v, "2026-12-07T21:00:00").unwrap();
        let els = parse(&xml);
        let suite = els.iter().find(|e| e.0 == "testsuite").unwrap();
        assert_eq!(
            attr(suite, "tests"),
            "5",
            "startup + 3 requests + connections"
        );
        assert_eq!(attr(suite, "failures"), "2");
        assert_eq!(attr(suite, "errors"), "0");
        assert_eq!(attr(suite, "skipped"), "1");
        let props: Vec<(&str, &str)> = els
            .iter()
            .filter(|e| e.0 == "property")
            .map(|e| (attr(e, "name"), attr(e, "value")))
            .collect();
        assert!(props.contains(&("recording", "rec-1")), "{props:?}");
        assert!(props.contains(&("exit_code", "2")), "{props:?}");
        let cases: Vec<_> = els.iter().filter(|e| e.0 == "testcase").collect();
        assert_eq!(attr(cases[0], "name"), "app startup");
        assert_eq!(attr(cases[1], "name"), "GET /a (a)");
        assert_eq!(attr(cases[1], "classname"), "c");
        assert_eq!(attr(cases[1], "time"), "1.500");
        assert_eq!(
            attr(cases[2], "name"),
            "GET /b?x=<1>&y=\"2\" (0badc0de)",
            "markup escaped by the writer, read back unchanged"
        );
        assert_eq!(attr(cases[2], "classname"), "cass/2026-12-07");
        let idx = |e: &El| els.iter().position(|x| std::ptr::eq(x, e)).unwrap();
        // The crash after GET /a fails its test case, with the app's output.
        let f = &els[idx(cases[1]) + 1];
        assert_eq!(f.0, "failure");
        assert_eq!(attr(f, "type"), "crash");
        assert!(attr(f, "message").contains("crashed after this request (exit status: 3)"));
        assert!(
            f.2.contains("| \u{FFFD}[31mfatal\u{FFFD}[0m: <boom> & \"out\""),
            "{}",
            f.2
        );
        let f = &els[idx(cases[2]) + 1];
        assert_eq!((f.0.as_str(), attr(f, "type")), ("failure", "differs"));
        assert!(attr(f, "message").contains("status 500 (recorded 200)"));
        assert!(f.2.contains("response status: 200 → 500"), "{}", f.2);
        let s = &els[idx(cases[3]) + 1];
        assert_eq!(s.0, "skipped");
        assert_eq!(attr(s, "message"), "not sent: the app crashed 4 times");
        let err = els.iter().find(|e| e.0 == "system-err").unwrap();
        assert!(
            err.2
                .contains("the app crashed after GET /a (exit status: 3)")
        );
        assert!(!xml.contains(&0x1b), "no control character reaches the XML");
    }

    #[test]
    fn cassette_ids_and_dirs() {
        assert_eq!(cassette_id("d/GET__users_42__e92ca5c8.json"), "e92ca5c8");
        assert_eq!(
            cassette_id("d/GET__users_42__e92ca5c8.json.zst"),
            "e92ca5c8"
        );
        assert_eq!(cassette_id("plain.json"), "plain");
        assert_eq!(cassette_dir("plain.json"), ".");
        assert_eq!(cassette_dir("/a/b/c.json"), "/a/b");
    }
}
