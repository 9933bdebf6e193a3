//! Signed requests and results (protocol.md, "Signed requests and results"): the canonical
//! bytes, signing and checking the `Pier-Sender` and `Pier-Worker` headers, and the replay
//! memory a worker keeps of the `(key, nonce)` pairs it accepted. Plain Rust, no I/O.
//!
//! Keys are NATS user nkeys (ed25519). A signature is base64url without padding of the 64-byte
//! ed25519 signature; ed25519 is deterministic, so the README's test vector is stable.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::{KeyPair, KeyPairType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Request header: who sent the job.
pub const SENDER_HEADER: &str = "Pier-Sender";
/// Reply header: which worker answered.
pub const WORKER_HEADER: &str = "Pier-Worker";

const TASK_DOMAIN: &str = "PIER-TASK-V1";
const RESULT_DOMAIN: &str = "PIER-RESULT-V1";

/// Room for any well-formed header (five short fields); a longer one is refused unread.
const MAX_HEADER_BYTES: usize = 1024;

/// How many `(key, nonce)` pairs a worker remembers at most. Each costs about 50 bytes, so the
/// memory stays under ~5 MB; at the default 60 s window it holds ~1,600 signed jobs a second.
/// When it is full a signed job is answered OVERLOADED: forgetting a nonce early would let a
/// replay through. Only the nonces of jobs that run are kept (a job refused before it runs may
/// come again without harm), so it is filled by no more than the worker can run in a window.
pub const REPLAY_MEMORY_CAP: usize = 100_000;

/// `ts`: RFC 3339 UTC, whole seconds, `Z`.
const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// A user nkey with its seed: signs requests (publisher) or replies (worker). Prints redacted.
#[derive(Clone)]
pub struct SigningKey {
    pair: KeyPair,
    public: String,
}

impl SigningKey {
    /// From a user seed (`SU…`). The error never quotes the seed.
    pub fn from_seed(seed: &str) -> Result<SigningKey, String> {
        let pair = KeyPair::from_seed(seed.trim())
            .ok()
            .filter(|p| p.key_pair_type() == KeyPairType::User)
            .ok_or_else(|| "not a user nkey seed (SU…, 58 characters)".to_string())?;
        Ok(SigningKey {
            public: pair.public_key(),
            pair,
        })
    }

    /// A new random user key (`pier-connector keygen`); `(seed, public key)`.
    pub fn generate() -> Result<(String, String), String> {
        let pair = KeyPair::new_user();
        let seed = pair.seed().map_err(|e| e.to_string())?;
        Ok((seed, pair.public_key()))
    }

    /// The public key (`U…`), safe to show anyone.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    fn sign(&self, bytes: &[u8]) -> String {
        // A key made from a seed always has its signing half, so this never falls back.
        URL_SAFE_NO_PAD.encode(self.pair.sign(bytes).unwrap_or_default())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, seed [redacted])", self.public)
    }
}

/// Whether `key` is a valid user public key (`U…`, 56 characters, good checksum).
pub fn is_user_public_key(key: &str) -> bool {
    key.len() == 56
        && key.starts_with('U')
        && KeyPair::from_public_key(key).is_ok_and(|p| p.key_pair_type() == KeyPairType::User)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The bytes a `Pier-Sender` signature covers.
pub fn task_bytes(
    key: &str,
    subject: &str,
    reply: &str,
    ts: &str,
    nonce: &str,
    payload_sha256: &str,
) -> Vec<u8> {
    lines(&[TASK_DOMAIN, key, subject, reply, ts, nonce, payload_sha256])
}

/// The bytes a `Pier-Worker` signature covers.
pub fn result_bytes(key: &str, id: &str, nonce: &str, ts: &str, payload_sha256: &str) -> Vec<u8> {
    lines(&[RESULT_DOMAIN, key, id, nonce, ts, payload_sha256])
}

/// Each part followed by `\n`.
fn lines(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out
}

/// `time` as the headers' `ts` (whole seconds, UTC, `Z`).
pub fn format_ts(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(TS_FORMAT).ok())
        .unwrap_or_default()
}

