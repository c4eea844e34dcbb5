//! How numbers, times and shell words are shown, by every front end (`timetracer` commands,
//! the TUI, the web pages). One set of rules, so a duration reads the same everywhere.

/// A duration in milliseconds, for prose and HTML: `0.42 ms`, `4.21 ms`, `17.4 ms`, `123 ms`,
/// `1.23 s`, `12.3 s`, `2m05s`.
///
/// [`fmt_ms_compact`] writes the same with one digit less below 100 ms and no space before the
/// unit, for the TUI's live table: `4.2ms`, and whole milliseconds from 10 ms (`17ms`), where
/// the table is read at a glance and a changing tenth only flickers. Everything else is shared: a negative
/// duration keeps its sign (two clocks disagreed, which is worth seeing); `NaN` and infinities
/// are `-`.
#[must_use]
pub fn fmt_ms(ms: f64) -> String {
    duration(ms, " ", 10.0, 100.0)
}

/// [`fmt_ms`] for fixed-width columns: `0.42ms`, `4.2ms`, `17ms`, `123ms`, `1.23s`.
#[must_use]
pub fn fmt_ms_compact(ms: f64) -> String {
    duration(ms, "", 1.0, 10.0)
}

/// `ms` with `sep` before the unit, two decimals below `hundredths_below` ms and one below
/// `tenths_below` ms.
fn duration(ms: f64, sep: &str, hundredths_below: f64, tenths_below: f64) -> String {
    if !ms.is_finite() {
        return "-".to_owned();
    }
    let a = ms.abs();
    if a < hundredths_below {
        format!("{ms:.2}{sep}ms")
    } else if a < tenths_below {
        format!("{ms:.1}{sep}ms")
    } else if a < 1000.0 {
        format!("{ms:.0}{sep}ms")
    } else if a < 10_000.0 {
        format!("{:.2}{sep}s", ms / 1000.0)
    } else if a < 60_000.0 {
        format!("{:.1}{sep}s", ms / 1000.0)
    } else {
        let s = (a / 1000.0) as u64;
        let sign = if ms < 0.0 { "-" } else { "" };
        format!("{sign}{}m{:02}s", s / 60, s % 60)
    }
}

/// The change from `a` to `b` in percent: `+12.5%`, `-3.0%`, or `new` when `a` is not positive.
#[must_use]
pub fn fmt_pct_change(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:+.1}%", (b - a) / a * 100.0)
    } else {
        "new".to_owned()
    }
}

/// `512 B`, `1.2 KiB`, `3.4 MiB`, `5.0 GiB`: every byte count the product shows (dashboard,
/// TUI, status line, exit summary).
#[must_use]
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `2026-11-22 23:28:08.792 UTC` from RFC 3339 (shown as given when it does not look like one).
#[must_use]
pub fn fmt_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..23)) {
        (Some(d), Some(t)) if rfc3339.as_bytes().get(10) == Some(&b'T') => {
            let utc = rfc3339.ends_with("+00:00") || rfc3339.ends_with('Z');
            format!("{d} {t}{}", if utc { " UTC" } else { "" })
        }
        _ => rfc3339.to_owned(),
    }
}

/// Single-quotes `s` for POSIX shells (always quoted).
#[must_use]
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as one shell word: as it is when it has only characters no shell treats specially,
/// else [`shell_quote`]d. For commands shown to be copied (`sudo timetracer-agent replay …`).
#[must_use]
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        shell_quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_same_everywhere() {
        // (ms, spaced, compact)
        for (ms, spaced, compact) in [
            (0.0, "0.00 ms", "0.00ms"),
            (0.4213, "0.42 ms", "0.42ms"),
            (4.213, "4.21 ms", "4.2ms"),
            (12.5, "12.5 ms", "12ms"),
            (17.38, "17.4 ms", "17ms"),
            (99.94, "99.9 ms", "100ms"),
            (123.4, "123 ms", "123ms"),
            (1234.0, "1.23 s", "1.23s"),
            (12_345.0, "12.3 s", "12.3s"),
            (125_000.0, "2m05s", "2m05s"),
            (-0.3, "-0.30 ms", "-0.30ms"),
            (-125_000.0, "-2m05s", "-2m05s"),
            (f64::NAN, "-", "-"),
            (f64::INFINITY, "-", "-"),
        ] {
            assert_eq!(fmt_ms(ms), spaced, "{ms}");
            assert_eq!(fmt_ms_compact(ms), compact, "{ms}");
        }
    }

    #[test]
    fn bytes_times_and_shell_words() {
        assert_eq!(fmt_pct_change(10.0, 12.5), "+25.0%");
        assert_eq!(fmt_pct_change(10.0, 9.7), "-3.0%");
        assert_eq!(fmt_pct_change(0.0, 1.0), "new");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(2048), "2.0 KiB");
        assert_eq!(fmt_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(fmt_bytes(5 << 30), "5.0 GiB");
        assert_eq!(fmt_bytes(3 << 40), "3.0 TiB");
        assert_eq!(fmt_bytes(1023 << 10), "1023.0 KiB");
        assert_eq!(
            fmt_time("2026-11-22T23:28:08.792058+00:00"),
            "2026-11-22 23:28:08.792 UTC"
        );
        assert_eq!(
            fmt_time("2026-11-22T23:28:08.792058+01:00"),
            "2026-11-22 23:28:08.792"
        );
        assert_eq!(fmt_time("garbage"), "garbage");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_word("/tmp/a.json"), "/tmp/a.json");
        assert_eq!(shell_word("/tmp/a b.json"), "'/tmp/a b.json'");
        assert_eq!(shell_word(""), "''");
    }
}
