//! NATS service discovery (the `$SRV` micro protocol, v1): a running worker answers
//! `$SRV.PING|INFO|STATS`, `…​.pier-worker` and `…​.pier-worker.<id>` with its identity and live
//! counters, so operators can list the workers that are alive. The shapes follow ADR-32 as
//! nats.py's `from_dict` and @nats-io/services read them (every key present, `started` with
//! milliseconds). Implemented here rather than with async-nats' service API because a Pier
//! error reply must carry both the service error headers and the `task_error` body (the
//! service API counts such a reply as a success), JetStream mode has no queue group, and its
//! STATS lack the `metadata` and `data` keys and `started` precision nats.py requires.

use crate::error::{PierError, RequestOp};
use crate::stats::Stats;
use crate::timestamp::rfc3339;
use async_nats::{Client, Subject};
use futures_util::stream::{select_all, StreamExt};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

pub const SERVICE_NAME: &str = "pier-worker";
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");
const VERBS: [&str; 3] = ["PING", "INFO", "STATS"];

/// Who this worker is, as discovery reports it.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    /// Unique per worker start.
    pub id: String,
    pub worker_id: String,
    pub wallet: Option<String>,
    pub subject: String,
    /// `None` in JetStream mode (a pull consumer): reported as `""`.
    pub queue_group: Option<String>,
    pub started: SystemTime,
    /// Whether STATS report the worker's earnings and spending (config `discoveryEarnings`).
    pub earnings: bool,
    /// The public key that signs this worker's replies, for requesters to pin
    /// (`trustedWorkers`); reported as metadata `workerKey` when set.
    pub worker_key: Option<String>,
}

/// What discovery tells anyone of the last error: its code alone. The message can name a
/// sender, a subject or a server's words, and discovery answers strangers.
fn public_code(last_error: Option<String>) -> String {
    let Some(error) = last_error else {
        return String::new();
    };
    match error.split_once(':') {
        Some((code, _))
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            code.to_string()
        }
        _ => "ERROR".to_string(),
    }
}

/// One answer of the micro protocol: PING carries the identity, INFO adds the description and
/// the endpoint, STATS the start time and the endpoint's counters.
#[derive(Debug, Serialize)]
pub struct Response<'a> {
    #[serde(rename = "type")]
    kind: String,
    name: &'static str,
    id: &'a str,
    version: &'static str,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<[Endpoint<'a>; 1]>,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    #[serde(rename = "workerId")]
    worker_id: &'a str,
    /// `""` when the worker names no wallet: readers expect a string.
    wallet: &'a str,
    #[serde(rename = "workerKey", skip_serializing_if = "Option::is_none")]
    worker_key: Option<&'a str>,
    /// The version of progress and cancellation this worker speaks (protocol v1.1):
    /// `Pier-Progress-To`, `task_progress`, `task_cancel`.
    progress: &'static str,
}

#[derive(Debug, Serialize)]
struct Endpoint<'a> {
    name: &'static str,
    subject: &'a str,
    /// `""` in JetStream mode, which has no queue group.
    queue_group: &'a str,
    /// INFO: the endpoint's own metadata (none: `{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Map<String, Value>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stats: Option<EndpointStats>,
}

#[derive(Debug, Serialize)]
struct EndpointStats {
    num_requests: u64,
    num_errors: u64,
    last_error: String,
    processing_time: u64,
    average_processing_time: u64,
    /// The worker's own counters (p50Ms, tokens; earned and spent when the operator opts in),
    /// plus its server: free-form, as the protocol's `data` is.
    data: Value,
}

impl ServiceIdentity {
    fn answer(&self, kind: &str) -> Response<'_> {
        Response {
            kind: format!("io.nats.micro.v1.{kind}_response"),
            name: SERVICE_NAME,
            id: &self.id,
            version: SERVICE_VERSION,
            metadata: Metadata {
                worker_id: &self.worker_id,
                wallet: self.wallet.as_deref().unwrap_or_default(),
                worker_key: self.worker_key.as_deref(),
                progress: crate::protocol::PROGRESS_VERSION,
            },
            description: None,
            started: None,
            endpoints: None,
        }
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            name: "jobs",
            subject: &self.subject,
            queue_group: self.queue_group.as_deref().unwrap_or_default(),
            metadata: None,
            stats: None,
        }
    }

    /// The response to one verb, from the current counters; `server` is the NATS server the
    /// worker is connected to.
    pub fn response(&self, verb: &str, stats: &Stats, server: &str) -> Response<'_> {
        match verb {
            "INFO" => Response {
                description: Some("Pier marketplace worker (pier-connector)"),
                endpoints: Some([Endpoint {
                    metadata: Some(serde_json::Map::new()),
                    ..self.endpoint()
                }]),
                ..self.answer("info")
            },
            "STATS" => {
                let s = stats.snapshot();
                let processing = stats.processing_nanos();
                let mut data = serde_json::to_value(&s).unwrap_or(Value::Null);
                if let Value::Object(d) = &mut data {
                    d.insert("server".into(), server.into());
                    if !self.earnings {
                        d.remove("earned");
                        d.remove("spent");
                    }
                }
                Response {
                    started: Some(rfc3339(self.started)),
                    endpoints: Some([Endpoint {
                        stats: Some(EndpointStats {
                            num_requests: s.received,
                            num_errors: s.failed + s.rejected + s.timed_out,
                            last_error: public_code(stats.last_error()),
                            processing_time: processing,
                            average_processing_time: processing
                                .checked_div(s.received)
                                .unwrap_or(0),
                            data,
                        }),
                        ..self.endpoint()
                    }]),
                    ..self.answer("stats")
                }
            }
            _ => self.answer("ping"),
        }
    }
}

