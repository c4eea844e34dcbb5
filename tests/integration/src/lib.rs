//! Privileged end-to-end tests; run by `cargo xtask test`.
