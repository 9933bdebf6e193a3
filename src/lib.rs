//! pier-connector: turns an OpenClaw agent into a worker on the Pier job marketplace.
//!
//! The core (config, protocol, connection, worker, publisher, stats) is plain Rust; `binding`
//! is the only module that knows about N-API.

pub mod config;
pub mod connection;
pub mod error;
pub mod handler;
pub mod log;
pub mod protocol;
pub mod publisher;
pub mod stats;
pub mod worker;

mod binding;
