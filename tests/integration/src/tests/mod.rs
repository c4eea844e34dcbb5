//! Privileged end-to-end tests against real Python apps. One file per feature; every test
//! starts its own upstream, app and agent on free ports, so tests never see each other.

mod attach;
mod attribution;
mod audit;
mod boom;
mod browser;
mod concurrency;
mod config;
mod db;
mod ebpf_log;
mod faults;
mod image;
mod live;
mod mongo;
mod node;
mod privilege;
mod record;
mod redact;
mod replay;
mod retain;
mod s3;
mod scenario;
mod sendfile;
mod sigkill;
mod startup;
mod tls;
mod tui;
