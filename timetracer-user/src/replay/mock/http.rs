//! HTTP/1.1 mock (hyper): answers each request with the recorded response of the matching
//! call — status, headers in recorded order, body bytes exactly as recorded.
//!
//! A request is matched on method, path, query and body (`[REDACTED]` values match anything).
//! A miss gets `599 Timetracer Replay Miss` with `x-timetracer-miss` naming the first differing
//! field. A recorded call that got no response is replayed as a dropped connection.
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;

use super::Io;
use crate::cassette::body_bytes;
use crate::cassette::format::HeaderList;
use crate::replay::compare::{body_diff, query_diff};
use crate::replay::ledger::{Destination, Diff, Miss, RecordedCall};
use crate::urls::{parse_query, url_path};

/// Serves one connection until the app closes it.
///
/// # Errors
/// Transport errors (the app reset the connection, a recorded reset was replayed).
pub async fn serve(dest: Arc<Destination>, io: impl Io + 'static) -> anyhow::Result<()> {
    let svc = service_fn(move |req| {
        let dest = dest.clone();
        async move { handle(&dest, req).await }
    });
    hyper::server::conn::http1::Builder::new()
        .auto_date_header(false)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .await?;
    Ok(())
}

/// A recorded call without response: the mock drops the connection, as the service did.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the recorded call got no response; connection dropped")
    }
}
impl std::error::Error for Dropped {}

async fn handle(
    dest: &Destination,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let scheme = if dest.tls { "https" } else { "http" };
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| dest.addr.to_string(), str::to_owned);
    let actual = format!(
        "{method} {scheme}://{host}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let matched = dest.take(&actual, |c| compare(c, &method, &path, &query, &body));
    match matched {
        Ok(call) => respond(&call, parts.method == hyper::Method::HEAD).map_err(|()| Dropped),
        Err(miss) => Ok(miss_response(&miss)),
    }
}

fn compare(
    c: &RecordedCall,
    method: &str,
    path: &str,
    query: &crate::cassette::format::JsonMap,
    body: &[u8],
) -> Result<(), Diff> {
    let sig = &c.event.signature;
    if !sig.method.eq_ignore_ascii_case(method) {
        return Err(Diff::new("method", &sig.method, method));
    }
    let rec_path = url_path(sig.url.as_deref().unwrap_or("/"));
    if rec_path != path {
        return Err(Diff::new("path", rec_path, path));
    }
    let empty = serde_json::Map::new();
    if let Some(d) = query_diff(sig.query.as_ref().unwrap_or(&empty), query) {
        return Err(d);
    }
    let rec_body = c.event.request.as_ref().and_then(|r| r.body.as_ref());
    if let Some(d) = body_diff("body", rec_body, body) {
        return Err(d);
    }
    Ok(())
}

