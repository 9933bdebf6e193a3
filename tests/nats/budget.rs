//! The daily budget (`maxDailySpend`, `maxDailyTokens`: BUDGET_EXHAUSTED) and the senders'
//! shares (`senderJobsPerMinute`, `unsignedJobsPerMinute`: RATE_LIMITED) in both delivery
//! modes, against a real nats-server: refused jobs never reach the handler.

use crate::common::free_port;
use crate::rig::{self, key_of, Mode, MODES};
use futures_util::future::BoxFuture;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput, Usage};
use pier_connector::signature::SigningKey;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Echoes the task (after sleeping `sleep:<ms>` when the task says so), reports `usage` for
/// each turn, and records each call's job id.
struct Metered {
    usage: Option<Usage>,
    calls: Arc<AtomicUsize>,
    ids: Arc<Mutex<Vec<String>>>,
}

impl Metered {
    fn new(usage: Option<Usage>) -> Metered {
        Metered {
            usage,
            calls: Arc::default(),
            ids: Arc::default(),
        }
    }
}

impl JobHandler for Metered {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.ids.lock().unwrap().push(job.id.clone());
        let usage = self.usage;
        Box::pin(async move {
            if let Some(ms) = job.task.strip_prefix("sleep:") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            }
            HandlerResult::answered(job.task).with_usage(usage)
        })
    }
}

type Rig = rig::Rig<Metered>;

/// A worker whose every turn reports `usage`.
async fn metered(mode: Mode, extra: Value, usage: Option<Usage>) -> Rig {
    Rig::start_with(mode, extra, Metered::new(usage)).await
}

impl Rig {
    /// Sends `payload`, signed by `key` when given, and returns its answer.
    async fn ask_value(&self, key: Option<&SigningKey>, payload: &Value) -> Value {
        self.ask_as(key, payload.to_string()).await
    }

    fn calls(&self) -> usize {
        self.handler.calls.load(Ordering::SeqCst)
    }
}

