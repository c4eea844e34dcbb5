//! Byte-level tests of the connection parser.
use bytes::Bytes;
use proptest::prelude::*;

use super::types::{Exchange, Framing, HttpEvent, HttpMessage, Mark, Side, StartLine};
use super::{HttpConn, ParseOptions};
use crate::reassembly::{Chunk, Segment, Stream};

/// Builds the two directions of a conversation, one syscall per call, with increasing
/// timestamps.
struct Wire {
    side: Side,
    /// Next position: requests, responses.
    pos: [u64; 2],
    ts: u64,
    segs: Vec<(bool, Segment)>,
}

impl Wire {
    fn new(side: Side) -> Self {
        Self {
            side,
            pos: [0, 0],
            ts: 100,
            segs: Vec::new(),
        }
    }
    fn egress(&self, req: bool) -> bool {
        req == (self.side == Side::Client)
    }
    fn data(&mut self, req: bool, b: &[u8]) -> &mut Self {
        let i = usize::from(!req);
        self.ts += 10;
        let c = Chunk {
            pos: self.pos[i],
            data: Bytes::copy_from_slice(b),
            ts_ns: self.ts,
            tid: 7 + i as u32,
        };
        self.pos[i] += b.len() as u64;
        let e = self.egress(req);
        self.segs.push((e, Segment::Data(c)));
        self
    }
    fn req(&mut self, b: &[u8]) -> &mut Self {
        self.data(true, b)
    }
    fn resp(&mut self, b: &[u8]) -> &mut Self {
        self.data(false, b)
    }
    fn gap(&mut self, req: bool, len: u64) -> &mut Self {
        let i = usize::from(!req);
        let e = self.egress(req);
        self.segs.push((
            e,
            Segment::Gap {
                pos: self.pos[i],
                len,
            },
        ));
        self.pos[i] += len;
        self
    }
    /// Skip bytes without telling anybody (mid-stream attach).
    fn unseen(&mut self, req: bool, len: u64) -> &mut Self {
        self.pos[usize::from(!req)] += len;
        self
    }
    fn run_with(&self, opts: ParseOptions, close: bool) -> Vec<HttpEvent> {
        let mut c = HttpConn::new(self.side, opts);
        let mut out = Vec::new();
        for (e, s) in &self.segs {
            c.feed(*e, s.clone(), &mut out);
        }
        if close {
            c.close(self.ts + 1, &mut out);
        }
        out
    }
    fn run(&self) -> Vec<HttpEvent> {
        self.run_with(ParseOptions::default(), true)
    }
}

fn exchanges(evs: &[HttpEvent]) -> Vec<Exchange> {
    evs.iter()
        .filter_map(|e| match e {
            HttpEvent::Exchange(x) => Some(x.clone()),
            _ => None,
        })
        .collect()
}

fn skipped(evs: &[HttpEvent]) -> Vec<(u64, &'static str)> {
    evs.iter()
        .filter_map(|e| match e {
            HttpEvent::Skipped { bytes, reason, .. } => Some((*bytes, *reason)),
            _ => None,
        })
        .collect()
}

fn target(m: &HttpMessage) -> &str {
    match &m.start {
        StartLine::Request { target, .. } => target,
        StartLine::Response { .. } => "",
    }
}

fn status(m: &HttpMessage) -> u16 {
    match &m.start {
        StartLine::Response { status, .. } => *status,
        StartLine::Request { .. } => 0,
    }
}

fn resp(x: &Exchange) -> &HttpMessage {
    x.response.as_ref().expect("response")
}

/// (target, status, response body) of each exchange.
fn summary(evs: &[HttpEvent]) -> Vec<(String, u16, Vec<u8>)> {
    exchanges(evs)
        .iter()
        .map(|x| {
            (
                target(&x.request).to_owned(),
                x.response.as_ref().map_or(0, status),
                { x.response.as_ref().map_or(Vec::new(), |r| r.body.to_vec()) },
            )
        })
        .collect()
}

