//! The stores' contracts — subscriptions, resume waits, the event archive, flow cells,
//! connector instances —
//! each written once over its port (`Arc<dyn Trait>`) and run against both adapters: the
//! DynamoDB one through the real SDK on DynamoDB Local, and the in-memory one the unit
//! tests rely on. What only DynamoDB has (the due index, the back-fill, concurrent
//! decisions through the SDK) is tested on DynamoDB alone.

use custos_trigger::aws::DynamoSubscriptionStore;
use custos_trigger::event::SourceType;
use custos_trigger::ids::{SubscriptionId, WorkspaceId};
use custos_trigger::resume::{ResumeKey, ResumeStore, ResumeWait};
use custos_trigger::subscription::{
    ListQuery, Route, Subscription, SubscriptionReader, SubscriptionState, SubscriptionStore,
};
use std::sync::Arc;

use custos_trigger::archive::EventArchive;
use custos_trigger::flow::{CellWrite, FlowStore};
use custos_trigger::store::StoreError;
use custos_trigger::webhook::{ConnectorInstance, ConnectorStore};
use integration_tests::{dynamodb, tables};
use serde_json::json;

/// One contract test per adapter: `$port` is the trait, `$dynamo` builds the DynamoDB
/// adapter from a client and the test tables, `$memory` the in-memory one.
macro_rules! contract {
    ($module:ident, $dynamo:expr, $memory:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            $(mod $name {
                #[tokio::test]
                async fn on_dynamodb() {
                    let client = integration_tests::dynamodb();
                    let t = integration_tests::tables(&client).await;
                    super::super::$name(std::sync::Arc::new(($dynamo)(client, t))).await
                }
                #[tokio::test]
                async fn in_memory() {
                    super::super::$name(std::sync::Arc::new($memory)).await
                }
            })*
        }
    };
}

contract!(
    subscriptions,
    |c, t: integration_tests::Tables| custos_trigger::aws::DynamoSubscriptionStore::new(
        c,
        t.subscriptions
    ),
    custos_trigger::memory::MemorySubscriptionStore::default(),
    [
        subscriptions_round_trip_and_list_by_route_within_a_workspace,
        listing_pages_through_large_workspaces,
        filtered_listings_read_the_state_and_source_indexes_in_id_order_and_follow_changes,
    ]
);
contract!(
    resume_waits,
    |c, t: integration_tests::Tables| custos_trigger::aws::DynamoResumeStore::new(c, t.resumes),
    custos_trigger::memory::MemoryResumeStore::default(),
    [resume_wait_delete_is_one_shot]
);
contract!(
    archive,
    |c, t: integration_tests::Tables| custos_trigger::aws::DynamoEventArchive::new(c, t.archive),
    custos_trigger::memory::MemoryArchive::default(),
    [the_archive_lists_a_workspace_newest_first_filtered_and_paged]
);
contract!(
    flow_cells,
    |c, t: integration_tests::Tables| custos_trigger::aws::DynamoFlowStore::new(c, t.flow),
    custos_trigger::memory::MemoryFlowStore::default(),
    [flow_cells_are_written_only_over_the_version_read]
);

contract!(
    connectors,
    |c, t: integration_tests::Tables| custos_trigger::aws::DynamoConnectorStore::new(
        c,
        t.connectors
    ),
    custos_trigger::memory::MemoryConnectorStore::default(),
    [connectors_are_listed_per_workspace_and_changed_only_over_the_version_read]
);

fn connector(id: &str, ws: &str, version: u64) -> ConnectorInstance {
    serde_json::from_value(json!({
        "connectorInstanceId": id, "workspaceId": ws, "scheme": "github",
        "secretRefs": ["secretsmanager:hook"], "kindHeader": "x-github-event",
        "kindPrefix": "github", "version": version
    }))
    .unwrap()
}

