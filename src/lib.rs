//! pier-connector: turns an OpenClaw agent into a worker on the Pier job marketplace.
//!
//! The core (config, protocol, connection, worker, publisher, stats) is plain Rust; `binding`
//! is the only module that knows about N-API.

pub mod config;
pub mod connection;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod jetstream;
pub mod log;
mod outbox;
pub mod protocol;
pub mod publisher;
pub mod stats;
mod sync;
pub mod worker;

mod binding;

// The worker allocates small buffers on several tokio threads at once; glibc malloc's arena
// locking showed up as the top cost under load (see bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
