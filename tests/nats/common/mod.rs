//! What the integration tests share: a real nats-server on a random loopback port, and a
//! config pointing at it.
#![allow(dead_code)] // each test file uses a part of it

use async_nats::jetstream::{self, stream};
use pier_connector::config::Config;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    child: Child,
    pub url: String,
    pub port: u16,
    args: Vec<String>,
    _store: Option<TempDir>,
}

/// A directory removed on drop (JetStream's store).
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A JetStream server, a client of it, and the requester's results stream (`RESULTS`, subjects
/// `results.>`) made with `results`'s other settings (its limits, say).
pub async fn jetstream_with_results(
    results: stream::Config,
) -> (NatsServer, async_nats::Client, jetstream::Context) {
    let server = NatsServer::jetstream().await;
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "RESULTS".into(),
        subjects: vec!["results.>".into()],
        ..results
    })
    .await
    .unwrap();
    (server, client, js)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        NatsServer::with_args(&[]).await
    }

    /// With JetStream enabled, its store in a temporary directory.
    pub async fn jetstream() -> NatsServer {
        let dir = std::env::temp_dir().join(format!("pier-js-{}", uuid_like()));
        let store = dir.to_string_lossy().to_string();
        let mut server = NatsServer::with_args(&["-js", "-sd", &store]).await;
        server._store = Some(TempDir(dir));
        server
    }

    /// Extra nats-server arguments (e.g. `--auth TOKEN`).
    pub async fn with_args(extra: &[&str]) -> NatsServer {
        NatsServer::on_port(free_port(), extra).await
    }

    pub async fn on_port(port: u16, extra: &[&str]) -> NatsServer {
        let mut args: Vec<String> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&args);
        let server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            args,
            _store: None,
        };
        server.wait_listening().await;
        server
    }

    async fn wait_listening(&self) {
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not listen on {}", self.port);
    }
}

fn spawn(args: &[String]) -> Child {
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_string());
    Command::new(&bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (run scripts/setup.sh): {e}"))
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The identity file the tests' workers and publishers keep their own key in (one per test
/// process, under the temporary directory: never the user's default one).
pub fn identity_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pier-test-identity-{}.seed", std::process::id()))
}

/// A config for `url` on subject `jobs.rust`, worker `rust-1`, with `extra` keys on top.
pub fn config(url: &str, extra: Value) -> Config {
    let mut base = json!({
        "natsUrl": url, "subject": "jobs.rust", "workerId": "rust-1",
        "identityFile": identity_file()
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    Config::from_value(base).expect("valid config")
}

/// Waits until `check` holds, polling every 10 ms, for at most `within`.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