/// Answers discovery requests until `stop` is cancelled.
pub async fn serve(
    client: Client,
    me: ServiceIdentity,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), PierError> {
    let mut subscriptions = Vec::new();
    for verb in VERBS {
        for subject in [
            format!("$SRV.{verb}"),
            format!("$SRV.{verb}.{SERVICE_NAME}"),
            format!("$SRV.{verb}.{SERVICE_NAME}.{}", me.id),
        ] {
            let sub = client
                .subscribe(subject)
                .await
                .map_err(|e| PierError::request(RequestOp::Discovery, e))?;
            subscriptions.push(sub.map(move |m| (verb, m)));
        }
    }
    let mut requests = select_all(subscriptions);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            next = requests.next() => {
                let Some((verb, message)) = next else { break };
                if let Some(reply) = message.reply {
                    let server = client.server_info().server_name;
                    let body = serde_json::to_vec(&me.response(verb, &stats, &server)).unwrap_or_default();
                    let _ = client.publish(reply, body.into()).await;
                }
            }
        }
    }
    Ok(())
}

/// Sends `$SRV.STATS.pier-worker` and gathers every answer that arrives within `wait`.
pub async fn discover(client: &Client, wait: Duration) -> Result<Vec<Value>, PierError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| PierError::request(RequestOp::Discovery, e);
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.into()))?;
    client
        .publish_with_reply(
            Subject::from(format!("$SRV.STATS.{SERVICE_NAME}")),
            inbox,
            bytes::Bytes::new(),
        )
        .await
        .map_err(|e| failed(e.into()))?;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
        if let Ok(value) = serde_json::from_slice::<Value>(&message.payload) {
            found.push(value);
        }
    }
    found.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn answer(me: &ServiceIdentity, verb: &str, stats: &Stats) -> Value {
        serde_json::to_value(me.response(verb, stats, "n1")).unwrap()
    }

    #[test]
    fn stats_response_reports_live_counters() {
        let me = ServiceIdentity {
            id: "abc".into(),
            worker_id: "w1".into(),
            wallet: None,
            subject: "jobs.worker".into(),
            queue_group: Some("openclaw-workers".into()),
            started: std::time::UNIX_EPOCH,
            earnings: false,
            worker_key: None,
        };
        let stats = Stats::default();
        stats.received();
        stats.received();
        stats.record(crate::stats::Outcome::Completed);
        stats.record_error(ErrorCode::Timeout, "too slow");
        let v = answer(&me, "STATS", &stats);
        assert_eq!(v["type"], "io.nats.micro.v1.stats_response");
        assert_eq!(v["name"], "pier-worker");
        assert_eq!(v["metadata"]["workerId"], "w1");
        assert_eq!(v["metadata"]["progress"], "1.1");
        assert_eq!(v["endpoints"][0]["num_requests"], 2);
        assert_eq!(v["endpoints"][0]["num_errors"], 1);
        assert_eq!(
            v["endpoints"][0]["last_error"], "TIMEOUT",
            "a code, never the message"
        );
        stats.add_usage(&crate::handler::Usage {
            input: 7,
            output: 3,
            cost: 0.5,
            ..Default::default()
        });
        let v = answer(&me, "STATS", &stats);
        let data = &v["endpoints"][0]["data"];
        assert!(data.get("earned").is_none(), "earnings are opt-in");
        assert!(data.get("spent").is_none(), "so is spending");
        assert_eq!(
            (&data["tokensIn"], &data["tokensOut"]),
            (&json!(7), &json!(3))
        );
        let open = ServiceIdentity {
            earnings: true,
            worker_key: None,
            ..me.clone()
        };
        let data = &answer(&open, "STATS", &stats)["endpoints"][0]["data"];
        assert_eq!(data["earned"], 0.0);
        assert_eq!(data["spent"], 0.5);
        stats.set_last_error("-ERR 'Authorization Violation' from a server");
        assert_eq!(
            answer(&me, "STATS", &stats)["endpoints"][0]["last_error"],
            "ERROR"
        );
        assert_eq!(
            answer(&me, "PING", &stats)["type"],
            "io.nats.micro.v1.ping_response"
        );
        assert_eq!(
            answer(&me, "INFO", &stats)["endpoints"][0]["subject"],
            "jobs.worker"
        );
    }
}
