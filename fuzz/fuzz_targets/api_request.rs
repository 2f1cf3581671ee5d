//! API requests from any caller: a method line, a path line, then the body, routed
//! through the whole API on in-memory ports (development shim as the caller). Every
//! answer must be a response; the panic guard must never be needed.
#![no_main]

use std::sync::{Arc, LazyLock};

use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use custos_trigger::api::Api;
use custos_trigger::config::Settings;
use custos_trigger::memory::*;
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

fn api() -> Api {
    let clock = Arc::new(custos_trigger::clock::ManualClock::at_ms(1_800_000_000_000));
    let audit = Arc::new(RecordingAuditSink::default());
    let queue = Arc::new(MemoryQueue::default());
    let archive = Arc::new(MemoryArchive::default());
    let settings = Arc::new(
        Settings::from_lookup(|n| (n == "ENVIRONMENT").then(|| "development".to_owned()))
            .expect("settings"),
    );
    let ledger = Arc::new(MemoryLedger::default());
    Api {
        subscriptions: Arc::new(MemorySubscriptionStore::default()),
        resumes: Arc::new(MemoryResumeStore::default()),
        ledger: ledger.clone(),
        dead_letters: ledger,
        archive: archive.clone(),
        parked: Arc::new(MemoryParkStore::default()),
        normalized_queue: queue.clone(),
        dispatch_queue: queue.clone(),
        audit: audit.clone(),
        clock: clock.clone(),
        settings,
        cache: Default::default(),
        webhooks: custos_trigger::webhook::WebhookIntake {
            connectors: Arc::new(MemoryConnectorStore::default()),
            secrets: Arc::new(custos_trigger::webhook::secrets::StaticSecrets::new([])),
            queue,
            archive,
            retention: custos_trigger::archive::Retention { ttl_secs: 60 },
            audit,
            clock,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let method = lines.next().unwrap_or("GET").trim();
    let path = lines.next().unwrap_or("/").trim();
    let body = lines.next().unwrap_or_default();
    let event = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json",
                    "x-custos-callctx": "{\"workspace_id\":\"ws1\",\"permissions\":[\"trigger:subscriptions:read\",\"trigger:subscriptions:write\",\"trigger:subscriptions:delete\",\"trigger:subscriptions:fire\",\"trigger:connectors:read\",\"trigger:connectors:write\"]}"},
        "requestContext": {"routeKey": "$default", "accountId": "1", "stage": "$default",
                           "requestId": "r", "apiId": "a", "domainName": "d", "domainPrefix": "d",
                           "time": "t", "timeEpoch": 0,
                           "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "fuzz"}},
        "body": body, "isBase64Encoded": false
    });
    let Ok(request) = serde_json::from_value::<ApiGatewayV2httpRequest>(event) else {
        return;
    };
    let response = RUNTIME.block_on(api().handle(request));
    assert_ne!(response.status_code, 500, "a panic reached the guard");
});