/// Builds the recorded response, with every recorded header. `Err(())` when the call got no
/// response. `head`: the request was a `HEAD`, whose recorded `Content-Length` describes the
/// body a `GET` would get (botocore's `head_object` reads the object size from it).
fn respond(call: &RecordedCall, head: bool) -> Result<Response<Full<Bytes>>, ()> {
    let r = &call.event.result;
    let Some(status) = r.status.filter(|&s| s > 0) else {
        return Err(());
    };
    if r.body.as_ref().is_some_and(|b| b.truncated) {
        let miss = Miss {
            protocol: call.protocol,
            destination: String::new(),
            call: call.describe(),
            expected: None,
            field: None,
            expected_value: None,
            actual_value: None,
            reason: Some("the recorded response body was cut at the capture cap".into()),
            at: None,
        };
        return Ok(miss_response(&miss));
    }
    let body = r.body.as_ref().map(body_bytes).unwrap_or_default();
    let mut b = Response::builder().status(
        StatusCode::from_u16(u16::try_from(status).unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let list: HeaderList = r.header_list.clone().unwrap_or_else(|| {
        r.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect()
    });
    let chunked = list.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    // Responses that never carry a body (RFC 9110 §6.4.1): their Content-Length is
    // information, sent as recorded.
    let bodiless = head || status == 204 || status == 304 || (100..200).contains(&status);
    for (name, value) in &list {
        // Framing is re-done for the bytes we send: hyper writes Content-Length for a
        // full body, or chunks it when the recording was chunked.
        if name.eq_ignore_ascii_case("content-length")
            && !bodiless
            && (chunked || value.trim() != body.len().to_string())
        {
            continue;
        }
        b = b.header(name.as_str(), value.as_str());
    }
    Ok(b.body(Full::new(Bytes::from(body))).unwrap_or_else(|e| {
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("timetracer replay: recorded response is not valid HTTP: {e}"),
        )
    }))
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `599` with `x-timetracer-miss: <field or reason>` and a JSON body describing the miss.
fn miss_response(miss: &Miss) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(599).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = serde_json::json!({"timetracer_replay_miss": miss});
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let what = miss
        .field
        .clone()
        .or_else(|| miss.reason.clone())
        .unwrap_or_else(|| "no recorded call matches".into());
    let value = hyper::header::HeaderValue::from_str(
        &what.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), "?"),
    )
    .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("mismatch"));
    r.headers_mut().insert("x-timetracer-miss", value);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cassette::format::{Event, EventResult, Signature};
    use crate::replay::ledger::{Journal, Protocol};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn call(method: &str, status: i64, headers: &[(&str, &str)]) -> RecordedCall {
        let ev = Event {
            eid: 1,
            kind: "http.client".into(),
            signature: Signature {
                lib: "botocore".into(),
                method: method.into(),
                url: Some("http://s3.local:9000/bucket/key".into()),
                ..Signature::default()
            },
            result: EventResult {
                status: Some(status),
                header_list: Some(
                    headers
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..EventResult::default()
            },
            ..Event::default()
        };
        RecordedCall::new(0, Protocol::Http, ev).unwrap()
    }

    /// What the mock writes on the wire for `request`, answered from `recorded`.
    async fn wire(recorded: RecordedCall, request: &str) -> String {
        let dest = Arc::new(Destination::new(
            "127.0.0.1:9000".parse().unwrap(),
            Protocol::Http,
            Arc::new(Journal::default()),
        ));
        dest.push(recorded);
        let (mut app, mock) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(serve(dest, mock));
        app.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The head (and any body) arrive before the mock waits for the next request.
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), app.read(&mut buf))
                .await
                .expect("the mock answers")
                .unwrap();
            assert!(n > 0, "the mock closed without answering");
            got.extend_from_slice(&buf[..n]);
        }
        drop(app);
        let _ = server.await;
        String::from_utf8_lossy(&got).to_ascii_lowercase()
    }

    /// Issue #26 item 5: a HEAD response recorded with `Content-Length: 432` comes back with
    /// it (botocore's `head_object` raised `KeyError: 'ContentLength'` without it), and with
    /// every other recorded header.
    #[tokio::test]
    async fn head_keeps_every_recorded_header() {
        let headers = [
            ("Content-Length", "432"),
            ("ETag", "\"9b2cf535f27731c974343645a3985328\""),
            ("Last-Modified", "Mon, 07 Dec 2026 10:00:00 GMT"),
            ("x-amz-request-id", "tx-1"),
        ];
        let got = wire(
            call("HEAD", 200, &headers),
            "HEAD /bucket/key HTTP/1.1\r\nHost: s3.local:9000\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("http/1.1 200"), "{got}");
        for (n, v) in headers {
            let line = format!("{}: {}\r\n", n.to_ascii_lowercase(), v.to_ascii_lowercase());
            assert!(got.contains(&line), "missing {line:?} in:\n{got}");
        }
        assert_eq!(got.matches("content-length").count(), 1, "{got}");
    }

    /// A GET's recorded Content-Length that does not match the body sent is not sent (hyper
    /// frames the body it sends); a 304 keeps its other headers (hyper itself never sends a
    /// 304's Content-Length).
    #[tokio::test]
    async fn content_length_only_dropped_when_it_would_lie() {
        let got = wire(
            call("GET", 304, &[("Content-Length", "432"), ("ETag", "\"x\"")]),
            "GET /bucket/key HTTP/1.1\r\nHost: s3.local:9000\r\n\r\n",
        )
        .await;
        assert!(
            got.starts_with("http/1.1 304") && got.contains("etag: \"x\"\r\n"),
            "{got}"
        );
        let got = wire(
            call("GET", 200, &[("Content-Length", "432")]),
            "GET /bucket/key HTTP/1.1\r\nHost: s3.local:9000\r\n\r\n",
        )
        .await;
        assert!(got.contains("content-length: 0\r\n"), "{got}");
        assert!(!got.contains("432"), "{got}");
    }
}
