//! The webhook intake against in-memory ports: verification outcomes, audits, normalization.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::audit::AuditName;
use crate::clock::ManualClock;
use crate::ids::WorkspaceId;
use crate::memory::{MemoryConnectorStore, MemoryQueue, RecordingAuditSink};
use crate::webhook::secrets::StaticSecrets;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
pub(crate) const TIMESTAMP: &str = "1614265330";
pub(crate) const BODY: &[u8] = br#"{"test": 2432232314}"#;
pub(crate) const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

struct Harness {
    connectors: Arc<MemoryConnectorStore>,
    queue: Arc<MemoryQueue>,
    audit: Arc<RecordingAuditSink>,
    intake: WebhookIntake,
}

async fn harness() -> Harness {
    let connectors = Arc::new(MemoryConnectorStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let audit = Arc::new(RecordingAuditSink::default());
    let secrets = Arc::new(StaticSecrets::new([
        ("ssm:/custos/webhooks/ci1".to_owned(), SECRET.to_owned()),
        (
            "ssm:/custos/webhooks/gh".to_owned(),
            "It's a Secret to Everybody".to_owned(),
        ),
    ]));
    connectors.put(&standard_connector()).await.unwrap();
    connectors
        .put(&ConnectorInstance {
            connector_instance_id: "gh1".into(),
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            scheme: SignatureScheme::Github,
            secret_refs: vec!["ssm:/custos/webhooks/gh".into()],
            kind_header: Some("X-GitHub-Event".into()),
            kind_prefix: Some("github".into()),
            vendor: Some("github".into()),
            version: 0,
        })
        .await
        .unwrap();
    let intake = WebhookIntake {
        connectors: connectors.clone(),
        secrets,
        intake: Arc::new(crate::stage::IngestStage {
            normalized_queue: queue.clone(),
            archive: Arc::new(crate::memory::MemoryArchive::default()),
            audit: audit.clone(),
            clock: Arc::new(ManualClock::at_ms(1_614_265_330_000)),
            retention: crate::archive::Retention { ttl_secs: 60 },
        }),
        audit: audit.clone(),
        clock: Arc::new(ManualClock::at_ms(1_614_265_330_000)),
    };
    Harness {
        connectors,
        queue,
        audit,
        intake,
    }
}

/// Connector `ci1` of ws1: Standard Webhooks, signing with [`SECRET`] (stored under
/// `ssm:/custos/webhooks/ci1`).
pub(crate) fn standard_connector() -> ConnectorInstance {
    ConnectorInstance {
        connector_instance_id: "ci1".into(),
        workspace_id: WorkspaceId::new("ws1").unwrap(),
        scheme: SignatureScheme::StandardWebhooks,
        secret_refs: vec!["ssm:/custos/webhooks/ci1".into()],
        kind_header: None,
        kind_prefix: None,
        vendor: None,
        version: 0,
    }
}

pub(crate) fn headers(signature: &str) -> HashMap<String, String> {
    HashMap::from([
        ("webhook-id".to_owned(), ID.to_owned()),
        ("webhook-timestamp".to_owned(), TIMESTAMP.to_owned()),
        ("webhook-signature".to_owned(), signature.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ])
}

fn queued(queue: &MemoryQueue) -> Vec<QueuedEvent> {
    queue
        .sent()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

#[tokio::test]
async fn a_valid_delivery_is_normalized_into_the_connectors_workspace() {
    let h = harness().await;
    let event_id = h
        .intake
        .receive("ci1", &headers(SIGNATURE), BODY)
        .await
        .unwrap();
    let sent = queued(&h.queue);
    assert_eq!(sent.len(), 1);
    let q = &sent[0];
    assert_eq!(q.workspace_id.as_str(), "ws1");
    assert_eq!(q.event.event_id, event_id);
    assert_eq!(q.event.kind.as_str(), "webhook.received");
    assert_eq!(q.event.source.connector_instance_id.as_deref(), Some("ci1"));
    assert_eq!(q.event.raw.body.as_bytes(), BODY);
    assert_eq!(
        q.event.raw.headers.get("webhook-id").map(String::as_str),
        Some(ID)
    );
    assert_eq!(q.event.data.get("test"), Some(&json!(2432232314u64)));
    // The provider's retry of the same delivery gets the same eventId.
    let again = h
        .intake
        .receive("ci1", &headers(SIGNATURE), BODY)
        .await
        .unwrap();
    assert_eq!(again, event_id);
}

#[tokio::test]
async fn refused_deliveries_are_audited_and_nothing_is_enqueued() {
    let h = harness().await;
    let err = h
        .intake
        .receive("ci1", &headers("v1,AAAA"), BODY)
        .await
        .unwrap_err();
    assert_eq!(err, IntakeError::Rejected(Rejection::SignatureInvalid));
    let mut missing = headers(SIGNATURE);
    missing.remove("webhook-signature");
    assert_eq!(
        h.intake.receive("ci1", &missing, BODY).await.unwrap_err(),
        IntakeError::Rejected(Rejection::SignatureMissing)
    );
    assert!(h.queue.sent().is_empty());
    let audits = h.audit.events();
    assert_eq!(audits.len(), 2);
    assert!(audits.iter().all(|a| a.audit == AuditName::WebhookRejected));
    assert_eq!(audits[0].attrs["reason"], "signature_invalid");
    assert_eq!(audits[1].attrs["reason"], "signature_missing");
    assert_eq!(audits[0].attrs["connectorInstanceId"], "ci1");
    assert_eq!(audits[0].workspace_id, "ws1");
}

#[tokio::test]
async fn unknown_connectors_and_oversized_bodies_are_refused() {
    let h = harness().await;
    assert_eq!(
        h.intake
            .receive("nope", &headers(SIGNATURE), BODY)
            .await
            .unwrap_err(),
        IntakeError::UnknownConnector("nope".into())
    );
    let big = vec![b'x'; MAX_BODY_BYTES + 1];
    assert!(matches!(
        h.intake.receive("ci1", &headers(SIGNATURE), &big).await,
        Err(IntakeError::TooLarge(_))
    ));
    assert!(h.queue.sent().is_empty());
}

#[tokio::test]
async fn github_deliveries_map_their_event_header_to_a_vendor_kind() {
    let h = harness().await;
    let gh = HashMap::from([
        (
            "x-hub-signature-256".to_owned(),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned(),
        ),
        ("x-github-delivery".to_owned(), "d-1".to_owned()),
        ("x-github-event".to_owned(), "push".to_owned()),
    ]);
    h.intake
        .receive("gh1", &gh, b"Hello, World!")
        .await
        .unwrap();
    let q = &queued(&h.queue)[0];
    assert_eq!(q.event.kind.as_str(), "github.push");
    assert_eq!(q.event.source.vendor.as_deref(), Some("github"));
    assert!(q.event.data.is_empty(), "a non-JSON body has no data");
}

#[tokio::test]
async fn unsigned_connectors_must_be_explicit_and_use_the_delivery_or_body_hash() {
    let h = harness().await;
    h.connectors
        .put(&ConnectorInstance {
            connector_instance_id: "open".into(),
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            scheme: SignatureScheme::None,
            secret_refs: vec![],
            kind_header: None,
            kind_prefix: None,
            vendor: None,
            version: 0,
        })
        .await
        .unwrap();
    let a = h
        .intake
        .receive("open", &HashMap::new(), b"{}")
        .await
        .unwrap();
    let b = h
        .intake
        .receive("open", &HashMap::new(), b"{}")
        .await
        .unwrap();
    let c = h
        .intake
        .receive("open", &HashMap::new(), b"{ }")
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // A signed scheme without secrets is a configuration error, not an open door.
    h.connectors
        .put(&ConnectorInstance {
            connector_instance_id: "broken".into(),
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            scheme: SignatureScheme::StandardWebhooks,
            secret_refs: vec![],
            kind_header: None,
            kind_prefix: None,
            vendor: None,
            version: 0,
        })
        .await
        .unwrap();
    assert!(matches!(
        h.intake.receive("broken", &headers(SIGNATURE), BODY).await,
        Err(IntakeError::Misconfigured(_))
    ));
}

#[tokio::test]
async fn binary_bodies_are_kept_losslessly() {
    let h = harness().await;
    h.connectors
        .put(&ConnectorInstance {
            connector_instance_id: "bin".into(),
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            scheme: SignatureScheme::None,
            secret_refs: vec![],
            kind_header: None,
            kind_prefix: None,
            vendor: None,
            version: 0,
        })
        .await
        .unwrap();
    let body = [0xff, 0x00, 0x80];
    h.intake
        .receive("bin", &HashMap::new(), &body)
        .await
        .unwrap();
    let q = &queued(&h.queue)[0];
    assert_eq!(
        q.event
            .raw
            .headers
            .get("x-custos-body-encoding")
            .map(String::as_str),
        Some("base64")
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&q.event.raw.body)
            .unwrap(),
        body
    );
}

#[tokio::test]
async fn a_body_under_the_byte_limit_whose_event_would_not_fit_is_refused_too_large() {
    let h = harness().await;
    h.connectors
        .put(&ConnectorInstance {
            connector_instance_id: "open1".into(),
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            scheme: SignatureScheme::None,
            secret_refs: Vec::new(),
            kind_header: None,
            kind_prefix: None,
            vendor: None,
            version: 0,
        })
        .await
        .unwrap();
    // Quotes inside a string: the raw body is escaped once more and the parsed `data`
    // keeps them too, so a 95 KiB body becomes an event of about 285 KiB.
    let body = format!(r#"{{"a":"{}"}}"#, r#"\""#.repeat(47 * 1024));
    assert!(body.len() <= MAX_BODY_BYTES);
    let err = h
        .intake
        .receive("open1", &HashMap::new(), body.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, IntakeError::EventTooLarge(_)), "{err:?}");
    assert!(h.queue.sent().is_empty(), "nothing enqueued");
    // Just under: accepted.
    let body = format!(r#"{{"a":"{}"}}"#, "z".repeat(90 * 1024));
    h.intake
        .receive("open1", &HashMap::new(), body.as_bytes())
        .await
        .unwrap();
    assert_eq!(h.queue.sent().len(), 1);
}

#[tokio::test]
async fn a_github_replay_under_any_delivery_id_is_the_same_event_and_cannot_change_kind() {
    let h = harness().await;
    let gh = |delivery: &str, event: &str| {
        HashMap::from([
            (
                "x-hub-signature-256".to_owned(),
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                    .to_owned(),
            ),
            ("x-github-delivery".to_owned(), delivery.to_owned()),
            ("x-github-event".to_owned(), event.to_owned()),
        ])
    };
    let first = h
        .intake
        .receive("gh1", &gh("d-1", "push"), b"Hello, World!")
        .await
        .unwrap();
    let replay = h
        .intake
        .receive("gh1", &gh("d-2-forged", "push"), b"Hello, World!")
        .await
        .unwrap();
    assert_eq!(replay, first, "a new delivery id does not make a new event");
    let relabelled = h
        .intake
        .receive("gh1", &gh("d-3", "release"), b"Hello, World!")
        .await
        .unwrap_err();
    assert_eq!(
        relabelled,
        IntakeError::Replayed {
            original: "github.push".into()
        }
    );
    assert_eq!(
        queued(&h.queue).len(),
        2,
        "the relabelled replay is not enqueued"
    );
    assert!(h
        .audit
        .events()
        .iter()
        .any(|a| a.audit == AuditName::WebhookRejected && a.attrs["reason"] == "replayed"));
}

#[tokio::test]
async fn standard_webhooks_kinds_come_from_the_signed_body_never_a_header() {
    let h = harness().await;
    let mut connector = h.connectors.get("ci1").await.unwrap().unwrap();
    connector.kind_prefix = Some("acme".into());
    connector.kind_header = Some("x-acme-event".into());
    h.connectors.put(&connector).await.unwrap();
    let mut headers = headers(SIGNATURE);
    headers.insert("x-acme-event".into(), "release".into());
    h.intake.receive("ci1", &headers, BODY).await.unwrap();
    // The spec example body has no `type`: the header is ignored, the kind is generic.
    assert_eq!(queued(&h.queue)[0].event.kind.as_str(), "webhook.received");
}

#[tokio::test]
async fn a_standard_webhooks_body_type_names_the_kind() {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let h = harness().await;
    let mut connector = h.connectors.get("ci1").await.unwrap().unwrap();
    connector.kind_prefix = Some("acme".into());
    h.connectors.put(&connector).await.unwrap();
    let body = br#"{"type": "Invoice.Paid", "data": {"id": 7}}"#;
    let key = verify::standard_key(SECRET).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{ID}.{TIMESTAMP}.").as_bytes());
    mac.update(body);
    let signature = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    h.intake
        .receive("ci1", &headers(&signature), body)
        .await
        .unwrap();
    assert_eq!(queued(&h.queue)[0].event.kind.as_str(), "acme.invoice.paid");
}

/// A secret rotated in place (same reference, new value) verifies at once, not after the
/// cache's TTL; a failing signature reads the store again at most once per
/// `REREAD_AFTER_MS`, so forged deliveries cannot hammer it.
#[tokio::test]
async fn a_secret_rotated_in_place_verifies_with_its_new_value() {
    use crate::webhook::secrets::{CachedSecrets, REREAD_AFTER_MS};
    use hmac::{KeyInit, Mac};
    const REFERENCE: &str = "ssm:/custos/webhooks/gh";
    const OLD: &str = "It's a Secret to Everybody";
    const NEW: &str = "It's a new Secret to Everybody";
    const FORGED: &str = "a guess at the secret, long enough";
    let mut h = harness().await;
    let store = Arc::new(StaticSecrets::new([(REFERENCE.to_owned(), OLD.to_owned())]));
    let clock = Arc::new(ManualClock::at_ms(0));
    h.intake.secrets = Arc::new(CachedSecrets::new(store.clone(), clock.clone(), 300_000));
    let signed = |secret: &str, delivery: &str| {
        let key = verify::github_key(secret).unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(delivery.as_bytes());
        HashMap::from([
            (
                "x-hub-signature-256".to_owned(),
                format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            ),
            ("x-github-delivery".to_owned(), delivery.to_owned()),
            ("x-github-event".to_owned(), "push".to_owned()),
        ])
    };
    let receive = |secret: &'static str, delivery: &'static str| {
        let intake = &h.intake;
        let headers = signed(secret, delivery);
        async move { intake.receive("gh1", &headers, delivery.as_bytes()).await }
    };
    let refused = |result: Result<EventId, IntakeError>| {
        matches!(
            result,
            Err(IntakeError::Rejected(Rejection::SignatureInvalid))
        )
    };

    receive(OLD, "one").await.unwrap();
    assert_eq!(store.reads(), 1);
    store.set(REFERENCE, NEW);
    // Read 10 s ago: not read again yet, so the new value is refused for now.
    clock.advance_ms(10_000);
    assert!(refused(receive(NEW, "two").await));
    assert_eq!(store.reads(), 1);
    clock.advance_ms(REREAD_AFTER_MS);
    receive(NEW, "three").await.unwrap();
    assert_eq!(store.reads(), 2);
    // The cache holds the new value now: the old one is refused, and forgeries right
    // after a read cost no read.
    assert!(refused(receive(OLD, "four").await));
    assert!(refused(receive(FORGED, "five").await));
    assert_eq!(store.reads(), 2);
    clock.advance_ms(REREAD_AFTER_MS);
    for delivery in ["six", "seven", "eight"] {
        assert!(refused(receive(FORGED, delivery).await));
    }
    assert_eq!(
        store.reads(),
        3,
        "one read again per REREAD_AFTER_MS, whatever comes"
    );
    assert_eq!(queued(&h.queue).len(), 2);
}
