//! Connector-instance routes: create (a server-generated, unguessable id and its webhook
//! URL), list, read, change (secret rotation = two refs), delete. Every secret reference
//! is checked when it is set: it must exist, be readable by the service and be long
//! enough for the scheme, so a connector can never be registered that accepts forgeries
//! or refuses everything.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth;
use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Params, Reply};
use crate::ids::WorkspaceId;
use crate::webhook::{verify, ConnectorInstance, SignatureScheme};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    scheme: SignatureScheme,
    #[serde(default)]
    secret_refs: Vec<String>,
    #[serde(default)]
    kind_header: Option<String>,
    #[serde(default)]
    kind_prefix: Option<String>,
    #[serde(default)]
    vendor: Option<String>,
}

/// The connector as the API shows it, with the URL providers post to.
fn view(connector: &ConnectorInstance, request: &ApiRequest) -> Value {
    let mut body = serde_json::to_value(connector).unwrap_or(Value::Null);
    let path = format!("/v1/webhooks/{}", connector.connector_instance_id);
    body["webhookPath"] = path.as_str().into();
    if let Some(host) = request.header("host").filter(|h| !h.is_empty()) {
        body["webhookUrl"] = format!("https://{host}{path}").into();
    }
    body
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        Code::ConnectorNotFound,
        "no such connector instance in this workspace",
    )
    .with("connectorInstanceId", id)
}

/// The instance, if it exists in `ws` (another workspace's reads as absent).
async fn load(api: &Api, ws: &WorkspaceId, params: &Params) -> Result<ConnectorInstance, Problem> {
    let id = params
        .get("connectorId")
        .map(String::as_str)
        .unwrap_or_default();
    if id.len() > super::MAX_PATH_ID_BYTES {
        return Err(not_found(id));
    }
    api.webhooks
        .connectors
        .get(id)
        .await?
        .filter(|c| &c.workspace_id == ws)
        .ok_or_else(|| not_found(id))
}

/// Refuses a configuration that could not verify deliveries.
async fn check(api: &Api, connector: &ConnectorInstance) -> Result<(), Problem> {
    connector
        .validate()
        .map_err(|reason| Problem::new(Code::ConnectorInvalid, reason))?;
    for (i, reference) in connector.secret_refs.iter().enumerate() {
        let secret = api.webhooks.secrets.resolve(reference).await.map_err(|error| {
            // The SDK's words go to the log; the tenant learns which reference failed.
            tracing::warn!(connector_instance_id = connector.connector_instance_id, %error, "secret reference not readable");
            Problem::new(
                Code::ConnectorSecretInvalid,
                format!("secretRefs[{i}] does not name a secret the service can read"),
            )
        })?;
        let usable = match connector.scheme {
            SignatureScheme::StandardWebhooks => verify::standard_key(&secret).is_some(),
            SignatureScheme::Github => verify::github_key(&secret).is_some(),
            SignatureScheme::None => true,
        };
        if !usable {
            return Err(Problem::new(
                Code::ConnectorSecretInvalid,
                format!(
                    "secretRefs[{i}] is not a usable key: at least {} bytes (Standard Webhooks: whsec_<base64>)",
                    verify::MIN_SECRET_BYTES
                ),
            ));
        }
    }
    Ok(())
}

pub async fn create(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::CONNECTORS_WRITE)?;
    let body: CreateBody = request.json()?;
    let connector = ConnectorInstance {
        connector_instance_id: format!("con_{}", uuid::Uuid::new_v4().simple()),
        workspace_id: ws,
        scheme: body.scheme,
        secret_refs: body.secret_refs,
        kind_header: body.kind_header,
        kind_prefix: body.kind_prefix,
        vendor: body.vendor,
    };
    check(api, &connector).await?;
    api.webhooks.connectors.put(&connector).await?;
    Ok(Reply::json(201, view(&connector, request)))
}

pub async fn list(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::CONNECTORS_READ)?;
    let items: Vec<Value> = api
        .webhooks
        .connectors
        .list(&ws)
        .await?
        .iter()
        .map(|c| view(c, request))
        .collect();
    Ok(Reply::json(200, json!({ "items": items })))
}

pub async fn get(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::CONNECTORS_READ)?;
    let connector = load(api, &ws, params).await?;
    Ok(Reply::json(200, view(&connector, request)))
}

const PATCHABLE: &[&str] = &["scheme", "secretRefs", "kindHeader", "kindPrefix", "vendor"];

fn field<T: serde::de::DeserializeOwned>(name: &str, value: &Value) -> Result<T, Problem> {
    serde_json::from_value(value.clone())
        .map_err(|e| Problem::new(Code::BadRequest, format!("{name}: {e}")))
}

/// Present keys change their field, `null` clears the optional ones; rotating a secret
/// is a `secretRefs` of two (old and new), then of one.
pub async fn patch(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::CONNECTORS_WRITE)?;
    let patch: Map<String, Value> = request.json()?;
    if let Some(unknown) = patch.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
        return Err(Problem::new(
            Code::BadRequest,
            format!("{unknown}: unknown field"),
        ));
    }
    let mut connector = load(api, &ws, params).await?;
    if let Some(value) = patch.get("scheme") {
        connector.scheme = field("scheme", value)?;
    }
    if let Some(value) = patch.get("secretRefs") {
        connector.secret_refs = field("secretRefs", value)?;
    }
    if let Some(value) = patch.get("kindHeader") {
        connector.kind_header = field("kindHeader", value)?;
    }
    if let Some(value) = patch.get("kindPrefix") {
        connector.kind_prefix = field("kindPrefix", value)?;
    }
    if let Some(value) = patch.get("vendor") {
        connector.vendor = field("vendor", value)?;
    }
    check(api, &connector).await?;
    api.webhooks.connectors.put(&connector).await?;
    Ok(Reply::json(200, view(&connector, request)))
}

/// Deleting is idempotent; another workspace's instance reads as absent (204 either way,
/// nothing of it revealed or touched).
pub async fn delete(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::CONNECTORS_WRITE)?;
    match load(api, &ws, params).await {
        Ok(connector) => {
            api.webhooks
                .connectors
                .delete(&connector.connector_instance_id)
                .await?;
            Ok(Reply::empty(204))
        }
        Err(problem) if problem.code == Code::ConnectorNotFound => Ok(Reply::empty(204)),
        Err(problem) => Err(problem),
    }
}
