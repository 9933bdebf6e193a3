//! A requester that sends malformed NATS header blocks, in raw protocol frames, interleaved with
//! valid jobs: the worker stays connected, answers every valid job, and answers each bad one
//! INVALID_REQUEST (vendor/async-nats/PIER.md explains the patched parser behind it).

use crate::common::{config, NatsServer};
use pier_connector::handler::EchoHandler;
use pier_connector::log::MemoryLogger;
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The header blocks a careless or hostile publisher can send; nats-server forwards them as-is.
const MALFORMED: [&[u8]; 5] = [
    b"NATS/1.0\r\nno colon on this line\r\n\r\n",
    b"NATS/2.0\r\nA: b\r\n\r\n",
    b"\r\n\r\n",
    b"NATS/1.0\r\nA: \xff\xfe\r\n\r\n",
    b"NATS/1.0\r\nA: x\ry\r\n\r\n",
];

#[tokio::test]
async fn malformed_headers_neither_disconnect_the_worker_nor_go_unanswered() {
    let server = NatsServer::start().await;
    let worker = Worker::new(
        config(&server.url, json!({ "maxConcurrentJobs": 64 })),
        Arc::new(EchoHandler),
        Arc::new(MemoryLogger::default()),
    );
    worker.start().await.expect("worker starts");

    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut info = String::new();
    read.read_line(&mut info).await.unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    write
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nSUB _R.> 1\r\nPING\r\n")
        .await
        .unwrap();

    let mut frames = Vec::new();
    for i in 0..100 {
        let header = MALFORMED[i % MALFORMED.len()];
        let body = json!({ "id": format!("bad{i}"), "task": "x" }).to_string();
        frames.extend_from_slice(
            format!(
                "HPUB jobs.rust _R.bad.{i} {} {}\r\n",
                header.len(),
                header.len() + body.len()
            )
            .as_bytes(),
        );
        frames.extend_from_slice(header);
        frames.extend_from_slice(body.as_bytes());
        frames.extend_from_slice(b"\r\n");
        let body = json!({ "id": format!("ok{i}"), "task": format!("valid {i}") }).to_string();
        frames.extend_from_slice(format!("PUB jobs.rust _R.ok.{i} {}\r\n", body.len()).as_bytes());
        frames.extend_from_slice(body.as_bytes());
        frames.extend_from_slice(b"\r\n");
    }
    write.write_all(&frames).await.unwrap();

    let mut replies: HashMap<String, Value> = HashMap::new();
    let read_replies = async {
        while replies.len() < 200 {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.first().copied() {
                Some("PING") => write.write_all(b"PONG\r\n").await.unwrap(),
                Some("MSG") | Some("HMSG") => {
                    let total: usize = parts.last().unwrap().parse().unwrap();
                    let header_len: usize = if parts[0] == "HMSG" {
                        parts[parts.len() - 2].parse().unwrap()
                    } else {
                        0
                    };
                    let mut bytes = vec![0; total + 2];
                    read.read_exact(&mut bytes).await.unwrap();
                    let body: Value = serde_json::from_slice(&bytes[header_len..total]).unwrap();
                    replies.insert(parts[1].to_string(), body);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_replies)
        .await
        .expect("200 answers in time");

    let valid_answered = (0..100)
        .filter(|i| replies[&format!("_R.ok.{i}")]["result"] == format!("valid {i}"))
        .count();
    let bad_refused = (0..100)
        .filter(|i| {
            let reply = &replies[&format!("_R.bad.{i}")];
            reply["error"]["code"] == "INVALID_REQUEST" && reply["id"] == format!("bad{i}")
        })
        .count();
    let stats = worker.status().stats;
    println!(
        "valid answered {valid_answered}/100, bad answered INVALID_REQUEST {bad_refused}/100, \
         disconnects {}, reconnects {}",
        stats.disconnects, stats.reconnects
    );
    assert_eq!(valid_answered, 100);
    assert_eq!(bad_refused, 100);
    assert_eq!((stats.disconnects, stats.reconnects), (0, 0));
    worker.stop().await;
}