/// A `ts` as Unix milliseconds; `None` unless it is exactly `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_ts(ts: &str) -> Option<i64> {
    let t = PrimitiveDateTime::parse(ts, TS_FORMAT).ok()?.assume_utc();
    Some(t.unix_timestamp() * 1000)
}

/// Unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

#[derive(Serialize)]
struct SenderWire<'a> {
    v: u8,
    key: &'a str,
    ts: &'a str,
    nonce: &'a str,
    sig: &'a str,
}

#[derive(Serialize)]
struct WorkerWire<'a> {
    v: u8,
    key: &'a str,
    ts: &'a str,
    sig: &'a str,
}

/// A header as received: every field optional, so each defect gets its own reason.
#[derive(Deserialize)]
struct HeaderWire {
    v: Option<serde_json::Value>,
    key: Option<String>,
    ts: Option<String>,
    nonce: Option<String>,
    sig: Option<String>,
}

/// A signed request's headers, as a requester sends them.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// The `Pier-Sender` header value.
    pub header: String,
    /// Its nonce, which the worker's `Pier-Worker` signature covers.
    pub nonce: String,
}

/// Signs a request published to `subject` whose reply line (protocol.md) is `reply`.
pub fn sign_request(
    key: &SigningKey,
    subject: &str,
    reply: &str,
    payload: &[u8],
    now: SystemTime,
) -> SignedRequest {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let ts = format_ts(now);
    sign_request_with(key, subject, reply, payload, &ts, &nonce)
}

/// [`sign_request`] with a chosen `ts` and nonce (the test vector).
pub fn sign_request_with(
    key: &SigningKey,
    subject: &str,
    reply: &str,
    payload: &[u8],
    ts: &str,
    nonce: &str,
) -> SignedRequest {
    let bytes = task_bytes(
        key.public_key(),
        subject,
        reply,
        ts,
        nonce,
        &sha256_hex(payload),
    );
    let sig = key.sign(&bytes);
    let header = serde_json::to_string(&SenderWire {
        v: 1,
        key: key.public_key(),
        ts,
        nonce,
        sig: &sig,
    })
    .unwrap_or_default();
    SignedRequest {
        header,
        nonce: nonce.to_string(),
    }
}

/// The `Pier-Worker` header for a reply to request `id` (`None`: the reply's id is null)
/// that carried `nonce` (empty when unsigned); `payload` is the reply exactly as sent.
pub fn sign_result(
    key: &SigningKey,
    id: Option<&str>,
    nonce: &str,
    payload: &[u8],
    now: SystemTime,
) -> String {
    let ts = format_ts(now);
    let bytes = result_bytes(
        key.public_key(),
        id.unwrap_or_default(),
        nonce,
        &ts,
        &sha256_hex(payload),
    );
    let sig = key.sign(&bytes);
    serde_json::to_string(&WorkerWire {
        v: 1,
        key: key.public_key(),
        ts: &ts,
        sig: &sig,
    })
    .unwrap_or_default()
}

/// A `Pier-Sender` header whose form was checked (not yet its signature).
#[derive(Debug, Clone)]
pub struct SenderHeader {
    pub key: String,
    pub ts: String,
    ts_ms: i64,
    pub nonce: String,
    sig: [u8; 64],
}

/// Why a signature was refused: one line, for the `UNAUTHORIZED` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refused(header: &str, why: impl fmt::Display) -> Refusal {
    Refusal(format!("{header} header refused: {why}"))
}

fn parse_wire(header: &str, value: &str) -> Result<HeaderWire, Refusal> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(refused(header, "malformed (too long)"));
    }
    let wire: HeaderWire = serde_json::from_str(value)
        .map_err(|_| refused(header, "malformed (not a JSON object of strings)"))?;
    match &wire.v {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => return Err(refused(header, "unknown version v (this worker knows v 1)")),
        None => return Err(refused(header, "malformed (no v)")),
    }
    Ok(wire)
}

fn parse_sig(header: &str, sig: Option<String>) -> Result<[u8; 64], Refusal> {
    let sig = sig.ok_or_else(|| refused(header, "malformed (no sig)"))?;
    URL_SAFE_NO_PAD
        .decode(sig.as_bytes())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| {
            refused(
                header,
                "malformed sig (base64url without padding of 64 bytes)",
            )
        })
}

