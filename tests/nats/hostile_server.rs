//! A hostile NATS server cannot make a worker or requester sign a Pier message (protocol.md,
//! "Keys are for Pier signatures only"). NATS nkey login signs whatever nonce the server's INFO
//! carries; the stand-in here is a raw TCP server that sends the canonical PIER-RESULT-V1 and
//! PIER-TASK-V1 bytes as its nonce and collects what the client's CONNECT signs. No signature it
//! collects may verify as a Pier message under the Pier key the worker (or requester) really
//! signs with, which the test learns from a real job against a real nats-server first.

use crate::common::{config, NatsServer};
use pier_connector::handler::EchoHandler;
use pier_connector::log::MemoryLogger;
use pier_connector::publisher::{PublishOptions, Publisher};
use pier_connector::signature::{self, sha256_hex};
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn user_seed(byte: u8) -> (String, String) {
    let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [byte; 32]).unwrap();
    (pair.seed().unwrap(), pair.public_key())
}

/// What the stand-in saw of one connection: the CONNECT's fields, or `None` when the client
/// sent none (it refused to sign the nonce and hung up).
type Seen = Option<Value>;

/// A raw TCP stand-in for a NATS server that requires auth: for each nonce in turn it accepts
/// one connection, sends an INFO carrying that nonce, records the CONNECT and refuses the login.
async fn hostile_server(nonces: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for nonce in nonces {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let info = json!({
                "server_id": "NHOSTILE", "server_name": "hostile", "version": "2.15.1",
                "proto": 1, "host": "127.0.0.1", "port": 4222, "headers": true,
                "max_payload": 1_048_576, "auth_required": true, "nonce": nonce,
            });
            write
                .write_all(format!("INFO {info}\r\n").as_bytes())
                .await
                .unwrap();
            let mut line = String::new();
            let mut read = BufReader::new(read);
            let got = tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut line)).await;
            let connect = match got {
                Ok(Ok(n)) if n > 0 => line
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| serde_json::from_str::<Value>(rest.trim()).ok()),
                _ => None,
            };
            seen.push(connect);
            let _ = write.write_all(b"-ERR 'Authorization Violation'\r\n").await;
        }
        seen
    });
    (url, task)
}

/// The signature a CONNECT carries, decoded.
fn connect_sig(connect: &Value) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let sig = connect.get("sig")?.as_str()?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
}

fn verifies(public_key: &str, bytes: &[u8], sig: &[u8]) -> bool {
    nkeys::KeyPair::from_public_key(public_key).is_ok_and(|k| k.verify(bytes, sig).is_ok())
}