fn ok_resp(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

#[test]
fn content_length_both_ways() {
    let req = b"POST /api/items HTTP/1.1\r\nHost: example\r\nX-Case: Keep\r\nContent-Length: 5\r\n\r\nhello";
    let rsp = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let mut w = Wire::new(Side::Server);
    w.req(&req[..60]).req(&req[60..]).resp(rsp);
    let evs = w.run();
    assert!(
        matches!(&evs[0], HttpEvent::RequestHead { index: 0, method, target, .. } if method == "POST" && target == "/api/items")
    );
    assert!(matches!(
        &evs[1],
        HttpEvent::ResponseStarted {
            index: 0,
            mark: Mark {
                ts_ns: 130,
                tid: 8,
                pos: 0
            }
        }
    ));
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 1);
    let x = &xs[0];
    assert_eq!(x.index, 0);
    let r = &x.request;
    assert_eq!(r.version, 1);
    assert_eq!(
        r.headers[1],
        ("X-Case".to_owned(), Bytes::from_static(b"Keep"))
    );
    assert_eq!(r.header_str("content-length"), Some("5"));
    assert_eq!(&r.body[..], b"hello");
    assert_eq!(r.framing, Framing::Length(5));
    assert_eq!(
        r.first,
        Mark {
            ts_ns: 110,
            tid: 7,
            pos: 0
        }
    );
    assert_eq!(
        r.head_done,
        Mark {
            ts_ns: 120,
            tid: 7,
            pos: req.len() as u64 - 6
        }
    );
    assert_eq!(
        r.last,
        Mark {
            ts_ns: 120,
            tid: 7,
            pos: req.len() as u64 - 1
        }
    );
    assert_eq!(r.wire_size, req.len() as u64);
    assert!(!r.incomplete && !r.truncated && r.lost_bytes == 0);
    let p = resp(x);
    assert_eq!(status(p), 201);
    assert_eq!(
        p.start,
        StartLine::Response {
            status: 201,
            reason: "Created".into()
        }
    );
    assert_eq!(&p.body[..], b"ok");
    assert_eq!(p.wire_size, rsp.len() as u64);
    assert!(skipped(&evs).is_empty());
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let mut w = Wire::new(Side::Client);
    w.req(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;name=val\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n");
    w.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nab");
    w.resp(b"c\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n");
    w.req(&get("/next")).resp(&ok_resp("n"));
    let evs = w.run();
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 2);
    assert_eq!(&xs[0].request.body[..], b"Wikipedia");
    assert_eq!(xs[0].request.framing, Framing::Chunked);
    assert_eq!(xs[0].request.body_size, 9);
    let p = resp(&xs[0]);
    assert_eq!(&p.body[..], b"abc");
    assert_eq!(p.trailers.len(), 2);
    assert_eq!(
        p.trailers[0],
        ("X-Checksum".to_owned(), Bytes::from_static(b"42"))
    );
    assert!(!p.incomplete);
    assert_eq!(p.last.ts_ns, 130);
    assert_eq!(summary(&evs)[1], ("/next".into(), 200, b"n".to_vec()));
    // Request direction of a client is egress.
    assert!(skipped(&evs).is_empty());
}

#[test]
fn close_delimited_response() {
    let mut w = Wire::new(Side::Server);
    w.req(b"GET /old HTTP/1.0\r\n\r\n")
        .resp(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\npart1,")
        .resp(b"part2");
    let evs = w.run_with(ParseOptions::default(), false);
    assert!(exchanges(&evs).is_empty(), "not complete before close");
    let evs = w.run();
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 1);
    let p = resp(&xs[0]);
    assert_eq!(p.framing, Framing::Close);
    assert_eq!(&p.body[..], b"part1,part2");
    assert!(!p.incomplete);
    assert_eq!(xs[0].request.version, 0);
}