fn parse_key(header: &str, key: Option<String>) -> Result<String, Refusal> {
    let key = key.ok_or_else(|| refused(header, "malformed (no key)"))?;
    if !is_user_public_key(&key) {
        return Err(refused(header, "key is not a user public key (U…)"));
    }
    Ok(key)
}

fn nonce_is_valid(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reads a `Pier-Sender` header: version, key, `ts`, nonce and signature in their forms.
pub fn parse_sender(value: &str) -> Result<SenderHeader, Refusal> {
    let h = SENDER_HEADER;
    let wire = parse_wire(h, value)?;
    let key = parse_key(h, wire.key)?;
    let ts = wire.ts.ok_or_else(|| refused(h, "malformed (no ts)"))?;
    let ts_ms = parse_ts(&ts).ok_or_else(|| {
        refused(
            h,
            "malformed ts (RFC 3339 UTC, whole seconds, Z: 2026-12-04T02:30:00Z)",
        )
    })?;
    let nonce = wire
        .nonce
        .ok_or_else(|| refused(h, "malformed (no nonce)"))?;
    if !nonce_is_valid(&nonce) {
        return Err(refused(h, "malformed nonce (16-64 of A-Z a-z 0-9 _ -)"));
    }
    let sig = parse_sig(h, wire.sig)?;
    Ok(SenderHeader {
        key,
        ts,
        ts_ms,
        nonce,
        sig,
    })
}

/// The nonce of a `Pier-Sender` header, when it can be read at all: a worker's refusal still
/// names the request it refuses.
pub fn sender_nonce(value: &str) -> Option<String> {
    parse_wire(SENDER_HEADER, value)
        .ok()?
        .nonce
        .filter(|n| nonce_is_valid(n))
}

/// How a delivered message looked, for checking its `Pier-Sender`.
pub struct Delivered<'a> {
    pub payload: &'a [u8],
    /// Subjects the requester may have signed: where the message arrived, and the worker's
    /// `publishSubject` (a marketplace relay).
    pub subjects: [&'a str; 2],
    /// The reply line (protocol.md): `Pier-Reply-To`, else the NATS reply, else empty.
    pub reply: &'a str,
    /// What `ts` is compared with: the stream's stored time (JetStream), else now (Unix ms).
    pub time_ms: i64,
    /// JetStream: the stream sequence, so a redelivery of the same message is not a replay.
    pub stream_seq: Option<u64>,
}

/// Why a signed job is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Answered `UNAUTHORIZED` with this reason.
    Unauthorized(Refusal),
    /// The replay memory is full: answered `OVERLOADED`.
    MemoryFull,
}

/// Checks `Pier-Sender` headers: the window, the signature and the replay memory.
pub struct SenderVerifier {
    max_age_ms: i64,
    memory: std::sync::Mutex<ReplayMemory>,
}

impl SenderVerifier {
    pub fn new(max_age_ms: u64) -> SenderVerifier {
        SenderVerifier::with_cap(max_age_ms, REPLAY_MEMORY_CAP)
    }

    pub fn with_cap(max_age_ms: u64, cap: usize) -> SenderVerifier {
        SenderVerifier {
            max_age_ms: i64::try_from(max_age_ms).unwrap_or(i64::MAX),
            memory: std::sync::Mutex::new(ReplayMemory::new(cap)),
        }
    }

    /// Verifies `header` for `message` and remembers its nonce: [`SenderVerifier::check`],
    /// then [`SenderVerifier::remember`].
    pub fn verify(
        &self,
        header: &SenderHeader,
        message: &Delivered<'_>,
        now_ms: i64,
        admits: impl FnOnce(&str) -> bool,
    ) -> Result<(), Denied> {
        let accepted = self.check(header, message, now_ms, admits)?;
        self.remember(&accepted)
    }

