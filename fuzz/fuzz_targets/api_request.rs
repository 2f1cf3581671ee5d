//! API requests from any caller: a method line, a path line, then the body, routed
//! through the whole API on in-memory ports (development shim as the caller). Every
//! answer must be a response; the panic guard must never be needed.
#![no_main]

use std::sync::{Arc, LazyLock};

use custos_trigger::api::Api;
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
    custos_trigger::memory::api(audit, clock, []).expect("development settings")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let method = lines.next().unwrap_or("GET").trim();
    let path = lines.next().unwrap_or("/").trim();
    let body = lines.next().unwrap_or_default();
    let headers = serde_json::json!({"content-type": "application/json",
                    "x-custos-callctx": "{\"workspace_id\":\"ws1\",\"permissions\":[\"trigger:subscriptions:read\",\"trigger:subscriptions:write\",\"trigger:subscriptions:delete\",\"trigger:subscriptions:fire\",\"trigger:connectors:read\",\"trigger:connectors:write\"]}"});
    let Ok(request) = custos_trigger::memory::gateway_request(method, path, headers, body) else {
        return;
    };
    let response = RUNTIME.block_on(api().handle(request));
    assert_ne!(response.status_code, 500, "a panic reached the guard");
});