#[test]
fn no_body_responses() {
    let mut w = Wire::new(Side::Server);
    w.req(b"HEAD /h HTTP/1.1\r\n\r\n")
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    w.req(b"DELETE /d HTTP/1.1\r\n\r\n")
        .resp(b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
    w.req(b"GET /c HTTP/1.1\r\nIf-None-Match: x\r\n\r\n")
        .resp(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
    w.req(&get("/last")).resp(&ok_resp("end"));
    let evs = w.run_with(ParseOptions::default(), false);
    let s = summary(&evs);
    assert_eq!(
        s,
        vec![
            ("/h".into(), 200, vec![]),
            ("/d".into(), 204, vec![]),
            ("/c".into(), 304, vec![]),
            ("/last".into(), 200, b"end".to_vec())
        ]
    );
    for x in &exchanges(&evs)[..3] {
        assert_eq!(resp(x).framing, Framing::None);
    }
}

#[test]
fn expect_100_continue() {
    let mut w = Wire::new(Side::Server);
    w.req(b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    w.resp(b"HTTP/1.1 100 Continue\r\n\r\n");
    w.req(b"data");
    w.resp(&ok_resp("stored"));
    let evs = w.run_with(ParseOptions::default(), false);
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].interim.len(), 1);
    assert_eq!(status(&xs[0].interim[0]), 100);
    assert_eq!(&xs[0].request.body[..], b"data");
    assert_eq!(&resp(&xs[0]).body[..], b"stored");
    // ResponseStarted only for the final response.
    let started: Vec<_> = evs
        .iter()
        .filter(|e| matches!(e, HttpEvent::ResponseStarted { .. }))
        .collect();
    assert_eq!(started.len(), 1);
}

#[test]
fn keep_alive_three() {
    let mut w = Wire::new(Side::Server);
    for i in 0..3 {
        w.req(&get(&format!("/{i}")))
            .resp(&ok_resp(&format!("r{i}")));
    }
    let evs = w.run_with(ParseOptions::default(), false);
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 3);
    for (i, x) in xs.iter().enumerate() {
        assert_eq!(x.index, i as u64);
        assert_eq!(target(&x.request), format!("/{i}"));
        assert_eq!(resp(x).body, format!("r{i}").as_bytes());
    }
}