    /// Checks `header` for `message` without touching the replay memory: the window, the
    /// signature, then `admits(key)`, the worker's sender policy. `now_ms` is the wall clock.
    /// Pure: what to remember comes back, and is remembered only for a job that will run
    /// ([`SenderVerifier::remember`]), so jobs refused anyway (a stranger's, or any while every
    /// slot is taken) never fill the memory the genuine ones need.
    pub fn check(
        &self,
        header: &SenderHeader,
        message: &Delivered<'_>,
        now_ms: i64,
        admits: impl FnOnce(&str) -> bool,
    ) -> Result<Accepted, Denied> {
        let deny = |why: &str| Err(Denied::Unauthorized(refused(SENDER_HEADER, why)));
        // The window before the signature: a stale header costs no ed25519 verify.
        if (message.time_ms - header.ts_ms).abs() > self.max_age_ms {
            return deny("ts is outside the allowed window (signatureMaxAgeMs; check the clocks)");
        }
        let digest = sha256_hex(message.payload);
        let Ok(pair) = KeyPair::from_public_key(&header.key) else {
            return deny("key is not a user public key (U…)");
        };
        let [first, second] = message.subjects;
        let signed = |subject: &str| {
            let bytes = task_bytes(
                &header.key,
                subject,
                message.reply,
                &header.ts,
                &header.nonce,
                &digest,
            );
            pair.verify(&bytes, &header.sig).is_ok()
        };
        if !(signed(first) || (second != first && signed(second))) {
            return deny("bad signature (not by this key over this payload, subject and reply)");
        }
        if !admits(&header.key) {
            return deny("this worker does not take jobs from this sender");
        }
        // The memory's clock is the one the window is measured with: the wall clock, or in
        // JetStream the stream's stored time, so a copy stored inside the window is still
        // caught however long it waited in the stream. Kept until the ts could no longer pass
        // the window, and at least a window from now.
        let clock_ms = if message.stream_seq.is_some() {
            message.time_ms
        } else {
            now_ms
        };
        Ok(Accepted {
            key: header.key.clone(),
            nonce: header.nonce.clone(),
            stream_seq: message.stream_seq,
            expires_ms: header.ts_ms.max(clock_ms).saturating_add(self.max_age_ms),
            clock_ms,
        })
    }

    /// Whether `accepted` would be remembered now, without remembering it: a replay is
    /// refused, and a full memory answered OVERLOADED, before the job takes a slot.
    pub fn lookup(&self, accepted: &Accepted) -> Result<(), Denied> {
        let seen = crate::sync::lock(&self.memory).lookup(
            &accepted.key,
            &accepted.nonce,
            accepted.stream_seq,
            accepted.clock_ms,
        );
        seen.map(|_| ()).map_err(Seen::denied)
    }

    /// Remembers the nonce of a job that will run (its slot is taken): a replay of it is refused
    /// from now until its ts could no longer pass the window.
    pub fn remember(&self, accepted: &Accepted) -> Result<(), Denied> {
        crate::sync::lock(&self.memory)
            .remember(
                &accepted.key,
                &accepted.nonce,
                accepted.stream_seq,
                accepted.expires_ms,
                accepted.clock_ms,
            )
            .map_err(Seen::denied)
    }

    /// How many nonces are remembered now.
    pub fn remembered(&self) -> usize {
        crate::sync::lock(&self.memory).seen.len()
    }
}

/// A `Pier-Sender` whose window, signature and sender policy held: the verified key, and what
/// the replay memory keeps of it once its job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub key: String,
    pub nonce: String,
    stream_seq: Option<u64>,
    expires_ms: i64,
    clock_ms: i64,
}

/// Checks a reply's `Pier-Worker` header against the request (`id` as in the reply's id
/// field, empty when null; `nonce` of the request's `Pier-Sender`, empty when unsigned);
/// returns the worker's key.
pub fn verify_result(
    value: &str,
    id: &str,
    nonce: &str,
    payload: &[u8],
) -> Result<String, Refusal> {
    let h = WORKER_HEADER;
    let wire = parse_wire(h, value)?;
    let key = parse_key(h, wire.key)?;
    let ts = wire.ts.ok_or_else(|| refused(h, "malformed (no ts)"))?;
    if parse_ts(&ts).is_none() {
        return Err(refused(h, "malformed ts"));
    }
    let sig = parse_sig(h, wire.sig)?;
    let bytes = result_bytes(&key, id, nonce, &ts, &sha256_hex(payload));
    let verified = KeyPair::from_public_key(&key).is_ok_and(|p| p.verify(&bytes, &sig).is_ok());
    if !verified {
        return Err(refused(
            h,
            "bad signature (not by this key over this reply to this request)",
        ));
    }
    Ok(key)
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Replay,
    Full,
}

