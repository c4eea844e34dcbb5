//! HTTP/1.x: incremental parsing of both directions of a connection and stitching of
//! requests to responses.
mod conn;
pub mod detect;
pub(crate) mod parse;
pub mod types;

pub use conn::{HttpConn, ParseOptions};

#[cfg(test)]
mod tests;

use self::detect::Detected;
use self::types::{HttpEvent, Side};
use super::{ProtoEvent, Protocol, Replay, Spec};
use crate::reassembly::Segment;

/// HTTP/1.x in the registry: inbound requests (server side) and dependency calls (client side).
pub static SPEC: Spec = Spec {
    protocol: Protocol::Http,
    name: "http",
    label: "HTTP",
    aliases: &["https", "httpx", "requests", "aiohttp", "urllib3"],
    event_type: "http.client",
    sides: &[Side::Server, Side::Client],
    detect: detect_either,
    parser: |side, limits| {
        Box::new(HttpConn::new(
            side,
            ParseOptions {
                max_body: limits.max_body,
            },
        ))
    },
    redact: super::redact::Redaction::CassetteBuilder,
    replay: Replay::Mocked,
};

/// HTTP when either direction starts (or, mid-stream, continues) with an HTTP/1.x start line
/// of the kind expected there.
fn detect_either(first_egress: &[u8], first_ingress: &[u8], side: Side) -> Option<bool> {
    let v = [
        detect::detect(first_egress, true, side),
        detect::detect(first_ingress, false, side),
    ];
    if v.contains(&Detected::Http) {
        Some(true)
    } else if v.contains(&Detected::NeedMore) {
        None
    } else {
        Some(false)
    }
}

impl super::Parser for HttpConn {
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<ProtoEvent>) {
        let mut evs: Vec<HttpEvent> = Vec::new();
        HttpConn::feed(self, egress, seg, &mut evs);
        out.extend(evs.into_iter().map(ProtoEvent::Http));
    }
    fn close(&mut self, ts_ns: u64, out: &mut Vec<ProtoEvent>) {
        let mut evs: Vec<HttpEvent> = Vec::new();
        HttpConn::close(self, ts_ns, &mut evs);
        out.extend(evs.into_iter().map(ProtoEvent::Http));
    }
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }
}
