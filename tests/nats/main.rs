//! The integration tests against real nats-server processes, in one test binary: one link
//! instead of one per file (each links async-nats, tokio and the crate again; twelve links
//! were most of `cargo test`'s build on two cores).

mod common;
mod rig;

mod admission;
mod budget;
mod cap;
mod hostile_headers;
mod hostile_server;
mod jetstream_delivery;
mod jetstream_refusals;
mod job_identity;
mod ledger_truth;
mod progress;
mod signatures;
mod worker_nats;