/// Round trip; a workspace's listing in id order and nobody else's; a change or delete
/// over a stale version is a conflict and leaves the stored one as it was, so a PATCH
/// racing a DELETE never brings a connector back; deleting what is gone is no error.
async fn connectors_are_listed_per_workspace_and_changed_only_over_the_version_read(
    store: Arc<dyn ConnectorStore>,
) {
    let (b, a, other) = (
        connector("hook-b", "ws1", 1),
        connector("hook-a", "ws1", 1),
        connector("hook-c", "ws2", 1),
    );
    for c in [&b, &a, &other] {
        store.put(c).await.unwrap();
    }
    assert_eq!(store.get("hook-a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("hook-zz").await.unwrap(), None);
    let ws1 = WorkspaceId::new("ws1").unwrap();
    assert_eq!(store.list(&ws1).await.unwrap(), [a.clone(), b.clone()]);

    let mut rotated = a.clone();
    rotated.secret_refs.push("secretsmanager:hook-2".into());
    rotated.version = 2;
    store.replace(&rotated, 1).await.unwrap();
    assert!(matches!(
        store.replace(&a, 1).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete("hook-a", Some(1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get("hook-a").await.unwrap(), Some(rotated));
    store.delete("hook-a", Some(2)).await.unwrap();
    assert_eq!(store.get("hook-a").await.unwrap(), None);
    assert!(
        matches!(store.replace(&a, 2).await, Err(StoreError::Conflict(_))),
        "a change after the delete does not bring it back"
    );
    assert_eq!(store.get("hook-a").await.unwrap(), None);
    store.delete("hook-a", Some(2)).await.unwrap();
    store.delete("hook-a", None).await.unwrap();
    assert_eq!(store.list(&ws1).await.unwrap(), [b]);
}

fn sub(ws: &str, id: &str, source: &str, connector: Option<&str>) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": ws, "subscriptionId": id, "sourceType": source, "workflowId": "wf",
        "targetWorkflowVersionId": "wv", "selector": "event.data.x == 1",
        "inputMapping": {"a": "${{ event.data.x }}", "n": null}, "state": "active",
        "connectorInstanceId": connector,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-02T00:00:00Z"
    }))
    .unwrap()
}

fn ids(subs: &[std::sync::Arc<Subscription>]) -> Vec<String> {
    let mut ids: Vec<String> = subs.iter().map(|s| s.subscription_id.to_string()).collect();
    ids.sort();
    ids
}

async fn subscriptions_round_trip_and_list_by_route_within_a_workspace(
    store: Arc<dyn SubscriptionStore>,
) {
    let ws1 = WorkspaceId::new("ws1").unwrap();
    let original = sub("ws1", "a", "internal", None);
    for s in [
        original.clone(),
        sub("ws1", "b", "internal", None),
        sub("ws1", "c", "manual", None),
        sub("ws1", "d", "webhook", Some("ci1")),
        sub("ws2", "e", "internal", None),
    ] {
        store.put(&s).await.unwrap();
    }
    let mut paused = sub("ws1", "f", "internal", None);
    paused.state = SubscriptionState::Paused;
    store.put(&paused).await.unwrap();

    let back = store
        .get(&ws1, &SubscriptionId::new("a").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, original);
    assert!(store
        .get(
            &WorkspaceId::new("ws2").unwrap(),
            &SubscriptionId::new("a").unwrap()
        )
        .await
        .unwrap()
        .is_none());

    let internal = store
        .list_matchable(&ws1, &Route::SourceType(SourceType::Internal))
        .await
        .unwrap();
    assert_eq!(ids(&internal), ["a", "b"]);
    let connector = store
        .list_matchable(&ws1, &Route::Connector("ci1".into()))
        .await
        .unwrap();
    assert_eq!(ids(&connector), ["d"]);

    // Pausing takes a subscription out of the route index; reactivating puts it back.
    paused.state = SubscriptionState::Active;
    store.put(&paused).await.unwrap();
    let mut b = sub("ws1", "b", "internal", None);
    b.state = SubscriptionState::Expired;
    store.put(&b).await.unwrap();
    let internal = store
        .list_matchable(&ws1, &Route::SourceType(SourceType::Internal))
        .await
        .unwrap();
    assert_eq!(ids(&internal), ["a", "f"]);
}

async fn listing_pages_through_large_workspaces(store: Arc<dyn SubscriptionStore>) {
    let big = "x".repeat(20_000);
    for i in 0..70 {
        let mut s = sub("ws1", &format!("s{i:03}"), "internal", None);
        s.input_mapping = serde_json::Map::from_iter([("padding".to_owned(), json!(big))]).into();
        store.put(&s).await.unwrap();
    }
    let all = store
        .list_matchable(
            &WorkspaceId::new("ws1").unwrap(),
            &Route::SourceType(SourceType::Internal),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 70, "more than one 1 MB query page");
}

/// Every page of a listing, following its cursors.
async fn list_all(
    store: &Arc<dyn SubscriptionStore>,
    ws: &str,
    state: Option<SubscriptionState>,
    source_type: Option<SourceType>,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let query = ListQuery {
            state,
            source_type,
            limit: 4,
            cursor,
        };
        let page = store
            .list(&WorkspaceId::new(ws).unwrap(), &query)
            .await
            .unwrap();
        assert!(page.items.len() <= 4);
        found.extend(page.items.iter().map(|s| s.subscription_id.to_string()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            return found;
        }
    }
}

async fn filtered_listings_read_the_state_and_source_indexes_in_id_order_and_follow_changes(
    store: Arc<dyn SubscriptionStore>,
) {
    let sources = ["internal", "manual", "webhook"];
    for ws in ["ws1", "ws2"] {
        for i in 0..24 {
            let mut s = sub(ws, &format!("s{i:02}"), sources[i % 3], None);
            if i % 4 == 0 {
                s.state = SubscriptionState::Paused;
            }
            store.put(&s).await.unwrap();
        }
    }
    let expected = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..24)
            .filter(|i| keep(*i))
            .map(|i| format!("s{i:02}"))
            .collect()
    };
    let paused = list_all(&store, "ws1", Some(SubscriptionState::Paused), None).await;
    assert_eq!(
        paused,
        expected(&|i| i % 4 == 0),
        "ids in order, one workspace"
    );
    let manual = list_all(&store, "ws1", None, Some(SourceType::Manual)).await;
    assert_eq!(manual, expected(&|i| i % 3 == 1));
    let active_webhooks = list_all(
        &store,
        "ws1",
        Some(SubscriptionState::Active),
        Some(SourceType::Webhook),
    )
    .await;
    assert_eq!(active_webhooks, expected(&|i| i % 3 == 2 && i % 4 != 0));
    assert_eq!(
        list_all(&store, "ws1", None, None).await,
        expected(&|_| true)
    );

    // A state change moves the subscription between the state partitions.
    let mut resumed = sub("ws1", "s00", "internal", None);
    resumed.state = SubscriptionState::Active;
    store.put(&resumed).await.unwrap();
    let paused = list_all(&store, "ws1", Some(SubscriptionState::Paused), None).await;
    assert_eq!(paused, expected(&|i| i % 4 == 0 && i != 0));
}

