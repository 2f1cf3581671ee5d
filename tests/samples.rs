//! The sample payloads in `events/` stay valid inputs of their functions.

use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::sqs::SqsEvent;
use custos_trigger::api::{match_path, ROUTES};
use custos_trigger::dispatch::DispatchMessage;
use custos_trigger::event::QueuedEvent;

fn samples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_sample_parses_as_its_functions_input() {
    let files = samples();
    assert!(files.len() >= 8);
    for (name, text) in files {
        if name.starts_with("api-") {
            let request: ApiGatewayV2httpRequest =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let path = request.raw_path.clone().unwrap();
            let method = request.request_context.http.method.as_str().to_owned();
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.method == method && match_path(r.path, &path).is_some()),
                "{name}: {method} {path} is no route"
            );
            continue;
        }
        if name.starts_with("scheduler-") {
            // An EventBridge scheduled event: its `time` is the minute the run is for.
            let event: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(event["detail-type"], "Scheduled Event", "{name}");
            let time = event["time"].as_str().unwrap_or_default();
            custos_trigger::api::request::rfc3339_ms("time", time)
                .unwrap_or_else(|p| panic!("{name}: {}", p.detail));
            continue;
        }
        let event: SqsEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let body = event.records[0].body.clone().unwrap();
        if name.starts_with("match-") {
            serde_json::from_str::<QueuedEvent>(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("dispatch-") {
            serde_json::from_str::<DispatchMessage>(&body)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            assert!(
                name.starts_with("ingest-"),
                "{name}: which function is it for?"
            );
            serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
    }
}
