//! pier-connector: turns an OpenClaw agent into a worker on the Pier job marketplace.
//!
//! The core is plain Rust: `config`, `protocol` (the wire format), `connection`, `pipeline`
//! (admits and answers every job), `delivery` (the sources that feed it: core NATS and
//! JetStream), `progress` (v1.1 progress and cancellation), `worker` (lifecycle), `publisher`,
//! `discovery`, `stats`. `binding` is the only
//! module that knows about N-API (feature `addon`).

mod admission;
pub mod budget;
pub mod config;
#[cfg(test)]
mod config_schema;
pub mod connection;
mod delivery;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod identity;
pub mod ledger;
pub mod log;
pub mod metrics;
mod outbox;
mod pipeline;
pub mod progress;
pub mod protocol;
pub mod publisher;
mod rate;
pub mod signature;
pub mod stats;
pub mod subject;
mod sync;
mod timestamp;
pub mod usage;
pub mod worker;

// Only in the addon build: a binary without Node (tests, bench examples) cannot link N-API.
#[cfg(feature = "addon")]
mod binding;

// The worker allocates small buffers on several tokio threads at once; glibc malloc's arena
// locking showed up as the top cost under load (see bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