fn job(id: &str) -> Value {
    json!({ "id": id, "task": format!("task {id}") })
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

fn temp_ledger(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pier-budget-{name}-{}/ledger.jsonl", free_port()))
}

#[tokio::test]
async fn once_the_day_has_spent_its_budget_jobs_are_refused_without_reaching_the_model() {
    let turn = Usage {
        input: 300,
        output: 100,
        cache_read: 50,
        cache_write: 50,
        cost: 0.5,
    };
    for mode in MODES {
        for (cap, name) in [
            (json!({ "maxDailySpend": 1.0 }), "spend"),
            (json!({ "maxDailyTokens": 1000 }), "tokens"),
        ] {
            let ledger = temp_ledger(&format!("{name}-{mode:?}"));
            let mut extra = cap.clone();
            extra["ledgerFile"] = json!(ledger);
            let rig = metered(mode, extra, Some(turn)).await;
            // Each turn costs 0.5 and 500 tokens: two reach the cap (1.0, 1000 tokens).
            for id in ["b1", "b2"] {
                let reply = rig.ask_value(None, &job(id)).await;
                assert_eq!(
                    reply["result"],
                    format!("task {id}"),
                    "{mode:?} {name}: {reply}"
                );
            }
            let today = rig.worker.status().today.expect("today's use");
            assert_eq!((today.spent, today.tokens), (1.0, 1000), "{mode:?} {name}");
            for id in ["b3", "b4"] {
                let refused = rig.ask_value(None, &job(id)).await;
                assert_eq!(
                    code(&refused),
                    "BUDGET_EXHAUSTED",
                    "{mode:?} {name}: {refused}"
                );
                assert_eq!(refused["id"], id);
                let message = refused["error"]["message"].as_str().unwrap();
                assert!(message.contains("for the day"), "{message}");
            }
            assert_eq!(rig.calls(), 2, "{mode:?} {name}: the model was asked twice");
            // JetStream: each refused job was given back for another worker on its first four
            // deliveries (maxDeliver 5), answered on its last and terminated, not redelivered
            // again (ackWaitMs is 1 s).
            tokio::time::sleep(Duration::from_millis(1300)).await;
            let stats = rig.worker.status().stats;
            let passed_on = match mode {
                Mode::Core => 0,
                Mode::JetStream => 2 * 4,
            };
            assert_eq!(stats.passed_on, passed_on, "{mode:?} {name}");
            assert_eq!(stats.received, 4 + passed_on, "{mode:?} {name}");
            assert_eq!(
                stats.errors_by_code.get("BUDGET_EXHAUSTED"),
                Some(&(2 + passed_on))
            );
            assert_eq!(stats.rejected, 2 + passed_on, "{mode:?} {name}");
            assert_eq!(rig.calls(), 2, "{mode:?} {name}");
            rig.worker.stop().await;
            // Refusals are not written in the ledger: its day is the two turns.
            let days = pier_connector::ledger::read_days(&ledger, None).unwrap();
            assert_eq!(
                (days.len(), days[0].jobs, days[0].spent, days[0].tokens),
                (1, 2, 1.0, 1000),
                "{mode:?} {name}"
            );
            let _ = std::fs::remove_dir_all(ledger.parent().unwrap());
        }
    }
}

/// A ledger line of a job that ended at `time`, having cost `cost` and used `tokens` input
/// tokens.
fn ledger_line(time: &str, cost: f64, tokens: u64) -> String {
    json!({
        "time": time, "worker": "rust-1", "id": format!("old-{time}"), "price": null,
        "earned": 0.0, "outcome": "completed", "code": null, "tokensIn": tokens, "tokensOut": 0,
        "cacheReadTokens": 0, "cacheWriteTokens": 0, "cost": cost, "durationMs": 5
    })
    .to_string()
}

#[tokio::test]
async fn the_budget_is_read_back_from_the_ledger_when_the_worker_starts() {
    let now = SystemTime::now();
    let stamp = |t: SystemTime| {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        time::OffsetDateTime::from_unix_timestamp(secs as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let today = stamp(now);
    let yesterday = stamp(now - Duration::from_secs(86_400));
    let ledger = temp_ledger("restart");
    std::fs::create_dir_all(ledger.parent().unwrap()).unwrap();
    // Yesterday's spending is not today's; today's two lines cost 0.75 together.
    let lines = [
        ledger_line(&yesterday, 50.0, 90_000),
        ledger_line(&today, 0.5, 100),
        ledger_line(&today, 0.25, 100),
    ];
    std::fs::write(&ledger, lines.join("\n") + "\n").unwrap();
    let turn = Usage {
        input: 10,
        output: 10,
        cost: 0.25,
        ..Usage::default()
    };
    let rig = metered(
        Mode::Core,
        json!({ "maxDailySpend": 1.0, "ledgerFile": ledger }),
        Some(turn),
    )
    .await;
    let start = rig.worker.status().today.expect("today's use");
    assert_eq!(
        (
            start.spent,
            start.tokens,
            start.max_daily_spend,
            start.counted_from
        ),
        (0.75, 200, 1.0, "ledger")
    );
    assert_eq!(start.day, today[..10]);
    // 0.75 of 1.0: one more job runs (and costs 0.25), the next is refused.
    let ran = rig.ask_value(None, &job("r1")).await;
    assert_eq!(ran["result"], "task r1", "{ran}");
    let refused = rig.ask_value(None, &job("r2")).await;
    assert_eq!(code(&refused), "BUDGET_EXHAUSTED", "{refused}");
    assert_eq!(rig.calls(), 1);
    rig.worker.stop().await;

    // Started again on the same ledger: the day is spent, nothing runs.
    let again = metered(
        Mode::Core,
        json!({ "maxDailySpend": 1.0, "ledgerFile": ledger }),
        Some(turn),
    )
    .await;
    assert_eq!(again.worker.status().today.unwrap().spent, 1.0);
    let refused = again.ask_value(None, &job("r3")).await;
    assert_eq!(code(&refused), "BUDGET_EXHAUSTED", "{refused}");
    assert_eq!(again.calls(), 0, "the restart did not reset the day");
    again.worker.stop().await;

    // Without a ledger file, the day counts from the worker's start.
    let fresh = metered(Mode::Core, json!({ "maxDailySpend": 1.0 }), Some(turn)).await;
    let status = fresh.worker.status().today.unwrap();
    assert_eq!((status.spent, status.counted_from), (0.0, "start"));
    assert_eq!(fresh.ask_value(None, &job("f1")).await["result"], "task f1");
    fresh.worker.stop().await;
    let _ = std::fs::remove_dir_all(ledger.parent().unwrap());
}

#[tokio::test]
async fn each_sender_runs_its_share_per_minute_and_the_rest_is_rate_limited() {
    let (alice, bob) = (key_of(11), key_of(12));
    for mode in MODES {
        let rig = metered(
            mode,
            json!({ "senderJobsPerMinute": 2, "unsignedJobsPerMinute": 3, "minJobPrice": 1 }),
            None,
        )
        .await;
        let paid = |id: &str, sender: &str| json!({ "id": id, "task": "t", "meta": { "price": 1, "sender": sender } });
        // A job refused for another reason (no price) does not use alice's share.
        let unpaid = rig
            .ask_value(
                Some(&alice),
                &json!({ "id": "a0", "task": "t", "meta": { "sender": "alice" } }),
            )
            .await;
        assert_eq!(code(&unpaid), "PRICE_TOO_LOW", "{mode:?}");
        let mut outcomes = Vec::new();
        // Interleaved: alice 4, bob 3, and 5 unsigned jobs under two self-declared names.
        let sends: Vec<(&str, Option<&SigningKey>, &str)> = vec![
            ("a1", Some(&alice), "alice"),
            ("b1", Some(&bob), "bob"),
            ("u1", None, "carol"),
            ("a2", Some(&alice), "alice"),
            ("u2", None, "dave"),
            ("a3", Some(&alice), "alice"),
            ("b2", Some(&bob), "bob"),
            ("u3", None, "carol"),
            ("u4", None, "dave"),
            ("b3", Some(&bob), "bob"),
            ("a4", Some(&alice), "alice"),
            ("u5", None, "carol"),
        ];
        for (id, key, name) in sends {
            let reply = rig.ask_value(key, &paid(id, name)).await;
            let got = if reply["ok"] == true {
                "ran".to_string()
            } else {
                code(&reply).to_string()
            };
            if got == "RATE_LIMITED" {
                let message = reply["error"]["message"].as_str().unwrap();
                let share = if key.is_some() {
                    "(2 jobs a minute)"
                } else {
                    "(3 jobs a minute"
                };
                assert!(message.contains(share), "{mode:?} {id}: {message}");
            }
            outcomes.push(format!("{id} {got}"));
        }
        let wanted = [
            "a1 ran",
            "b1 ran",
            "u1 ran",
            "a2 ran",
            "u2 ran",
            "a3 RATE_LIMITED",
            "b2 ran",
            "u3 ran",
            "u4 RATE_LIMITED",
            "b3 RATE_LIMITED",
            "a4 RATE_LIMITED",
            "u5 RATE_LIMITED",
        ];
        assert_eq!(outcomes, wanted, "{mode:?}");
        let ran: Vec<String> = rig.handler.ids.lock().unwrap().clone();
        assert_eq!(ran, ["a1", "b1", "u1", "a2", "u2", "b2", "u3"], "{mode:?}");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let stats = rig.worker.status().stats;
        // JetStream: each refused job was given back for another worker on its first four
        // deliveries (maxDeliver 5) and answered on its last; nothing redelivered after.
        let passed_on = match mode {
            Mode::Core => 0,
            Mode::JetStream => 5 * 4,
        };
        assert_eq!(stats.passed_on, passed_on, "{mode:?}");
        assert_eq!(
            stats.received,
            13 + passed_on,
            "{mode:?}: nothing redelivered"
        );
        assert_eq!(
            stats.errors_by_code.get("RATE_LIMITED"),
            Some(&(5 + passed_on)),
            "{mode:?}"
        );
        assert_eq!(rig.calls(), 7, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_job_refused_for_a_full_worker_does_not_use_the_share() {
    // One slot, a share of 2 unsigned jobs a minute: while the first runs, a second is refused
    // OVERLOADED; that refusal used no share, so a third still runs once the slot is free.
    let rig = metered(
        Mode::Core,
        json!({ "maxConcurrentJobs": 1, "unsignedJobsPerMinute": 2 }),
        None,
    )
    .await;
    let first = json!({ "id": "o1", "task": "sleep:800" });
    let long = rig.ask_value(None, &first);
    let busy = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rig.ask_value(None, &job("o2")).await
    };
    let (long, busy) = tokio::join!(long, busy);
    assert_eq!(long["result"], "sleep:800");
    assert_eq!(code(&busy), "OVERLOADED", "{busy}");
    let third = rig.ask_value(None, &job("o3")).await;
    assert_eq!(third["result"], "task o3", "{third}");
    let fourth = rig.ask_value(None, &job("o4")).await;
    assert_eq!(code(&fourth), "RATE_LIMITED", "{fourth}");
    assert_eq!(rig.calls(), 2);
    rig.worker.stop().await;
}
