//! Opening a NATS connection from the config: server list, auth, TLS, and connection events
//! turned into log lines and counters.

use crate::config::{redact_url, Config};
use crate::error::PierError;
use crate::log::{Level, SharedLogger};
use crate::stats::Stats;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Reconnect delays grow from 0 to this cap, so a failover after a node dies takes well under
/// two seconds while a long outage does not hammer the servers.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

pub async fn connect(
    config: &Config,
    logger: SharedLogger,
    stats: Arc<Stats>,
    name: &str,
) -> Result<Client, PierError> {
    let servers_display = config.servers_for_display();
    let connect_error = |reason: String| PierError::Connect {
        servers: servers_display.clone(),
        reason,
    };
    let urls = config.server_urls();
    let addrs = urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| connect_error(format!("bad server URL {}: {e}", redact_url(u))))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut options = auth_options(config).await.map_err(connect_error)?;
    options = options
        .name(name)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .max_reconnects(None)
        .subscription_capacity(16 * 1024);
    // A cluster advertises its peers' websocket ports without a scheme and the client would add
    // them as plain TCP, so with ws:// or an explicit list, the configured servers are the truth.
    let any_ws = urls.iter().any(|u| u.starts_with("ws"));
    if any_ws || urls.len() > 1 {
        options = options.ignore_discovered_servers();
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls_required {
        options = options.require_tls(true);
    }

    let reconnect_logger = logger.clone();
    options = options.reconnect_delay_callback(move |attempt| {
        let delay = if attempt <= 1 {
            Duration::ZERO
        } else {
            (Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(16) as u32 - 1))
                .min(MAX_RECONNECT_DELAY)
        };
        // The first attempt of every (re)connect has no delay and needs no line of its own.
        if !delay.is_zero() {
            reconnect_logger.log(
                Level::Warn,
                &format!(
                    "[pier-connector] reconnecting (attempt {attempt}, in {} ms)",
                    delay.as_millis()
                ),
            );
        }
        delay
    });

    let event_logger = logger.clone();
    let first_connect = Arc::new(std::sync::atomic::AtomicBool::new(true));
    options = options.event_callback(move |event| {
        let logger = event_logger.clone();
        let stats = stats.clone();
        let first_connect = first_connect.clone();
        async move {
            let (level, text) = match &event {
                Event::Connected => {
                    if !first_connect.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        stats.reconnected();
                    }
                    (Level::Info, "connected".to_string())
                }
                Event::Disconnected => {
                    stats.disconnected();
                    (Level::Warn, "disconnected".to_string())
                }
                Event::SlowConsumer(sid) => {
                    stats.slow_consumer();
                    (
                        Level::Warn,
                        format!("slow consumer on subscription {sid}: messages dropped"),
                    )
                }
                Event::ServerError(err) => {
                    stats.server_error();
                    (Level::Error, format!("server error: {err}"))
                }
                Event::ClientError(err) => (Level::Error, format!("client error: {err}")),
                Event::LameDuckMode => (Level::Warn, "server entered lame duck mode".to_string()),
                Event::Draining => (Level::Info, "draining".to_string()),
                Event::Closed => (Level::Info, "connection closed".to_string()),
            };
            logger.log(level, &format!("[pier-connector] NATS {text}"));
        }
    });

    logger.log(
        Level::Info,
        &format!("[pier-connector] connecting to {servers_display}"),
    );
    options
        .connect(addrs)
        .await
        .map_err(|e| connect_error(crate::error::one_line(&e.to_string())))
}

async fn auth_options(config: &Config) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new();
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_string());
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(seed) = &config.nkey_seed {
        // async-nats checks the seed only when the server asks for a signature; check it now
        // so a typo is a clear config error, not a vague authentication failure.
        nkeys_seed_looks_valid(seed.expose())?;
        options = options.nkey(seed.expose().to_string());
    }
    if let Some(path) = &config.creds_file {
        options = options.credentials_file(path).await.map_err(|e| {
            // A parse error could quote the file, which holds a seed: describe it instead.
            let why = if e.kind() == std::io::ErrorKind::InvalidData {
                "not a valid NATS credentials file".to_string()
            } else {
                crate::error::one_line(&e.to_string())
            };
            format!("cannot read credsFile {}: {why}", path.display())
        })?;
    }
    Ok(options)
}

fn nkeys_seed_looks_valid(seed: &str) -> Result<(), String> {
    if seed.len() == 58 && seed.starts_with("SU") {
        Ok(())
    } else {
        Err("nkeySeed is not a user nkey seed (expected 58 characters starting with SU)".into())
    }
}

/// Waits until the server has processed everything this client sent before, and returns the
/// time it took. `Client::flush` only empties the local write buffer; a message sent to a
/// private inbox and received back is a true round trip, since the server handles one
/// connection's commands in order.
pub async fn round_trip(client: &Client, timeout: Duration) -> Result<Duration, PierError> {
    let failed =
        |why: String| PierError::Request(format!("round trip to the server failed: {why}"));
    let start = std::time::Instant::now();
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(timeout, echo.next()).await {
        Ok(Some(_)) => Ok(start.elapsed()),
        Ok(None) => Err(failed("connection closed".into())),
        Err(_) => Err(failed(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}
