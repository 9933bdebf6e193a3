//! Any bytes given to the inbound parser: it must never panic, and what it answers must be a
//! reply the protocol allows.
#![no_main]

// The crate's own source files of the wire format (`protocol`, pure functions) and of the error
// codes, compiled into this target rather than the whole crate as a dependency: the fuzz build
// then compiles serde and libFuzzer, not the crate's NATS, TLS and allocator dependencies, every
// one instrumented (~150 CPU-seconds on a fresh machine, ~50 this way). Anything else those files
// come to need fails this build in the test command.
#[allow(dead_code)]
#[path = "../../src/error.rs"]
mod error;
#[allow(dead_code, unused_imports)]
#[path = "../../src/protocol/mod.rs"]
mod protocol;

use error::ErrorCode;
use libfuzzer_sys::fuzz_target;
use protocol::{encode_error, encode_result, parse_job, WorkerIdentity};

fuzz_target!(|data: &[u8]| {
    let worker = WorkerIdentity {
        id: "fuzz".into(),
        wallet: None,
    };
    let reply = match parse_job(data, 64 * 1024) {
        Ok(job) => {
            assert!(!job.task.trim().is_empty());
            assert!(!job.id.is_empty());
            encode_result(&job.id, &job.task, 0, &worker)
        }
        Err(rejection) => {
            assert!(matches!(
                rejection.error.code,
                ErrorCode::ParseError | ErrorCode::InvalidRequest | ErrorCode::PayloadTooLarge
            ));
            assert!(!rejection.error.message.contains('\n'));
            encode_error(rejection.id.as_deref(), &rejection.error, &worker)
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&reply).expect("replies are JSON");
    assert_eq!(value["version"], "1.0");
});