async fn resume_wait_delete_is_one_shot(store: Arc<dyn ResumeStore>) {
    let key = ResumeKey {
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "step.succeeded".into(),
    };
    let wait = ResumeWait {
        resume_id: key.resume_id(),
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "step.succeeded".into(),
        selector: Some("event.data.ok == true".into()),
        workspace_id: Some(WorkspaceId::new("ws1").unwrap()),
        expires_at: 1_900_000_000,
        generation: "g1".into(),
        taken: None,
        consumed_by: None,
    };
    store.put(&wait).await.unwrap();
    assert_eq!(
        store.get(&wait.resume_id).await.unwrap(),
        Some(wait.clone())
    );
    let (first, second) = tokio::join!(
        store.delete(&wait.resume_id, None),
        store.delete(&wait.resume_id, None)
    );
    let deleted = [first.unwrap(), second.unwrap()];
    assert_eq!(
        deleted.iter().filter(|d| **d).count(),
        1,
        "exactly one delete wins"
    );
    assert!(store.get(&wait.resume_id).await.unwrap().is_none());
    assert!(!store.delete(&wait.resume_id, None).await.unwrap());
}

/// A lifecycle event of `run` (kind `workflow.run.succeeded`, source `internal`).
fn lifecycle_event(run: &str) -> custos_trigger::event::NormalizedEvent {
    custos_trigger::stage::ingest::lifecycle_envelope(&json!({
        "workflowVersionId": "wv", "runId": run, "workspace": "ws1",
        "status": "succeeded", "occurredAt": "2026-11-27T10:00:00Z"
    }))
    .unwrap()
    .event
}