#[test]
fn pipelined_in_one_segment() {
    let mut both = get("/a");
    both.extend_from_slice(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz");
    let mut rs = ok_resp("A");
    rs.extend_from_slice(&ok_resp("B"));
    let mut w = Wire::new(Side::Server);
    w.req(&both).resp(&rs);
    let evs = w.run_with(ParseOptions::default(), false);
    assert_eq!(
        summary(&evs),
        vec![
            ("/a".into(), 200, b"A".to_vec()),
            ("/b".into(), 200, b"B".to_vec())
        ]
    );
    let xs = exchanges(&evs);
    assert_eq!(xs[1].request.first.pos, get("/a").len() as u64);
    assert_eq!(&xs[1].request.body[..], b"xyz");
    assert_eq!(resp(&xs[1]).first.pos, ok_resp("A").len() as u64);
}

#[test]
fn websocket_upgrade() {
    let mut w = Wire::new(Side::Server);
    w.req(&get("/before")).resp(&ok_resp("b"));
    w.req(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello");
    w.resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi");
    w.req(b"\x81\x03more");
    let mut c = HttpConn::new(Side::Server, ParseOptions::default());
    let mut evs = Vec::new();
    for (e, s) in &w.segs {
        c.feed(*e, s.clone(), &mut evs);
    }
    assert!(c.is_upgraded());
    c.close(0, &mut evs);
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 2);
    assert_eq!(status(resp(&xs[1])), 101);
    assert_eq!(
        evs.last(),
        Some(&HttpEvent::Upgraded {
            index: 1,
            bytes_after: 7 + 4
        })
    );
    assert!(skipped(&evs).is_empty(), "{evs:?}");
}

#[test]
fn connect_tunnel() {
    let mut w = Wire::new(Side::Client);
    w.req(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
        .resp(b"HTTP/1.1 200 Connection established\r\n\r\n");
    w.req(b"\x00\x00\x00\x08binary");
    let evs = w.run();
    assert!(matches!(
        evs.last(),
        Some(HttpEvent::Upgraded { index: 0, .. })
    ));
    assert_eq!(exchanges(&evs).len(), 1);
    assert!(skipped(&evs).is_empty());
}

#[test]
fn head_split_into_tiny_segments() {
    let req = b"GET /tiny?q=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
    let rsp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
    let mut w = Wire::new(Side::Server);
    for b in req.chunks(1) {
        w.req(b);
    }
    for b in rsp.chunks(2) {
        w.resp(b);
    }
    let evs = w.run_with(ParseOptions::default(), false);
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 1);
    let r = &xs[0].request;
    assert_eq!(target(r), "/tiny?q=1");
    assert_eq!(r.first.ts_ns, 110);
    assert_eq!(r.head_done.ts_ns, 110 + 10 * (req.len() as u64 - 1));
    assert_eq!(r.head_done.pos, req.len() as u64 - 1);
    assert_eq!(&resp(&xs[0]).body[..], b"abc");
}

#[test]
fn gap_in_content_length_body() {
    let mut w = Wire::new(Side::Server);
    w.req(b"POST /g HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        .gap(true, 5)
        .req(b"fgh");
    w.resp(&ok_resp("ok"));
    w.req(&get("/after")).resp(&ok_resp("fine"));
    let evs = w.run_with(ParseOptions::default(), false);
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 2);
    let r = &xs[0].request;
    assert_eq!(r.lost_bytes, 5);
    assert_eq!(r.body_size, 10);
    assert_eq!(&r.body[..], b"abfgh");
    assert!(!r.incomplete);
    assert_eq!(summary(&evs)[1], ("/after".into(), 200, b"fine".to_vec()));
}

#[test]
fn gap_in_head_resyncs() {
    let mut w = Wire::new(Side::Server);
    w.req(&get("/one")).resp(&ok_resp("1"));
    // Request 2's head is cut; its response is still written.
    w.req(b"GET /two HTTP/1.1\r\nHo")
        .gap(true, 10)
        .req(b"ept: */*\r\n\r\n");
    w.resp(&ok_resp("2"));
    w.req(&get("/three")).resp(&ok_resp("3"));
    let evs = w.run_with(ParseOptions::default(), false);
    assert_eq!(
        summary(&evs),
        vec![
            ("/one".into(), 200, b"1".to_vec()),
            ("/three".into(), 200, b"3".to_vec())
        ]
    );
    let sk = skipped(&evs);
    assert!(sk.contains(&(21, "gap-in-head")), "{sk:?}");
    assert!(
        sk.iter().any(|s| s.1 == "response-without-request"),
        "{sk:?}"
    );
}

#[test]
fn gap_in_response_head_and_lost_response() {
    let mut w = Wire::new(Side::Server);
    w.req(&get("/one"))
        .resp(b"HTTP/1.1 200 OK\r\nContent-Le")
        .gap(false, 30);
    w.req(&get("/two"));
    // Response 2 lost entirely (declared), then response 3 arrives after request 3.
    w.gap(false, 40);
    w.req(&get("/three")).resp(&ok_resp("3"));
    let evs = w.run();
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 3, "{evs:?}");
    let p0 = resp(&xs[0]);
    assert!(p0.incomplete);
    assert_eq!(status(p0), 200);
    assert_eq!(p0.lost_bytes, 30);
    assert!(xs[1].response.is_none());
    assert_eq!(target(&xs[2].request), "/three");
    assert_eq!(&resp(&xs[2]).body[..], b"3");
}

#[test]
fn gap_in_chunked_body_is_incomplete() {
    let mut w = Wire::new(Side::Server);
    w.req(&get("/c"))
        .resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        .gap(false, 20);
    w.req(&get("/d")).resp(&ok_resp("d"));
    let evs = w.run_with(ParseOptions::default(), false);
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 2);
    let p = resp(&xs[0]);
    assert!(p.incomplete);
    assert_eq!(&p.body[..], b"ab");
    assert_eq!(p.lost_bytes, 20);
    assert_eq!(summary(&evs)[1], ("/d".into(), 200, b"d".to_vec()));
}

