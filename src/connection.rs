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
use std::time::{Duration, Instant};

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

/// While a connection stays down, at most one line per this interval says it still is.
const OUTAGE_LINE_EVERY: Duration = Duration::from_secs(60);

/// How a connection outage is told, in the log and in the status: one line when the connection
/// goes down (or a first connection fails), at most one a minute while the attempts go on, one
/// when it is back; the attempts and the last attempt's error are in the status all along.
/// Shared by the first connection's retry loop and the client's reconnect callbacks.
struct Outage {
    logger: SharedLogger,
    stats: Arc<Stats>,
    servers: String,
    /// Credentials from the server URLs, masked in every error text.
    secrets: Vec<String>,
    state: std::sync::Mutex<OutageState>,
}

#[derive(Default)]
struct OutageState {
    /// When the connection went down (or the first connection began failing); `None` while up.
    since: Option<Instant>,
    /// A reconnect of an established connection (the client's own loop) rather than a first
    /// connection (the retry loop in [`connect`]).
    reconnecting: bool,
    last_line: Option<Instant>,
    attempts: u64,
    last_error: Option<String>,
}

impl Outage {
    fn new(config: &Config, logger: SharedLogger, stats: Arc<Stats>) -> Arc<Outage> {
        let secrets = config
            .server_urls()
            .iter()
            .filter_map(|u| url_credentials(u))
            .flat_map(|(user, password)| [Some(user), password])
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        Arc::new(Outage {
            logger,
            stats,
            servers: config.servers_for_display(),
            secrets,
            state: std::sync::Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clean(&self, text: &str) -> String {
        let mut text = one_line(text);
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        text
    }

    /// The established connection was lost: the client reconnects by itself.
    fn lost(&self) {
        let mut state = self.state();
        let now = Instant::now();
        *state = OutageState {
            since: Some(now),
            reconnecting: true,
            last_line: Some(now),
            ..OutageState::default()
        };
        self.logger.log(
            Level::Warn,
            &format!(
                "[pier-connector] NATS connection to {} lost; reconnecting",
                self.servers
            ),
        );
    }

    /// A first connection's attempt failed with `error` (already in the status's words).
    fn first_attempt_failed(&self, attempt: u32, error: &PierError, retry_in: Duration) {
        let mut state = self.state();
        let now = Instant::now();
        state.attempts = u64::from(attempt);
        self.stats.set_connect_attempts(state.attempts);
        self.stats.set_last_error(&format!("PIER_CONNECT: {error}"));
        let since = *state.since.get_or_insert(now);
        if state.last_line.is_none() {
            state.last_line = Some(now);
            self.logger.log(
                Level::Warn,
                &format!(
                    "[pier-connector] {error}; retrying until a server answers (every {} ms, up to {} s apart)",
                    retry_in.as_millis(),
                    MAX_RETRY_DELAY.as_secs()
                ),
            );
        } else {
            self.still_down(&mut state, now, since, &error.to_string());
        }
    }

    /// One more attempt of the client's reconnect loop.
    fn reconnect_attempt(&self, attempt: usize) {
        let mut state = self.state();
        if !state.reconnecting {
            return;
        }
        state.attempts = attempt as u64;
        self.stats.set_connect_attempts(state.attempts);
        let now = Instant::now();
        let since = *state.since.get_or_insert(now);
        let why = state.last_error.clone().unwrap_or_default();
        self.still_down(&mut state, now, since, &why);
    }

    /// What the last reconnect attempt failed with, from the client's server pool.
    fn reconnect_failed(&self, error: &str) {
        let mut state = self.state();
        if !state.reconnecting {
            return;
        }
        let error = self.clean(error);
        self.stats.set_last_error(&format!(
            "PIER_CONNECT: cannot reach {}: {error}",
            self.servers
        ));
        state.last_error = Some(error);
    }

    fn reconnecting(&self) -> bool {
        self.state().reconnecting
    }

    /// A failed attempt the client told without its cause: kept only until a precise one comes.
    fn reconnect_failed_vaguely(&self, error: &str) {
        if self.state().last_error.is_none() {
            self.reconnect_failed(error);
        }
    }

    /// At most one line a minute while the connection stays down.
    fn still_down(&self, state: &mut OutageState, now: Instant, since: Instant, why: &str) {
        if state
            .last_line
            .is_some_and(|at| now.duration_since(at) < OUTAGE_LINE_EVERY)
        {
            return;
        }
        state.last_line = Some(now);
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        };
        self.logger.log(
            Level::Warn,
            &format!(
                "[pier-connector] NATS still not connected to {} after {} s ({} attempts){why}",
                self.servers,
                now.duration_since(since).as_secs(),
                state.attempts
            ),
        );
    }

    /// Connected: the line that says so, naming the outage it ends.
    fn up(&self) -> String {
        let mut state = std::mem::take(&mut *self.state());
        self.stats.set_connect_attempts(0);
        self.stats.clear_last_error_of("PIER_CONNECT");
        let what = if state.reconnecting {
            "connection back"
        } else {
            "connected"
        };
        match state.since.take() {
            Some(since) => format!(
                "{what} to {} after {} s ({} attempts)",
                self.servers,
                since.elapsed().as_secs(),
                state.attempts.max(1)
            ),
            None => format!("connected to {}", self.servers),
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
    let outage = Outage::new(config, logger.clone(), stats);
    logger.log(
        Level::Info,
        &format!(
            "[pier-connector] connecting to {}",
            config.servers_for_display()
        ),
    );
    let mut attempt = 0u32;
    loop {
        match connect_once(config, outage.clone(), name).await {
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
                outage.first_attempt_failed(attempt, &error, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn connect_once(
    config: &Config,
    outage: Arc<Outage>,
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
    let options = with_events(options, outage);
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
fn with_events(options: ConnectOptions, outage: Arc<Outage>) -> ConnectOptions {
    let attempts = outage.clone();
    let failures = outage.clone();
    let first_connect = Arc::new(AtomicBool::new(true));
    options
        .reconnect_delay_callback(move |attempt| {
            attempts.reconnect_attempt(attempt);
            if attempt <= 1 {
                Duration::ZERO
            } else {
                (Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(16) as u32 - 1))
                    .min(MAX_RECONNECT_DELAY)
            }
        })
        // Called before each attempt with the pool as the last attempts left it: the only place
        // the client tells why a reconnect failed. `None` keeps the client's own server choice.
        .reconnect_to_server_callback(move |servers, _info| {
            let failed = servers
                .iter()
                .filter(|s| s.last_error.is_some())
                .max_by_key(|s| s.failed_attempts)
                .and_then(|s| s.last_error.clone());
            if let Some(error) = failed {
                failures.reconnect_failed(&error);
            }
            std::future::ready(None)
        })
        .event_callback(move |event| {
            if let Some((level, text)) = count_event(&event, &outage, &first_connect) {
                outage
                    .logger
                    .log(level, &format!("[pier-connector] NATS {text}"));
            }
            std::future::ready(())
        })
}

/// Counts a connection event and says it in one line (none for a lost connection's reconnect
/// bookkeeping, which [`Outage`] logs).
fn count_event(
    event: &Event,
    outage: &Outage,
    first_connect: &AtomicBool,
) -> Option<(Level, String)> {
    let stats = &outage.stats;
    Some(match event {
        Event::Connected => {
            if !first_connect.swap(false, Ordering::Relaxed) {
                stats.reconnected();
            }
            (Level::Info, outage.up())
        }
        Event::Disconnected => {
            stats.disconnected();
            outage.lost();
            return None;
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
        // Each failed reconnect attempt is also a client error (a bare "IO error"): the outage
        // already has its lines and the attempt's own error.
        Event::ClientError(err) => {
            if outage.reconnecting() {
                outage.reconnect_failed_vaguely(&err.to_string());
                return None;
            }
            (Level::Error, format!("client error: {err}"))
        }
        Event::LameDuckMode => (Level::Warn, "server entered lame duck mode".to_string()),
        Event::Draining => (Level::Info, "draining".to_string()),
        Event::Closed => (Level::Info, "connection closed".to_string()),
    })
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
    fn an_outage_is_one_line_down_and_one_back_however_many_attempts() {
        let memory = Arc::new(crate::log::MemoryLogger::default());
        let stats = Arc::new(Stats::default());
        let config = Config {
            nats_url: "nats://s3cret@127.0.0.1:4222".into(),
            ..Config::default()
        };
        let outage = Outage::new(&config, memory.clone(), stats.clone());
        outage.lost();
        for attempt in 1..=40 {
            outage.reconnect_failed_vaguely("IO error");
            outage.reconnect_failed("IO error: Connection refused for s3cret");
            outage.reconnect_attempt(attempt);
        }
        let status = stats.snapshot();
        assert_eq!(status.connect_attempts, 40);
        let error = stats.last_error().unwrap_or_default();
        assert!(error.starts_with("PIER_CONNECT: cannot reach nats://[redacted]@127.0.0.1:4222: IO error: Connection refused"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let back = outage.up();
        assert!(
            back.starts_with(
                "connection back to nats://[redacted]@127.0.0.1:4222 after 0 s (40 attempts)"
            ),
            "{back}"
        );
        assert_eq!(stats.snapshot().connect_attempts, 0);
        let lines = memory.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].1.ends_with("lost; reconnecting"));
        // After the outage, a client error is told again.
        assert!(!outage.reconnecting());
    }

    #[test]
    fn attempts_allow_as_many_tries_as_configured() {
        assert!(Attempts::Unlimited.allows(1_000));
        assert!(Attempts::AtMost(1).allows(0) && !Attempts::AtMost(1).allows(1));
        assert!(Attempts::AtMost(3).allows(2) && !Attempts::AtMost(3).allows(3));
    }
}