async fn the_archive_lists_a_workspace_newest_first_filtered_and_paged(
    archive: Arc<dyn EventArchive>,
) {
    use custos_trigger::archive::EventQuery;
    let (ws1, ws2) = (
        WorkspaceId::new("ws1").unwrap(),
        WorkspaceId::new("ws2").unwrap(),
    );
    let at = 1_800_000_000_000i64;
    for i in 0..5 {
        let event = lifecycle_event(&format!("run-{i}"));
        assert!(archive
            .put_new(&ws1, &event, at + i, i64::MAX / 2)
            .await
            .unwrap());
        assert!(
            !archive
                .put_new(&ws1, &event, at + 99, i64::MAX / 2)
                .await
                .unwrap(),
            "written once"
        );
    }
    archive
        .put_new(&ws2, &lifecycle_event("other"), at, i64::MAX / 2)
        .await
        .unwrap();
    let runs = |page: &custos_trigger::archive::EventPage| {
        page.items
            .iter()
            .map(|a| {
                a.event.as_ref().unwrap().data["runId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let query = |limit| EventQuery {
        limit,
        ..Default::default()
    };
    let first = archive.list(&ws1, &query(3)).await.unwrap();
    assert_eq!(runs(&first), ["run-4", "run-3", "run-2"]);
    let rest = EventQuery {
        cursor: first.next_cursor.clone(),
        ..query(3)
    };
    let second = archive.list(&ws1, &rest).await.unwrap();
    assert_eq!(runs(&second), ["run-1", "run-0"]);
    assert_eq!(second.next_cursor, None);
    let window = EventQuery {
        since_ms: Some(at + 1),
        until_ms: Some(at + 3),
        ..query(10)
    };
    assert_eq!(
        runs(&archive.list(&ws1, &window).await.unwrap()),
        ["run-2", "run-1"]
    );
    for (since, until) in [(at + 2, at + 2), (at + 3, at + 1)] {
        let empty = EventQuery {
            since_ms: Some(since),
            until_ms: Some(until),
            ..query(10)
        };
        let page = archive.list(&ws1, &empty).await.unwrap();
        assert!(page.items.is_empty(), "an empty window is no error");
    }
    let kind = first.items[0]
        .event
        .as_ref()
        .unwrap()
        .kind
        .as_str()
        .to_owned();
    let by_kind = EventQuery {
        kind: Some(kind),
        source_type: Some(SourceType::Internal),
        ..query(10)
    };
    assert_eq!(archive.list(&ws1, &by_kind).await.unwrap().items.len(), 5);
    let other_kind = EventQuery {
        kind: Some("cron.tick".into()),
        ..query(10)
    };
    assert!(archive
        .list(&ws1, &other_kind)
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        runs(&archive.list(&ws2, &query(10)).await.unwrap()),
        ["other"]
    );
}

#[tokio::test]
async fn the_due_index_serves_active_schedules_and_moves_on_exactly_once() {
    use custos_trigger::schedule::shard_of;
    use custos_trigger::scheduled::ScheduleStore;
    let client = dynamodb();
    let t = tables(&client).await;
    let store = DynamoSubscriptionStore::new(client, t.subscriptions);
    let scheduled = |id: &str, state: &str| -> Subscription {
        serde_json::from_value(json!({
            "workspaceId": "ws1", "subscriptionId": id, "sourceType": "scheduled",
            "workflowId": "wf", "state": state, "schedule": {"cron": "* * * * *"},
            "createdAt": "2026-11-27T10:00:30Z", "updatedAt": "2026-11-27T10:00:30Z"
        }))
        .unwrap()
    };
    let ticking = scheduled("sched-a", "active");
    store.put(&ticking).await.unwrap();
    store.put(&scheduled("sched-p", "paused")).await.unwrap();
    let first_fire = 1_795_773_660_000; // 2026-11-27T10:01:00Z
    let shard = shard_of("sched-a");
    assert!(store
        .due(shard, first_fire - 1, 10)
        .await
        .unwrap()
        .is_empty());
    let due = store.due(shard, first_fire + 5_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].subscription, ticking);
    assert_eq!(due[0].next_fire_ms, first_fire);
    let paused_shard = shard_of("sched-p");
    let paused: Vec<_> = store
        .due(paused_shard, first_fire + 5_000, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.subscription.subscription_id.as_str() == "sched-p")
        .collect();
    assert!(paused.is_empty(), "a paused schedule is not in the index");

    let next = first_fire + 60_000;
    let (one, two) = tokio::join!(
        store.advance(&ticking, first_fire, next),
        store.advance(&ticking, first_fire, next)
    );
    assert_eq!(
        [one.unwrap(), two.unwrap()].iter().filter(|a| **a).count(),
        1,
        "two runs, one moves it on"
    );
    assert!(store
        .due(shard, first_fire + 5_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.due(shard, next, 10).await.unwrap().len(), 1);
    assert!(store.advance(&ticking, next, i64::MAX).await.unwrap());
    assert!(
        store.due(shard, i64::MAX / 2, 10).await.unwrap().is_empty(),
        "never again"
    );
}

/// Items written before the listing indexes existed lack `stateKey`/`sourceKey`, so a
/// filtered listing misses them; the upgrade step gives them their keys, once.
#[tokio::test]
async fn the_backfill_gives_items_of_an_older_release_their_index_keys() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = dynamodb();
    let t = tables(&client).await;
    let store = DynamoSubscriptionStore::new(client.clone(), t.subscriptions.clone());
    let ws = WorkspaceId::new("ws-old").unwrap();
    let mut old = sub("ws-old", "old", "manual", None);
    old.state = SubscriptionState::Paused;
    store.put(&old).await.unwrap();
    store
        .put(&sub("ws-old", "current", "internal", None))
        .await
        .unwrap();
    // As an older release wrote it: no listing keys.
    client
        .update_item()
        .table_name(&t.subscriptions)
        .key("workspaceId", AttributeValue::S("ws-old".into()))
        .key("subscriptionId", AttributeValue::S("old".into()))
        .update_expression("REMOVE stateKey, sourceKey")
        .send()
        .await
        .unwrap();
    let paused = ListQuery {
        state: Some(SubscriptionState::Paused),
        source_type: None,
        limit: 10,
        cursor: None,
    };
    let manual = ListQuery {
        state: None,
        source_type: Some(SourceType::Manual),
        limit: 10,
        cursor: None,
    };
    assert!(store.list(&ws, &paused).await.unwrap().items.is_empty());
    assert!(store.list(&ws, &manual).await.unwrap().items.is_empty());

    let report = store.backfill_index_keys().await.unwrap();
    assert_eq!((report.rewritten, report.changed_meanwhile), (1, 0));
    assert_eq!(store.list(&ws, &paused).await.unwrap().items, [old.clone()]);
    assert_eq!(store.list(&ws, &manual).await.unwrap().items, [old.clone()]);
    let again = store.backfill_index_keys().await.unwrap();
    assert_eq!(again.rewritten, 0, "only items without keys are rewritten");
    let back = store
        .get(&ws, &SubscriptionId::new("old").unwrap())
        .await
        .unwrap();
    assert_eq!(back, Some(old), "the document is unchanged");
}

/// Flow cells: every write is a compare-and-set on the version read.
async fn flow_cells_are_written_only_over_the_version_read(store: Arc<dyn FlowStore>) {
    use custos_trigger::flow::FlowCell;
    let cell = |value_ms: i64, owner: Option<&str>, version: u64| FlowCell {
        value_ms,
        owner: owner.map(str::to_owned),
        since_ms: value_ms / 2,
        holders: [("e9".to_owned(), value_ms * 3)].into(),
        waiting: vec!["e7".to_owned(), "e8".to_owned()],
        link: Some("ws#s#concurrency#-".to_owned()),
        version,
    };
    assert_eq!(store.load("ws#s#throttle#-").await.unwrap(), None);
    assert!(store
        .swap("ws#s#throttle#-", &cell(10, None, 1), None, 100)
        .await
        .unwrap());
    assert!(
        !store
            .swap("ws#s#throttle#-", &cell(20, None, 1), None, 100)
            .await
            .unwrap(),
        "a second first write loses"
    );
    assert!(store
        .swap("ws#s#throttle#-", &cell(20, Some("e1"), 2), Some(1), 100)
        .await
        .unwrap());
    assert!(
        !store
            .swap("ws#s#throttle#-", &cell(30, None, 2), Some(1), 100)
            .await
            .unwrap(),
        "a stale version loses"
    );
    assert_eq!(
        store.load("ws#s#throttle#-").await.unwrap(),
        Some(cell(20, Some("e1"), 2))
    );

    // Two cells together or not at all (a batch and the membership of its new event).
    let write = |cell_id, cell, expected| CellWrite {
        cell_id,
        cell,
        expected,
        expires_at: 100,
    };
    let (batch, member) = (cell(40, Some("e1"), 3), cell(0, Some("e1"), 1));
    let pair = |expected_batch, member_id| {
        store.swap_pair(
            write("ws#s#throttle#-", &batch, expected_batch),
            write(member_id, &member, None),
        )
    };
    assert!(
        !pair(Some(1), "ws#s#batch#-#in#e2").await.unwrap(),
        "a stale batch version: neither is written"
    );
    assert_eq!(store.load("ws#s#batch#-#in#e2").await.unwrap(), None);
    assert!(pair(Some(2), "ws#s#batch#-#in#e2").await.unwrap());
    assert_eq!(
        store.load("ws#s#batch#-#in#e2").await.unwrap(),
        Some(member.clone())
    );
    let batch = cell(50, Some("e1"), 4);
    assert!(
        !store
            .swap_pair(
                write("ws#s#throttle#-", &batch, Some(3)),
                write("ws#s#batch#-#in#e2", &member, None),
            )
            .await
            .unwrap(),
        "a membership already there: neither is written"
    );
    assert_eq!(
        store.load("ws#s#throttle#-").await.unwrap(),
        Some(cell(40, Some("e1"), 3))
    );
}

/// Forty concurrent decisions on one rate-limited bucket (five a minute) through the
/// real SDK: exactly five run, whoever interleaves how.
#[tokio::test]
async fn concurrent_decisions_on_dynamodb_share_one_rate_limit() {
    use custos_trigger::aws::DynamoFlowStore;
    use custos_trigger::flow::{FlowGate, FlowSpec, Subject, Verdict};
    use custos_trigger::ids::EventId;
    use custos_trigger::selector::{EventScope, SelectorCache};
    let client = dynamodb();
    let t = tables(&client).await;
    let gate = std::sync::Arc::new(FlowGate::new(std::sync::Arc::new(DynamoFlowStore::new(
        client, t.flow,
    ))));
    let flow = std::sync::Arc::new(
        FlowSpec::parse(&json!({"rateLimit": {"limit": 5, "period": "PT1M"}})).unwrap(),
    );
    let mut decisions = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (gate, flow) = (gate.clone(), flow.clone());
        decisions.spawn(async move {
            let (workspace, subscription) = (
                WorkspaceId::new("ws").unwrap(),
                SubscriptionId::new("sub").unwrap(),
            );
            let event_id = EventId::new(format!("e{i}")).unwrap();
            let scope = EventScope::from_json(json!({"kind": "k", "data": {}}), None);
            let subject = Subject {
                workspace: &workspace,
                subscription: &subscription,
                event_id: &event_id,
                scope: &scope,
                now_ms: 1_800_000_000_000,
            };
            gate.decide(&flow, &subject, &SelectorCache::default())
                .await
        });
    }
    let mut runs = 0;
    while let Some(decided) = decisions.join_next().await {
        if matches!(decided.unwrap(), Ok(Verdict::Run { .. })) {
            runs += 1;
        }
    }
    assert_eq!(runs, 5);
}