#[test]
fn mid_stream_attach_server() {
    // Request 1 was read before the attach (its tail is seen), response 1 is written after.
    let mut w = Wire::new(Side::Server);
    w.unseen(true, 50).req(b"dy-of-request-1");
    w.unseen(false, 0).resp(&ok_resp("for-1"));
    w.req(&get("/2")).resp(&ok_resp("for-2"));
    w.req(&get("/3")).resp(&ok_resp("for-3"));
    let evs = w.run();
    assert_eq!(
        summary(&evs),
        vec![
            ("/2".into(), 200, b"for-2".to_vec()),
            ("/3".into(), 200, b"for-3".to_vec())
        ]
    );
    let sk = skipped(&evs);
    assert!(sk.contains(&(15, "mid-stream")), "{sk:?}");
    assert!(
        sk.contains(&(ok_resp("for-1").len() as u64, "response-without-request")),
        "{sk:?}"
    );
    assert_eq!(exchanges(&evs)[0].index, 0);
}

#[test]
fn mid_stream_attach_client_in_response_body() {
    // Attached inside response 1's body; requests 2 and 3 complete.
    let mut w = Wire::new(Side::Client);
    w.unseen(true, 80).unseen(false, 40).resp(b"rest of body 1");
    w.req(&get("/2")).resp(&ok_resp("two"));
    w.req(&get("/3")).resp(&ok_resp("three"));
    let evs = w.run();
    assert_eq!(
        summary(&evs),
        vec![
            ("/2".into(), 200, b"two".to_vec()),
            ("/3".into(), 200, b"three".to_vec())
        ]
    );
    assert!(skipped(&evs).contains(&(14, "mid-stream")));
}

#[test]
fn response_direction_ahead_of_requests() {
    // The response bytes are fed before their request (the request stream lagged).
    let mut w = Wire::new(Side::Server);
    w.req(&get("/1"));
    w.resp(&ok_resp("one"));
    let (a, b) = (w.segs[0].clone(), w.segs[1].clone());
    w.segs = vec![b, a];
    let evs = w.run_with(ParseOptions::default(), false);
    assert_eq!(summary(&evs), vec![("/1".into(), 200, b"one".to_vec())]);
}

#[test]
fn body_cap() {
    let big: String = "x".repeat(300 * 1024);
    let mut w = Wire::new(Side::Server);
    w.req(&get("/big"));
    let r = ok_resp(&big);
    for c in r.chunks(65536) {
        w.resp(c);
    }
    let whole = w.run_with(ParseOptions { max_body: 1 << 20 }, false);
    let p = resp(&exchanges(&whole)[0]).clone();
    assert_eq!(p.body.len(), 300 * 1024);
    assert_eq!(p.body_size, 300 * 1024);
    assert!(!p.truncated);
    let cut = w.run_with(ParseOptions { max_body: 1024 }, false);
    let p = resp(&exchanges(&cut)[0]).clone();
    assert_eq!(p.body.len(), 1024);
    assert_eq!(p.body_size, 300 * 1024);
    assert!(p.truncated);
    assert_eq!(p.wire_size, r.len() as u64);
}

