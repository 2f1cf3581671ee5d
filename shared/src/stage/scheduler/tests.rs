//! The scheduler stage on in-memory ports with explicit instants (time travel): one tick
//! per instant, duplicates and crashes re-emit the same tick id, pausing stops ticks.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::archive::Retention;
use crate::audit::NoopAuditSink;
use crate::clock::ManualClock;
use crate::event::QueuedEvent;
use crate::memory::{MemoryArchive, MemoryQueue, MemorySubscriptionStore};
use crate::scheduled::ScheduleStore;
use crate::subscription::{Subscription, SubscriptionState, SubscriptionStore};

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

struct Harness {
    subscriptions: Arc<MemorySubscriptionStore>,
    queue: Arc<MemoryQueue>,
    stage: SchedulerStage,
}

fn harness() -> Harness {
    let subscriptions = Arc::new(MemorySubscriptionStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let stage = SchedulerStage {
        schedules: subscriptions.clone(),
        ingest: IngestStage {
            normalized_queue: queue.clone(),
            archive: Arc::new(MemoryArchive::default()),
            audit: Arc::new(NoopAuditSink),
            clock: Arc::new(ManualClock::at_ms(0)),
            retention: Retention { ttl_secs: 60 },
        },
    };
    Harness {
        subscriptions,
        queue,
        stage,
    }
}

fn scheduled(id: &str, schedule: serde_json::Value, written: &str) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": "ws1", "subscriptionId": id, "sourceType": "scheduled",
        "workflowId": "wf", "targetWorkflowVersionId": "wv", "state": "active",
        "schedule": schedule, "createdAt": written, "updatedAt": written
    }))
    .unwrap()
}

fn ticks(queue: &MemoryQueue) -> Vec<(String, String)> {
    queue
        .take_sent()
        .iter()
        .map(|body| serde_json::from_str::<QueuedEvent>(body).unwrap())
        .map(|q| {
            let scheduled = q.event.data["scheduledTime"].as_str().unwrap().to_owned();
            (q.event.event_id.to_string(), scheduled)
        })
        .collect()
}

#[tokio::test]
async fn each_minute_fires_once_and_a_repeated_run_for_the_same_minute_fires_nothing_new() {
    let h = harness();
    h.subscriptions
        .put(&scheduled(
            "s1",
            json!({"cron": "* * * * *"}),
            "2026-11-27T10:00:30Z",
        ))
        .await
        .unwrap();
    let report = h.stage.run(at("2026-11-27T10:00:59Z")).await.unwrap();
    assert_eq!(report.ticks, 0, "not due before 10:01");
    let first = h.stage.run(at("2026-11-27T10:01:02Z")).await.unwrap();
    assert_eq!((first.due, first.ticks, first.advanced), (1, 1, 1));
    let minute_one = ticks(&h.queue);
    assert_eq!(minute_one[0].1, "2026-11-27T10:01:00.000Z");
    let again = h.stage.run(at("2026-11-27T10:01:40Z")).await.unwrap();
    assert_eq!(again.ticks, 0, "the same minute again");
    h.stage.run(at("2026-11-27T10:02:01Z")).await.unwrap();
    let minute_two = ticks(&h.queue);
    assert_eq!(minute_two.len(), 1);
    assert_eq!(minute_two[0].1, "2026-11-27T10:02:00.000Z");
    assert_ne!(minute_one[0].0, minute_two[0].0);
}

#[tokio::test]
async fn a_run_that_crashed_before_moving_on_re_emits_the_same_tick() {
    let h = harness();
    let subscription = scheduled("s1", json!({"rate": "5 minutes"}), "2026-11-27T10:00:30Z");
    h.subscriptions.put(&subscription).await.unwrap();
    let now = at("2026-11-27T10:05:10Z");
    h.stage.run(now).await.unwrap();
    let emitted = ticks(&h.queue);
    // The crash: the instant was never moved on (put it back as it was).
    let due = h
        .subscriptions
        .due(crate::schedule::shard_of("s1"), now, 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "moved on");
    h.subscriptions.put(&subscription).await.unwrap();
    h.stage.run(now).await.unwrap();
    assert_eq!(
        ticks(&h.queue),
        emitted,
        "same id, same instant: the ledger dedups it"
    );
}

#[tokio::test]
async fn catch_up_latest_fires_one_tick_for_missed_minutes_and_paused_schedules_fire_none() {
    let h = harness();
    h.subscriptions
        .put(&scheduled(
            "late",
            json!({"cron": "* * * * *"}),
            "2026-11-27T10:00:30Z",
        ))
        .await
        .unwrap();
    h.subscriptions
        .put(&scheduled(
            "all",
            json!({"cron": "* * * * *", "catchUp": "all"}),
            "2026-11-27T10:00:30Z",
        ))
        .await
        .unwrap();
    let mut paused = scheduled(
        "paused",
        json!({"cron": "* * * * *"}),
        "2026-11-27T10:00:30Z",
    );
    paused.state = SubscriptionState::Paused;
    h.subscriptions.put(&paused).await.unwrap();
    let report = h.stage.run(at("2026-11-27T10:05:30Z")).await.unwrap();
    assert_eq!(report.due, 2, "the paused schedule is not in the due index");
    let mut scheduled_times: Vec<String> = ticks(&h.queue).into_iter().map(|t| t.1).collect();
    scheduled_times.sort();
    assert_eq!(
        scheduled_times,
        [
            "2026-11-27T10:01:00.000Z",
            "2026-11-27T10:02:00.000Z",
            "2026-11-27T10:03:00.000Z",
            "2026-11-27T10:04:00.000Z",
            "2026-11-27T10:05:00.000Z",
            "2026-11-27T10:05:00.000Z", // `latest`: only the most recent
        ]
    );
}
