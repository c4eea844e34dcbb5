//! Is a client connection MongoDB? Decided from the first message header seen in each
//! direction (port-agnostic). `Some(true)` / `Some(false)`, or `None` when more bytes are needed.
use super::header_ok;

/// MongoDB: a request header (`OP_MSG`, `OP_QUERY`, `OP_COMPRESSED` or a legacy write
/// opcode, sane length, `responseTo` 0, `OP_MSG` flag bits and first section checked) at the
/// start of the client's bytes, or a reply header (`OP_MSG` / `OP_REPLY` / `OP_COMPRESSED`,
/// `responseTo` set) at the start of the server's.
#[must_use]
pub fn detect_mongodb(first_egress: &[u8], first_ingress: &[u8]) -> Option<bool> {
    let e = header_ok(first_egress, true);
    let i = header_ok(first_ingress, false);
    match (e, i) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        // The client wrote something that is not a request; the server's side is unknown.
        (Some(false), None) if first_ingress.is_empty() => Some(false),
        _ if first_egress.is_empty() && first_ingress.is_empty() => None,
        (Some(false), None) | (None, Some(false)) => None,
        (None, None) => None,
    }
}