/// A nats-server whose only user is the nkey `login`.
async fn nkey_server(login: &str) -> (NatsServer, crate::common::TempDir) {
    let dir = std::env::temp_dir().join(format!(
        "pier-hostile-{}-{}",
        std::process::id(),
        login.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        format!("authorization {{ users = [ {{ nkey: \"{login}\" }} ] }}\n"),
    )
    .unwrap();
    let server = NatsServer::with_args(&["-c", &conf.to_string_lossy()]).await;
    (server, crate::common::TempDir(dir))
}

#[tokio::test]
async fn a_hostile_server_collects_no_signature_that_verifies_as_a_pier_message() {
    let (login_seed, login_public) = user_seed(41);
    let requester_file = std::env::temp_dir().join(format!(
        "pier-hostile-requester-{}.seed",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&requester_file);
    let worker_settings = json!({ "nkeySeed": login_seed, "maxConnectAttempts": 1 });
    let requester_settings = json!({
        "nkeySeed": login_seed, "maxConnectAttempts": 1, "publishSubject": "jobs.rust",
        "identityFile": requester_file,
    });

    // 1. A real job, on a real server the worker logs in to with its nkey: the key the worker
    //    signs its results with, and the key the requester signs its requests with.
    let (server, _dir) = nkey_server(&login_public).await;
    let logger = Arc::new(MemoryLogger::default());
    let worker = Worker::new(
        config(&server.url, worker_settings.clone()),
        Arc::new(EchoHandler),
        logger.clone(),
    );
    worker
        .start()
        .await
        .expect("the worker logs in with its nkey");
    let publisher = Publisher::connect(
        &config(&server.url, requester_settings.clone()),
        logger.clone(),
    )
    .await
    .expect("the requester logs in with its nkey");
    let reply = publisher
        .publish("hello", PublishOptions::default())
        .await
        .expect("a reply");
    let worker_key = reply["workerKey"]
        .as_str()
        .expect("the reply is signed by default")
        .to_string();
    let requester_key = publisher.signing_key().unwrap().public_key().to_string();
    assert_eq!(
        worker.status().worker_key.as_deref(),
        Some(worker_key.as_str())
    );
    // Neither signs with its login key.
    assert_ne!(worker_key, login_public);
    assert_ne!(requester_key, login_public);
    publisher.close().await;
    worker.stop().await;

    // 2. The hostile stand-in: the canonical bytes of a result and of a request, under the
    //    worker's and requester's Pier keys and under the login key, as nonces.
    let ts = signature::format_ts(SystemTime::now());
    let digest = sha256_hex(br#"{"forged":true}"#);
    let mut documents: Vec<(String, Vec<u8>)> = Vec::new();
    for key in [&worker_key, &login_public] {
        documents.push((
            worker_key.clone(),
            signature::result_bytes(key, "job-1", "", &ts, &digest),
        ));
    }
    for key in [&requester_key, &login_public] {
        documents.push((
            requester_key.clone(),
            signature::task_bytes(
                key,
                "jobs.rust",
                "_INBOX.x",
                &ts,
                "nonce-0123456789ab",
                &digest,
            ),
        ));
    }
    // A control: a nonce like nats-server's own, which the login signs (the stand-in sees it).
    let control = "c2VydmVyLW5vbmNl_-".to_string();
    let mut nonces: Vec<String> = documents
        .iter()
        .map(|(_, bytes)| String::from_utf8(bytes.clone()).unwrap())
        .collect();
    nonces.push(control.clone());
    let (url, stand_in) = hostile_server(nonces.clone()).await;

    // Worker first (the result documents), then the requester (the task documents), then the
    // control; each a fresh connection.
    let order = [true, true, false, false, true];
    for worker_turn in order {
        if worker_turn {
            let worker = Worker::new(
                config(&url, worker_settings.clone()),
                Arc::new(EchoHandler),
                logger.clone(),
            );
            assert!(
                worker.start().await.is_err(),
                "the hostile server refuses every login"
            );
        } else {
            let failed =
                Publisher::connect(&config(&url, requester_settings.clone()), logger.clone()).await;
            assert!(failed.is_err());
        }
    }
    let seen = stand_in.await.unwrap();
    assert_eq!(seen.len(), nonces.len());

    // No signature the server collected verifies as a Pier message under the Pier keys.
    for ((pier_key, bytes), connect) in documents.iter().zip(&seen) {
        let Some(sig) = connect.as_ref().and_then(connect_sig) else {
            continue;
        };
        assert!(
            !verifies(pier_key, bytes, &sig),
            "the server obtained a valid Pier signature by {pier_key}"
        );
    }
    // And the client signs no nonce that is not one: no CONNECT at all carries a signature
    // over a Pier document, whoever's key it names.
    for (nonce, connect) in nonces.iter().zip(&seen).take(documents.len()) {
        let signed = connect.as_ref().and_then(connect_sig);
        assert!(
            signed.is_none(),
            "the client signed a nonce that is a Pier document: {nonce:?}"
        );
    }
    // The control: the login did sign an ordinary nonce, so the stand-in does see signatures.
    let control_connect = seen.last().unwrap().as_ref().expect("a CONNECT");
    let sig = connect_sig(control_connect).expect("the ordinary nonce is signed");
    assert!(verifies(&login_public, control.as_bytes(), &sig));
    assert_eq!(control_connect["nkey"], login_public.as_str());
    let _ = std::fs::remove_file(&requester_file);
}

#[tokio::test]
async fn a_signing_seed_equal_to_the_login_key_is_refused_at_start() {
    let (login_seed, _) = user_seed(42);
    // nkeySeed beside it: refused with the config.
    let err = pier_connector::config::Config::from_value(json!({
        "nkeySeed": login_seed, "signingSeed": login_seed
    }))
    .unwrap_err();
    assert_eq!(err.code(), "PIER_CONFIG");
    // The seed of a creds file: refused when the worker starts, before it connects.
    let dir = std::env::temp_dir().join(format!("pier-hostile-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = dir.join("user.creds");
    std::fs::write(
        &creds,
        format!("-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{login_seed}\n------END USER NKEY SEED------\n"),
    )
    .unwrap();
    let worker = Worker::new(
        config(
            "nats://127.0.0.1:1",
            json!({ "credsFile": creds, "signingSeed": login_seed, "maxConnectAttempts": 1 }),
        ),
        Arc::new(EchoHandler),
        Arc::new(MemoryLogger::default()),
    );
    let err = worker.start().await.unwrap_err();
    assert_eq!(err.code(), "PIER_CONFIG", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("is the NATS login key (the credsFile seed)"),
        "{text}"
    );
    assert!(!text.contains(&login_seed), "{text}");
    assert!(worker
        .status()
        .last_error
        .is_some_and(|e| e.starts_with("PIER_CONFIG")));
    let _ = std::fs::remove_dir_all(dir);
}