impl Seen {
    fn denied(self) -> Denied {
        match self {
            Seen::Replay => Denied::Unauthorized(refused(
                SENDER_HEADER,
                "nonce already used by this key (replay)",
            )),
            Seen::Full => Denied::MemoryFull,
        }
    }
}

struct Remembered {
    expires_ms: i64,
    stream_seq: Option<u64>,
}

/// The `(key, nonce)` pairs accepted inside the window, each kept as a 128-bit keyed hash
/// (two independent SipHash keys: an outsider cannot aim for a collision) until it expires.
struct ReplayMemory {
    cap: usize,
    seen: HashMap<u128, Remembered>,
    by_expiry: BinaryHeap<Reverse<(i64, u128)>>,
    hashers: (RandomState, RandomState),
}

impl ReplayMemory {
    fn new(cap: usize) -> ReplayMemory {
        ReplayMemory {
            cap,
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    fn id(&self, key: &str, nonce: &str) -> u128 {
        let pair = (key, nonce);
        let (a, b) = (self.hashers.0.hash_one(pair), self.hashers.1.hash_one(pair));
        (u128::from(a) << 64) | u128::from(b)
    }

    fn forget_expired(&mut self, now_ms: i64) {
        while let Some(Reverse((expires, id))) = self.by_expiry.peek().copied() {
            if expires > now_ms {
                break;
            }
            self.by_expiry.pop();
            if self.seen.get(&id).is_some_and(|r| r.expires_ms == expires) {
                self.seen.remove(&id);
            }
        }
    }

    /// `Ok(true)` when the pair is new and there is room for it, `Ok(false)` when it is the
    /// same stream message delivered again (a retry, a lost ack): nothing to add.
    fn lookup(
        &mut self,
        key: &str,
        nonce: &str,
        stream_seq: Option<u64>,
        now_ms: i64,
    ) -> Result<bool, Seen> {
        self.forget_expired(now_ms);
        let id = self.id(key, nonce);
        if let Some(earlier) = self.seen.get(&id) {
            return match (stream_seq, earlier.stream_seq) {
                (Some(now), Some(then)) if now == then => Ok(false),
                _ => Err(Seen::Replay),
            };
        }
        if self.seen.len() >= self.cap {
            return Err(Seen::Full);
        }
        Ok(true)
    }

    fn remember(
        &mut self,
        key: &str,
        nonce: &str,
        stream_seq: Option<u64>,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), Seen> {
        if !self.lookup(key, nonce, stream_seq, now_ms)? {
            return Ok(());
        }
        let id = self.id(key, nonce);
        self.seen.insert(
            id,
            Remembered {
                expires_ms,
                stream_seq,
            },
        );
        self.by_expiry.push(Reverse((expires_ms, id)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's test vector (section "Who sent this job, who answered it"): the seed is
    /// the user seed of 32 bytes of 0x07.
    const VECTOR_SEED: &str = "SUAAOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBZ5FE";
    const VECTOR_KEY: &str = "UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF";
    const VECTOR_PAYLOAD: &[u8] = br#"{"version":"1.0","id":"job-1","type":"task_request","task":"Say hello","timeoutMs":60000,"meta":{"sender":"alice"}}"#;
    const VECTOR_SHA256: &str = "1d4ed4db925cd3808bcee8fad1f53d5a6b2f3512552d84a14a1c5ffdaad3ac6e";
    const VECTOR_SIG: &str =
        "hyHg9BYvRmWuQFRG-E0zrynP04hU9QemIyQn_r8jvyt_FWqpFI037fH3VNXHhGwcjyoMD-GOsu8qKFzt0pmABA";

    fn vector_key() -> SigningKey {
        SigningKey::from_seed(VECTOR_SEED).unwrap()
    }

    fn now_ms() -> i64 {
        unix_ms(SystemTime::now())
    }

    fn delivered<'a>(payload: &'a [u8], subject: &'a str, reply: &'a str) -> Delivered<'a> {
        Delivered {
            payload,
            subjects: [subject, "jobs.submit"],
            reply,
            time_ms: now_ms(),
            stream_seq: None,
        }
    }

    #[test]
    fn the_readme_test_vector_holds() {
        let seed = KeyPair::new_from_raw(KeyPairType::User, [7u8; 32])
            .unwrap()
            .seed()
            .unwrap();
        assert_eq!(seed, VECTOR_SEED);
        let key = vector_key();
        assert_eq!(key.public_key(), VECTOR_KEY);
        let (ts, nonce) = ("2026-12-04T02:30:00Z", "pier-test-vector-0001");
        let (subject, reply) = ("jobs.submit", "_INBOX.requester.1");
        assert_eq!(sha256_hex(VECTOR_PAYLOAD), VECTOR_SHA256);
        let bytes = task_bytes(VECTOR_KEY, subject, reply, ts, nonce, VECTOR_SHA256);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!("PIER-TASK-V1\n{VECTOR_KEY}\njobs.submit\n_INBOX.requester.1\n2026-12-04T02:30:00Z\npier-test-vector-0001\n{VECTOR_SHA256}\n")
        );
        let signed = sign_request_with(&key, subject, reply, VECTOR_PAYLOAD, ts, nonce);
        assert_eq!(
            signed.header,
            format!(
                r#"{{"v":1,"key":"{VECTOR_KEY}","ts":"{ts}","nonce":"{nonce}","sig":"{VECTOR_SIG}"}}"#
            )
        );
        // And it verifies, on the worker's subject with the publish subject accepted.
        let header = parse_sender(&signed.header).unwrap();
        let message = Delivered {
            payload: VECTOR_PAYLOAD,
            subjects: ["jobs.worker", "jobs.submit"],
            reply,
            time_ms: header.ts_ms,
            stream_seq: None,
        };
        assert_eq!(
            SenderVerifier::new(60_000).verify(&header, &message, header.ts_ms, |_| true),
            Ok(())
        );
    }

    #[test]
    fn a_stranger_refused_by_policy_takes_no_place_in_the_replay_memory() {
        let payload = br#"{"task":"x"}"#;
        let verifier = SenderVerifier::with_cap(60_000, 1);
        let message = delivered(payload, "jobs.worker", "_INBOX.a");
        let (stranger, listed) = (KeyPair::new_user(), vector_key());
        let stranger = SigningKey::from_seed(&stranger.seed().unwrap()).unwrap();
        for _ in 0..3 {
            let signed = sign_request(
                &stranger,
                "jobs.worker",
                "_INBOX.a",
                payload,
                SystemTime::now(),
            );
            let header = parse_sender(&signed.header).unwrap();
            let refused = verifier.verify(&header, &message, now_ms(), |key| {
                key == listed.public_key()
            });
            assert!(
                matches!(refused, Err(Denied::Unauthorized(r)) if r.0.contains("does not take jobs"))
            );
        }
        // The one place is still free for the listed key.
        let signed = sign_request(
            &listed,
            "jobs.worker",
            "_INBOX.a",
            payload,
            SystemTime::now(),
        );
        let header = parse_sender(&signed.header).unwrap();
        assert_eq!(
            verifier.verify(&header, &message, now_ms(), |_| true),
            Ok(())
        );
    }

    #[test]
    fn jetstream_nonces_are_kept_by_stream_time_so_a_copy_that_waited_in_the_stream_is_caught() {
        let payload = br#"{"task":"x"}"#;
        let key = vector_key();
        let signed = sign_request(&key, "jobs.worker", "", payload, SystemTime::now());
        let header = parse_sender(&signed.header).unwrap();
        let verifier = SenderVerifier::new(60_000);
        let at = |stored_ms: i64, seq: u64| Delivered {
            payload,
            subjects: ["jobs.worker", "jobs.submit"],
            reply: "",
            time_ms: stored_ms,
            stream_seq: Some(seq),
        };
        let t0 = header.ts_ms;
        assert_eq!(
            verifier.verify(&header, &at(t0 + 1_000, 1), t0 + 1_000, |_| true),
            Ok(())
        );
        // A copy stored 50 s after the ts (inside the window), read 70 s after it (the backlog):
        // by the wall clock the nonce would be forgotten; by the stream's clock it is not.
        let copy = verifier.verify(&header, &at(t0 + 50_000, 2), t0 + 70_000, |_| true);
        assert!(matches!(copy, Err(Denied::Unauthorized(r)) if r.0.contains("replay")));
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let key = vector_key();
        let payload = br#"{"task":"x"}"#;
        let signed = sign_request(&key, "jobs.worker", "_INBOX.a", payload, SystemTime::now());
        let header = parse_sender(&signed.header).unwrap();
        let verifier = SenderVerifier::new(60_000);
        let message = delivered(payload, "jobs.worker", "_INBOX.a");
        assert_eq!(
            verifier.verify(&header, &message, now_ms(), |_| true),
            Ok(())
        );
        assert!(matches!(
            verifier.verify(&header, &message, now_ms(), |_| true),
            Err(Denied::Unauthorized(r)) if r.0.contains("replay")
        ));
    }

    #[test]
    fn the_publish_subject_is_accepted_as_the_signed_subject() {
        let key = vector_key();
        let signed = sign_request(&key, "jobs.submit", "", b"p", SystemTime::now());
        let header = parse_sender(&signed.header).unwrap();
        let verifier = SenderVerifier::new(60_000);
        assert_eq!(
            verifier.verify(
                &header,
                &delivered(b"p", "jobs.worker", ""),
                now_ms(),
                |_| true
            ),
            Ok(())
        );
    }

    #[test]
    fn a_changed_payload_subject_or_reply_is_a_bad_signature() {
        let key = vector_key();
        let signed = sign_request(&key, "jobs.worker", "_INBOX.a", b"p", SystemTime::now());
        let header = parse_sender(&signed.header).unwrap();
        let verifier = SenderVerifier::new(60_000);
        for message in [
            delivered(b"q", "jobs.worker", "_INBOX.a"),
            delivered(b"p", "jobs.other", "_INBOX.a"),
            delivered(b"p", "jobs.worker", "_INBOX.b"),
        ] {
            assert!(matches!(
                verifier.verify(&header, &message, now_ms(), |_| true),
                Err(Denied::Unauthorized(r)) if r.0.contains("bad signature")
            ));
        }
    }

    #[test]
    fn a_ts_outside_the_window_is_refused_either_side() {
        let key = vector_key();
        let verifier = SenderVerifier::new(60_000);
        for skew in [-61i64, 61] {
            let then = if skew < 0 {
                SystemTime::now() - std::time::Duration::from_secs(61)
            } else {
                SystemTime::now() + std::time::Duration::from_secs(61)
            };
            let signed = sign_request(&key, "jobs.worker", "", b"p", then);
            let header = parse_sender(&signed.header).unwrap();
            assert!(matches!(
                verifier.verify(&header, &delivered(b"p", "jobs.worker", ""), now_ms(), |_| true),
                Err(Denied::Unauthorized(r)) if r.0.contains("window")
            ));
        }
    }

    #[test]
    fn the_same_stream_message_again_is_not_a_replay() {
        let key = vector_key();
        let signed = sign_request(&key, "jobs.worker", "", b"p", SystemTime::now());
        let header = parse_sender(&signed.header).unwrap();
        let verifier = SenderVerifier::new(60_000);
        let mut message = delivered(b"p", "jobs.worker", "");
        message.stream_seq = Some(7);
        assert_eq!(
            verifier.verify(&header, &message, now_ms(), |_| true),
            Ok(())
        );
        assert_eq!(
            verifier.verify(&header, &message, now_ms(), |_| true),
            Ok(())
        );
        message.stream_seq = Some(8);
        assert!(verifier
            .verify(&header, &message, now_ms(), |_| true)
            .is_err());
    }

    #[test]
    fn a_full_memory_refuses_instead_of_forgetting() {
        let key = vector_key();
        let verifier = SenderVerifier::with_cap(60_000, 2);
        let now = now_ms();
        let mut results = Vec::new();
        for _ in 0..3 {
            let signed = sign_request(&key, "s", "", b"p", SystemTime::now());
            let header = parse_sender(&signed.header).unwrap();
            results.push(verifier.verify(&header, &delivered(b"p", "s", ""), now, |_| true));
        }
        assert_eq!(results, vec![Ok(()), Ok(()), Err(Denied::MemoryFull)]);
        // Once the window has passed, the memory has room again.
        let signed = sign_request(&key, "s", "", b"p", SystemTime::now());
        let header = parse_sender(&signed.header).unwrap();
        let mut later = delivered(b"p", "s", "");
        later.time_ms = header.ts_ms;
        assert_eq!(
            verifier.verify(&header, &later, now + 130_000, |_| true),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let key = vector_key();
        let good: serde_json::Value =
            serde_json::from_str(&sign_request(&key, "s", "", b"p", SystemTime::now()).header)
                .unwrap();
        let with = |field: &str, value: serde_json::Value| {
            let mut h = good.clone();
            h[field] = value;
            h.to_string()
        };
        let cases = [
            ("nope".to_string(), "malformed"),
            (with("v", 2.into()), "unknown version"),
            (
                with("key", key.public_key().replacen('U', "A", 1).into()),
                "not a user public key",
            ),
            (with("ts", "2026-12-04T02:30:00.5Z".into()), "malformed ts"),
            (
                with("ts", "2026-12-04T02:30:00+00:00".into()),
                "malformed ts",
            ),
            (with("nonce", "short".into()), "malformed nonce"),
            (
                with("nonce", "has space in it!!!!".into()),
                "malformed nonce",
            ),
            (with("sig", "AAAA".into()), "malformed sig"),
            (with("sig", 5.into()), "malformed"),
        ];
        for (header, why) in cases {
            let refusal = parse_sender(&header).unwrap_err();
            assert!(refusal.0.contains(why), "{header}: {refusal}");
        }
    }

    #[test]
    fn a_result_signature_binds_reply_request_and_nonce() {
        let key = vector_key();
        let header = sign_result(
            &key,
            Some("job-1"),
            "nonce-0123456789ab",
            b"reply",
            SystemTime::now(),
        );
        assert_eq!(
            verify_result(&header, "job-1", "nonce-0123456789ab", b"reply").as_deref(),
            Ok(key.public_key())
        );
        assert!(verify_result(&header, "job-2", "nonce-0123456789ab", b"reply").is_err());
        assert!(verify_result(&header, "job-1", "", b"reply").is_err());
        assert!(verify_result(&header, "job-1", "nonce-0123456789ab", b"other").is_err());
        let null_id = sign_result(&key, None, "", b"r", SystemTime::now());
        assert!(verify_result(&null_id, "", "", b"r").is_ok());
    }

    #[test]
    fn seeds_are_checked_and_never_printed() {
        let seed = vector_key().pair.seed().unwrap();
        let key = SigningKey::from_seed(&seed).unwrap();
        assert!(!format!("{key:?}").contains(&seed));
        let err = SigningKey::from_seed("SUnot-a-seed").unwrap_err();
        assert!(!err.contains("not-a-seed"));
        let account = KeyPair::new_account().seed().unwrap();
        assert!(SigningKey::from_seed(&account).is_err());
        assert!(is_user_public_key(key.public_key()));
        assert!(!is_user_public_key("alice"));
        let (seed, public) = SigningKey::generate().unwrap();
        assert_eq!(SigningKey::from_seed(&seed).unwrap().public_key(), public);
    }

    #[test]
    fn ts_round_trips_in_whole_seconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_796_265_000_900);
        let ts = format_ts(t);
        assert_eq!(ts, "2026-12-03T02:30:00Z");
        assert_eq!(parse_ts(&ts), Some(1_796_265_000_000));
    }
}
