//! Opening a NATS connection from the config: server list, auth (also from URL user-info),
//! TLS, retries with backoff while no server answers, and connection events turned into log
//! lines and counters.

use crate::config::{redact_url, Config};
use crate::error::{one_line, PierError, RequestOp};
use crate::log::{Level, SharedLogger};
use crate::stats::Stats;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reconnect delays grow from 0 to this cap, so a failover after a node dies takes well under
/// two seconds while a long outage does not hammer the servers.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// The longest wait between two attempts of a first connection.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How many times a first connection is tried before the error is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    AtMost(u32),
    /// Until it succeeds, or the caller drops the future.
    Unlimited,
}

impl Attempts {
    /// `maxConnectAttempts`: 0 is unlimited.
    pub fn from_config(max: u32) -> Attempts {
        match max {
            0 => Attempts::Unlimited,
            n => Attempts::AtMost(n),
        }
    }

    fn allows(self, attempt: u32) -> bool {
        match self {
            Attempts::AtMost(n) => attempt < n,
            Attempts::Unlimited => true,
        }
    }
}

/// Connects, retrying with backoff (250 ms doubling to 5 s) while the failure is one a retry
/// can cure (no server reachable, a timeout); authorization, TLS and address errors are
/// returned at once.
pub async fn connect(
    config: &Config,
    logger: SharedLogger,
    stats: Arc<Stats>,
    name: &str,
    attempts: Attempts,
) -> Result<Client, PierError> {
    let mut attempt = 0u32;
    loop {
        match connect_once(config, logger.clone(), stats.clone(), name).await {
            Ok(client) => return Ok(client),
            Err(error) => {
                attempt += 1;
                let retry = matches!(
                    &error,
                    PierError::Connect {
                        permanent: false,
                        ..
                    }
                ) && attempts.allows(attempt);
                if !retry {
                    return Err(error);
                }
                let delay = (Duration::from_millis(250) * 2u32.pow(attempt.min(5) - 1))
                    .min(MAX_RETRY_DELAY);
                stats.set_last_error(&format!("PIER_CONNECT: {error}"));
                logger.log(
                    Level::Warn,
                    &format!(
                        "[pier-connector] {error}; retrying in {} ms (attempt {attempt})",
                        delay.as_millis()
                    ),
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn connect_once(
    config: &Config,
    logger: SharedLogger,
    stats: Arc<Stats>,
    name: &str,
) -> Result<Client, PierError> {
    let servers_display = config.servers_for_display();
    let connect_error = |reason: String| PierError::Connect {
        servers: servers_display.clone(),
        reason,
        permanent: true,
        source: None,
    };
    let urls = config.server_urls();
    let addrs = urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| connect_error(format!("bad server URL {}: {e}", redact_url(u))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = client_options(config, &urls, name)
        .await
        .map_err(connect_error)?;
    let options = with_events(options, logger.clone(), stats);
    logger.log(
        Level::Info,
        &format!("[pier-connector] connecting to {servers_display}"),
    );
    options.connect(addrs).await.map_err(|e| {
        let reason = one_line(&redact_secrets(&e.to_string(), config));
        PierError::Connect {
            servers: servers_display.clone(),
            permanent: !retry_may_cure(&e),
            reason,
            source: Some(Box::new(e)),
        }
    })
}

/// Auth, TLS and the client's tuning, from the config.
async fn client_options(
    config: &Config,
    urls: &[String],
    name: &str,
) -> Result<ConnectOptions, String> {
    let mut options = auth_options(config, urls)
        .await?
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
    Ok(options)
}

/// Reconnect backoff, and connection events as log lines and counters.
fn with_events(options: ConnectOptions, logger: SharedLogger, stats: Arc<Stats>) -> ConnectOptions {
    let reconnect_logger = logger.clone();
    let first_connect = Arc::new(AtomicBool::new(true));
    options
        .reconnect_delay_callback(move |attempt| {
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
        })
        .event_callback(move |event| {
            let (level, text) = count_event(&event, &stats, &first_connect);
            logger.log(level, &format!("[pier-connector] NATS {text}"));
            std::future::ready(())
        })
}

/// Counts a connection event and says it in one line.
fn count_event(event: &Event, stats: &Stats, first_connect: &AtomicBool) -> (Level, String) {
    match event {
        Event::Connected => {
            if !first_connect.swap(false, Ordering::Relaxed) {
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
            let line = format!("server error: {err}");
            stats.set_last_error(&one_line(&line));
            (Level::Error, line)
        }
        Event::ClientError(err) => (Level::Error, format!("client error: {err}")),
        Event::LameDuckMode => (Level::Warn, "server entered lame duck mode".to_string()),
        Event::Draining => (Level::Info, "draining".to_string()),
        Event::Closed => (Level::Info, "connection closed".to_string()),
    }
}

/// Whether a failed connection looks like an outage (no server, a timeout) rather than a
/// setting a retry cannot fix: a login refused, or TLS refused (a certificate, a protocol
/// version). rustls' refusal during the handshake reaches async-nats as an I/O error, so the
/// cause chain is searched for it.
fn retry_may_cure(error: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    matches!(error.kind(), Kind::Io | Kind::TimedOut | Kind::Dns) && !refused_by_tls(error)
}

/// Whether a `rustls::Error` is among the causes, as itself or inside an `io::Error` (which
/// keeps its payload out of `source()`; tokio-rustls wraps it so).
fn refused_by_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::rustls::Error as Tls;
    let mut cause = Some(error);
    while let Some(e) = cause {
        let in_io = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<Tls>());
        if e.is::<Tls>() || in_io {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Error texts from the client may quote a URL with its user-info: never let it through.
fn redact_secrets(text: &str, config: &Config) -> String {
    let mut text = text.to_string();
    for url in config.server_urls() {
        if let Some(auth) = url_credentials(&url) {
            for secret in [auth.0, auth.1.unwrap_or_default()] {
                if !secret.is_empty() {
                    text = text.replace(&secret, "[redacted]");
                }
            }
        }
    }
    text
}

/// The user-info of a server URL: `(token, None)` for `nats://TOKEN@host`, `(user,
/// Some(password))` for `nats://user:password@host`, percent-decoded. As in nats.py and
/// nats.js, so the same URL works with every Pier client.
fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(match userinfo.split_once(':') {
        Some((user, password)) => (percent_decode(user), Some(percent_decode(password))),
        None => (percent_decode(userinfo), None),
    })
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

async fn auth_options(config: &Config, urls: &[String]) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new();
    let explicit = config.token.is_some()
        || config.user.is_some()
        || config.nkey_seed.is_some()
        || config.creds_file.is_some();
    // Credentials in a URL apply when the config names none (explicit settings win).
    if let Some((user, password)) = urls.iter().find_map(|u| url_credentials(u)) {
        if !explicit {
            options = match password {
                Some(password) => options.user_and_password(user, password),
                None => options.token(user),
            };
        }
    }
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

/// A user seed that decodes (base32, checksum, prefix), by the nkeys crate async-nats signs with.
fn nkeys_seed_looks_valid(seed: &str) -> Result<(), String> {
    match nkeys::KeyPair::from_seed(seed) {
        Ok(pair) if pair.key_pair_type() == nkeys::KeyPairType::User => Ok(()),
        _ => {
            Err("nkeySeed is not a user nkey seed (expected 58 characters starting with SU)".into())
        }
    }
}

/// Waits until the server has processed everything this client sent before, and returns the
/// time it took. `Client::flush` only empties the local write buffer; a message sent to a
/// private inbox and received back is a true round trip, since the server handles one
/// connection's commands in order.
pub async fn round_trip(client: &Client, timeout: Duration) -> Result<Duration, PierError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| PierError::request(RequestOp::RoundTrip, e);
    let start = std::time::Instant::now();
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.into()))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| failed(e.into()))?;
    match tokio::time::timeout(timeout, echo.next()).await {
        Ok(Some(_)) => Ok(start.elapsed()),
        Ok(None) => Err(failed("connection closed".into())),
        Err(_) => Err(failed(
            format!("no answer within {} ms", timeout.as_millis()).into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_user_info_is_a_token_or_user_and_password() {
        assert_eq!(
            url_credentials("nats://s3cr%40t@h:4222"),
            Some(("s3cr@t".to_string(), None))
        );
        assert_eq!(
            url_credentials("tls://bob:pw:x@h:4222/path@x"),
            Some(("bob".to_string(), Some("pw:x".to_string())))
        );
        assert_eq!(url_credentials("nats://h:4222"), None);
    }

    #[test]
    fn only_curable_failures_are_retried() {
        use async_nats::rustls::{CertificateError, Error as Tls};
        use async_nats::ConnectErrorKind as Kind;
        use std::io::{Error as Io, ErrorKind};
        let io = |e: Io| async_nats::ConnectError::with_source(Kind::Io, e);
        assert!(retry_may_cure(&io(ErrorKind::ConnectionRefused.into())));
        assert!(retry_may_cure(&async_nats::ConnectError::from(
            Kind::TimedOut
        )));
        // A refused certificate or login does not heal by trying again: rustls' error inside the
        // I/O error (as tokio-rustls reports it), or behind another error that wraps that one.
        let refused = || Tls::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(!retry_may_cure(&io(Io::new(
            ErrorKind::InvalidData,
            refused()
        ))));
        let wrapped = Io::other(Box::new(io(Io::new(ErrorKind::InvalidData, refused()))));
        assert!(!retry_may_cure(&async_nats::ConnectError::with_source(
            Kind::Io,
            Box::new(wrapped) as Box<dyn std::error::Error + Send + Sync>
        )));
        assert!(!retry_may_cure(&async_nats::ConnectError::from(
            Kind::AuthorizationViolation
        )));
    }

    #[test]
    fn an_nkey_seed_must_decode_as_a_user_seed() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        assert!(nkeys_seed_looks_valid(&seed).is_ok());
        // 58 characters starting with SU, one typed wrong: its checksum no longer matches.
        let other = if &seed[10..11] == "A" { "B" } else { "A" };
        let typo = format!("{}{other}{}", &seed[..10], &seed[11..]);
        assert!(nkeys_seed_looks_valid(&typo).is_err());
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        assert!(nkeys_seed_looks_valid(&account).is_err());
    }

    #[test]
    fn attempts_allow_as_many_tries_as_configured() {
        assert!(Attempts::Unlimited.allows(1_000));
        assert!(Attempts::AtMost(1).allows(0) && !Attempts::AtMost(1).allows(1));
        assert!(Attempts::AtMost(3).allows(2) && !Attempts::AtMost(3).allows(3));
    }
}
