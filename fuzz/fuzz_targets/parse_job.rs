//! Any bytes given to the inbound parser: it must never panic, and what it answers must be a
//! reply the protocol allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier_connector::config::WorkerIdentity;
use pier_connector::error::ErrorCode;
use pier_connector::protocol::{encode_error, encode_result, parse_job};

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