#[test]
fn garbage() {
    let mut w = Wire::new(Side::Server);
    w.req(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03random tls-ish bytes\r\n\n\n");
    w.resp(b"\x00\x01\x02 HTTP/1.1 200 nope");
    w.req(b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n");
    w.req(&get("/ok")).resp(&ok_resp("ok"));
    let evs = w.run();
    assert_eq!(summary(&evs), vec![("/ok".into(), 200, b"ok".to_vec())]);
    let sk = skipped(&evs);
    assert!(sk.iter().any(|s| s.1 == "mid-stream"));
    assert!(sk.iter().any(|s| s.1 == "bad-head"), "{sk:?}");
}

#[test]
fn close_with_pending() {
    let mut w = Wire::new(Side::Server);
    w.req(&get("/a"))
        .req(b"POST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    w.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
    let evs = w.run();
    let xs = exchanges(&evs);
    assert_eq!(xs.len(), 2);
    assert!(resp(&xs[0]).incomplete);
    assert!(xs[1].request.incomplete);
    assert!(xs[1].response.is_none());
}

// ---------------------------------------------------------------------------------------------
// Property: chunking and in-direction reordering do not change the result.

/// Comparable view of an exchange (marks depend on chunking).
fn view(x: &Exchange) -> String {
    let m = |m: &HttpMessage| {
        format!(
            "{:?} v{} {:?} body={:?} size={} trunc={} lost={} {:?} trailers={:?} wire={} inc={}",
            m.start,
            m.version,
            m.headers,
            m.body,
            m.body_size,
            m.truncated,
            m.lost_bytes,
            m.framing,
            m.trailers,
            m.wire_size,
            m.incomplete
        )
    };
    format!(
        "#{} {} -> {} interim=[{}]",
        x.index,
        m(&x.request),
        x.response.as_ref().map_or_else(|| "None".to_owned(), m),
        x.interim.iter().map(m).collect::<Vec<_>>().join("; ")
    )
}

/// A conversation: (request bytes, response bytes) per exchange.
fn conversation() -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (get("/a"), ok_resp("alpha")),
        (
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\n0\r\n\r\n".to_vec(),
        ),
        (b"HEAD /c HTTP/1.1\r\n\r\n".to_vec(), b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec()),
        (
            b"PUT /d HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        ),
        (b"body".to_vec(), b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        (get("/e"), b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nuntil close".to_vec()),
    ]
}

/// Deliver `data` of one direction as chunks cut at `cuts`, each with timestamp `ts`,
/// positions starting at `base`.
fn cut(data: &[u8], base: u64, ts: u64, cuts: &[usize]) -> Vec<Chunk> {
    let mut cs: Vec<usize> = cuts.iter().map(|c| c % data.len().max(1)).collect();
    cs.push(0);
    cs.push(data.len());
    cs.sort_unstable();
    cs.dedup();
    cs.windows(2)
        .map(|w| Chunk {
            pos: base + w[0] as u64,
            data: Bytes::copy_from_slice(&data[w[0]..w[1]]),
            ts_ns: ts,
            tid: 1,
        })
        .collect()
}

fn permute<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn run_property(side: Side, cuts: &[Vec<usize>], seeds: &[u64]) -> (Vec<String>, Vec<String>) {
    let conv = conversation();
    let req_egress = side == Side::Client;
    // Reference: each message in one piece, in time order.
    let mut whole = HttpConn::new(side, ParseOptions { max_body: 8 });
    let mut ref_out = Vec::new();
    let mut pos = [0u64; 2];
    let mut ts = 0;
    for (rq, rs) in &conv {
        for (i, d) in [(0usize, rq), (1, rs)] {
            ts += 1000;
            let c = Chunk {
                pos: pos[i],
                data: Bytes::copy_from_slice(d),
                ts_ns: ts,
                tid: 1,
            };
            pos[i] += d.len() as u64;
            whole.feed((i == 0) == req_egress, Segment::Data(c), &mut ref_out);
        }
    }
    whole.close(ts + 1, &mut ref_out);

    // Chunked, reordered within each direction and within windows of time, through Stream.
    let mut conn = HttpConn::new(side, ParseOptions { max_body: 8 });
    let mut out = Vec::new();
    // The connection is traced from its start: positions begin at 0.
    let mut streams = [
        Stream::starting_at(0, 1 << 20),
        Stream::starting_at(0, 1 << 20),
    ];
    let mut pos = [0u64; 2];
    let mut ts = 0;
    let mut k = 0;
    let mut segs = Vec::new();
    for (rq, rs) in &conv {
        for (i, d) in [(0usize, rq), (1, rs)] {
            ts += 1000;
            let mut chunks = cut(d, pos[i], ts, &cuts[k % cuts.len()]);
            permute(&mut chunks, seeds[k % seeds.len()]);
            k += 1;
            pos[i] += d.len() as u64;
            for c in chunks {
                streams[i].push(c);
                for (j, s) in streams.iter_mut().enumerate() {
                    segs.clear();
                    s.pop_ready(ts, u64::MAX / 2, &mut segs);
                    for seg in segs.drain(..) {
                        conn.feed((j == 0) == req_egress, seg, &mut out);
                    }
                }
            }
        }
    }
    for (j, s) in streams.iter_mut().enumerate() {
        segs.clear();
        s.flush(&mut segs);
        for seg in segs.drain(..) {
            conn.feed((j == 0) == req_egress, seg, &mut out);
        }
    }
    conn.close(ts + 1, &mut out);
    let v = |evs: &[HttpEvent]| exchanges(evs).iter().map(view).collect::<Vec<_>>();
    (v(&ref_out), v(&out))
}

#[test]
fn conversation_reference_is_right() {
    let (r, _) = run_property(Side::Server, &[vec![]], &[0]);
    assert_eq!(r.len(), 5, "{r:#?}");
    assert!(r[1].contains("trailers=[(\"T\""), "{}", r[1]);
    assert!(r[3].contains("interim=[Response { status: 100"), "{}", r[3]);
    assert!(
        r[4].contains("body=b\"until cl\" size=11 trunc=true"),
        "{}",
        r[4]
    );
}

proptest! {
    #[test]
    fn chunking_and_reordering_do_not_matter(
        client in any::<bool>(),
        cuts in prop::collection::vec(prop::collection::vec(0usize..200, 0..8), 1..12),
        seeds in prop::collection::vec(any::<u64>(), 1..12),
    ) {
        let side = if client { Side::Client } else { Side::Server };
        let (want, got) = run_property(side, &cuts, &seeds);
        prop_assert_eq!(want, got);
    }

    #[test]
    fn never_panics(
        client in any::<bool>(),
        segs in prop::collection::vec((any::<bool>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..64), 0u64..20), 0..40),
    ) {
        let side = if client { Side::Client } else { Side::Server };
        let mut c = HttpConn::new(side, ParseOptions { max_body: 16 });
        let mut out = Vec::new();
        let mut pos = [0u64; 2];
        let seeds: &[&[u8]] = &[b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"Content-Length: 3\r\n", b"\r\n", b"Transfer-Encoding: chunked\r\n", b"5\r\n"];
        for (i, (egress, gap, bytes, sel)) in segs.into_iter().enumerate() {
            let d = usize::from(egress);
            if gap {
                c.feed(egress, Segment::Gap { pos: pos[d], len: sel }, &mut out);
                pos[d] += sel;
                continue;
            }
            let data = if sel < 6 { seeds[sel as usize].to_vec() } else { bytes };
            let len = data.len() as u64;
            c.feed(egress, Segment::Data(Chunk { pos: pos[d], data: data.into(), ts_ns: i as u64, tid: 0 }), &mut out);
            pos[d] += len;
        }
        c.close(99, &mut out);
    }
}

#[test]
fn stream_timeout_gap_reaches_parser_as_lost_bytes() {
    let req = b"POST /p HTTP/1.1\r\nContent-Length: 12\r\n\r\nabcdefghijkl";
    let mut s = Stream::starting_at(0, 1 << 20);
    let mut conn = HttpConn::new(Side::Server, ParseOptions::default());
    let mut out = Vec::new();
    let mut segs = Vec::new();
    let head = req.len() - 12;
    // The chunk with "efgh" never arrives.
    for (a, b, ts) in [(0, head + 4, 10), (head + 8, req.len(), 12)] {
        s.push(Chunk {
            pos: a as u64,
            data: Bytes::copy_from_slice(&req[a..b]),
            ts_ns: ts,
            tid: 3,
        });
    }
    s.pop_ready(20, 100, &mut segs);
    assert_eq!(segs.len(), 1);
    s.pop_ready(200, 100, &mut segs);
    assert_eq!(
        segs[1],
        Segment::Gap {
            pos: head as u64 + 4,
            len: 4
        }
    );
    for seg in segs {
        conn.feed(false, seg, &mut out);
    }
    let rsp = ok_resp("k");
    conn.feed(
        true,
        Segment::Data(Chunk {
            pos: 0,
            data: rsp.into(),
            ts_ns: 300,
            tid: 3,
        }),
        &mut out,
    );
    let xs = exchanges(&out);
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].request.lost_bytes, 4);
    assert_eq!(&xs[0].request.body[..], b"abcdijkl");
    assert_eq!(xs[0].request.last.ts_ns, 12);
}
