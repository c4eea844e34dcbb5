//! URLs and query strings, through the `url` and `percent-encoding` crates (WHATWG URL
//! parsing, RFC 3986 escapes) rather than hand-rolled splitting.
//!
//! One exception, on purpose: [`url_path`] cuts the path out of a recorded URL as it was
//! sent. Replay compares it with the path the app sends byte for byte, and a URL parser
//! would normalise it (`/a/../b` → `/b`, `/a b` → `/a%20b`).
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use serde_json::{Map, Value};

/// Bytes a query component keeps as they are: RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `host[:port]` of `scheme://host[:port]/...`, lower-cased, without userinfo; an explicit
/// default port of `http`/`https` is dropped (`http://h:80/` is `h`). `None` for what is not an
/// absolute URL with a host.
#[must_use]
pub fn url_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str().filter(|h| !h.is_empty())?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// The host of `scheme://host[:port]/...` alone, lower-cased; an IPv6 address without its
/// brackets (`::1`).
#[must_use]
pub fn url_hostname(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = match u.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// Everything from the first `/` after `scheme://authority`, as sent (see the module docs);
/// `/` when there is none. A URL without a scheme is taken as a path.
#[must_use]
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Decodes `%XX` escapes; invalid escapes stay as they are.
#[must_use]
pub fn decode(s: &[u8]) -> Vec<u8> {
    percent_decode(s).collect()
}

/// [`decode`] of a string, invalid UTF-8 replaced by `U+FFFD`.
#[must_use]
pub fn decode_str(s: &str) -> String {
    percent_decode(s.as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

/// Decodes an `application/x-www-form-urlencoded` component (`+` is a space, `%XX` a byte).
#[must_use]
pub fn form_decode(s: &str) -> String {
    decode_str(&s.replace('+', " "))
}

/// Parses a query string: one value → string, several → list (blank values kept), in order
/// of first appearance.
#[must_use]
pub fn parse_query(q: &str) -> Map<String, Value> {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let v = Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            Some(Value::Array(items)) => items.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                map.insert(k.into_owned(), v);
            }
        }
    }
    map
}

/// `k=v&k2=v2` with every byte outside the RFC 3986 unreserved set escaped (`%20`, not `+`).
#[must_use]
pub fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, COMPONENT),
                utf8_percent_encode(v, COMPONENT)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            url_host("http://127.0.0.1:9001/item/42").as_deref(),
            Some("127.0.0.1:9001")
        );
        assert_eq!(
            url_host("https://u:p@API.example.com/x?y").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(url_host("http://h:80/x").as_deref(), Some("h"));
        assert_eq!(
            url_host("http://[::1]:8080/").as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(
            url_host("postgres://10.0.0.1:5432").as_deref(),
            Some("10.0.0.1:5432")
        );
        assert_eq!(
            url_host("http://my_svc:8000/").as_deref(),
            Some("my_svc:8000")
        );
        assert_eq!(url_host("users"), None);
        assert_eq!(url_host("mailto:a@b"), None);
        assert_eq!(
            url_hostname("https://Auth.internal:8443/x").as_deref(),
            Some("auth.internal")
        );
        assert_eq!(url_hostname("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(
            url_hostname("postgres://127.0.0.1:5432").as_deref(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn paths_and_escapes() {
        assert_eq!(url_path("http://h:1/a/../b?x"), "/a/../b?x");
        assert_eq!(url_path("http://h:1"), "/");
        assert_eq!(url_path("/p"), "/p");
        assert_eq!(decode(b"/a%20b%2Fc%zz%4"), b"/a b/c%zz%4");
        assert_eq!(decode_str("/caf%C3%A9/x%2"), "/café/x%2");
        // `%+1` is not an escape (a hand-rolled `from_str_radix` took it for one).
        assert_eq!(decode_str("a%+1"), "a%+1");
        assert_eq!(form_decode("a+b%21"), "a b!");
        let q = parse_query("a=1&b=2&a=3&c&d=x+y%21&a=4");
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"a":["1","3","4"],"b":"2","c":"","d":"x y!"}"#
        );
        assert_eq!(
            query_string(&[("q".into(), "a b&c/é".into()), ("x-y".into(), "~._".into())]),
            "q=a%20b%26c%2F%C3%A9&x-y=~._"
        );
    }
}
