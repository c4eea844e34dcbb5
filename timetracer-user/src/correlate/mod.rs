//! Connection table and attribution of outbound calls to inbound requests.
pub mod model;
