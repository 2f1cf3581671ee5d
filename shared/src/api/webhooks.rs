//! `POST /v1/webhooks/{connectorInstanceId}`: anonymous at the gateway; the intake
//! verifies the signature before anything is enqueued.

use serde_json::json;

use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Params, Reply};
use crate::webhook::{IntakeError, Rejection};

fn problem(error: IntakeError, connector: &str) -> Problem {
    match error {
        IntakeError::UnknownConnector(_) => {
            Problem::new(Code::WebhookRouteNotFound, "no such connector instance")
                .with("connectorInstanceId", connector)
        }
        IntakeError::Rejected(reason) => {
            let code = match reason {
                Rejection::SignatureMissing => Code::WebhookSignatureMissing,
                Rejection::SignatureInvalid => Code::WebhookSignatureInvalid,
                Rejection::TimestampOutOfTolerance => Code::WebhookTimestampOutOfTolerance,
            };
            Problem::new(code, "the delivery could not be verified").with("reason", reason.as_str())
        }
        IntakeError::TooLarge(_) => Problem::new(Code::PayloadTooLarge, error.to_string()),
        IntakeError::EventTooLarge(too_large) => too_large.into(),
        IntakeError::Replayed { ref original } => {
            Problem::new(Code::WebhookReplayed, error.to_string())
                .with("originalKind", original.as_str())
        }
        other => {
            tracing::error!(connector_instance_id = connector, error = %other, "webhook could not be accepted");
            Problem::new(
                Code::Unavailable,
                "the delivery could not be accepted now; retry later",
            )
        }
    }
}

pub async fn receive(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let connector = params
        .get("connectorInstanceId")
        .map(String::as_str)
        .unwrap_or_default();
    let event_id = api
        .webhooks
        .receive(connector, &request.headers, &request.body)
        .await
        .map_err(|e| problem(e, connector))?;
    Ok(Reply::json(202, json!({ "eventId": event_id })))
}
