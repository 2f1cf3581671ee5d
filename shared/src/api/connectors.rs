//! Connector-instance routes: create (a server-generated, unguessable id and its webhook
//! URL), list, read, change (secret rotation = two refs), delete. Every secret reference
//! is checked when it is set: it must exist, be readable by the service and be long
//! enough for the scheme, so a connector can never be registered that accepts forgeries
//! or refuses everything.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth;
use super::preconditions::{admits, etag, if_match};
use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Params, Reply};
use crate::ids::WorkspaceId;
use crate::store::StoreError;
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
        version: 1,
    };
    check(api, &connector).await?;
    api.webhooks.connectors.put(&connector).await?;
    Ok(versioned(201, &connector, request))
}

/// The connector as JSON with its version as a strong `ETag`.
fn versioned(status: u16, connector: &ConnectorInstance, request: &ApiRequest) -> Reply {
    Reply::json(status, view(connector, request)).with_header("etag", etag(connector.version))
}

fn conflict(current: &ConnectorInstance) -> Problem {
    Problem::new(
        Code::ConnectorConflict,
        format!(
            "If-Match does not hold: the connector is at version {}",
            current.version
        ),
    )
    .with("etag", etag(current.version))
}

/// How often a change without `If-Match` is re-applied on fresh state after losing a
/// race, before answering 412.
const CHANGE_ATTEMPTS: usize = 3;

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
    Ok(versioned(200, &connector, request))
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
    // Conditional on the version read: a change racing a delete or another change
    // never brings the connector (or a rotated-out secret) back. Without `If-Match` a
    // lost race is re-applied on fresh state; with it, it is 412.
    let required = if_match(request);
    for _ in 0..CHANGE_ATTEMPTS {
        let current = load(api, &ws, params).await?;
        if !admits(required.as_deref(), current.version) {
            return Err(conflict(&current));
        }
        let mut next = apply(&current, &patch)?;
        check(api, &next).await?;
        next.version = current.version + 1;
        match api
            .webhooks
            .connectors
            .replace(&next, current.version)
            .await
        {
            Ok(()) => return Ok(versioned(200, &next, request)),
            Err(StoreError::Conflict(_)) if required.is_none() => continue,
            Err(StoreError::Conflict(_)) => return Err(conflict(&load(api, &ws, params).await?)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Problem::new(
        Code::ConnectorConflict,
        "the connector kept changing while this request applied; retry",
    ))
}

/// The connector with the patch's present keys applied (`null` clears optional ones).
fn apply(
    current: &ConnectorInstance,
    patch: &Map<String, Value>,
) -> Result<ConnectorInstance, Problem> {
    let mut connector = current.clone();
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
    Ok(connector)
}

/// Deleting is idempotent; another workspace's instance reads as absent (204 either way,
/// nothing of it revealed or touched).
pub async fn delete(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::CONNECTORS_WRITE)?;
    let required = if_match(request);
    match load(api, &ws, params).await {
        Ok(connector) if !admits(required.as_deref(), connector.version) => {
            Err(conflict(&connector))
        }
        Ok(connector) => {
            let expected = required.is_some().then_some(connector.version);
            match api
                .webhooks
                .connectors
                .delete(&connector.connector_instance_id, expected)
                .await
            {
                Ok(()) => Ok(Reply::empty(204)),
                Err(StoreError::Conflict(_)) => Err(conflict(&load(api, &ws, params).await?)),
                Err(e) => Err(e.into()),
            }
        }
        Err(problem) if problem.code == Code::ConnectorNotFound => Ok(Reply::empty(204)),
        Err(problem) => Err(problem),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_lambda_events::encodings::Body;
    use serde_json::{json, Value};

    use crate::memory::{MemoryConnectorStore, RecordingAuditSink};
    use crate::store::StoreError;
    use crate::webhook::{ConnectorInstance, ConnectorStore};

    /// What happens right after the next read, before the reader writes: the worst
    /// moment for a read-modify-write.
    type Meanwhile = Box<dyn FnOnce(&MemoryConnectorStore) + Send>;

    struct Interleaving {
        inner: MemoryConnectorStore,
        meanwhile: Mutex<Option<Meanwhile>>,
    }

    #[async_trait::async_trait]
    impl ConnectorStore for Interleaving {
        async fn get(&self, id: &str) -> Result<Option<ConnectorInstance>, StoreError> {
            let read = self.inner.get(id).await;
            let next = self.meanwhile.lock().unwrap().take();
            if let Some(action) = next {
                action(&self.inner);
            }
            read
        }
        async fn put(&self, c: &ConnectorInstance) -> Result<(), StoreError> {
            self.inner.put(c).await
        }
        async fn replace(&self, c: &ConnectorInstance, expected: u64) -> Result<(), StoreError> {
            self.inner.replace(c, expected).await
        }
        async fn list(
            &self,
            ws: &crate::ids::WorkspaceId,
        ) -> Result<Vec<ConnectorInstance>, StoreError> {
            self.inner.list(ws).await
        }
        async fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), StoreError> {
            self.inner.delete(id, expected).await
        }
    }

    fn connector(refs: &[&str], version: u64) -> ConnectorInstance {
        ConnectorInstance {
            connector_instance_id: "con_1".into(),
            workspace_id: crate::ids::WorkspaceId::new("ws1").unwrap(),
            scheme: crate::webhook::SignatureScheme::Github,
            secret_refs: refs.iter().map(|r| (*r).to_owned()).collect(),
            kind_header: None,
            kind_prefix: None,
            vendor: None,
            version,
        }
    }

    /// The API over a store where `meanwhile` runs after the first read.
    fn api(meanwhile: Meanwhile) -> (crate::api::Api, Arc<Interleaving>) {
        let secrets = [
            ("ssm:old".to_owned(), "an-old-secret-long-enough".to_owned()),
            ("ssm:new".to_owned(), "a-new-secret-long-enough!".to_owned()),
        ];
        let mut api = crate::memory::api(
            Arc::new(RecordingAuditSink::default()),
            Arc::new(crate::clock::ManualClock::at_ms(0)),
            secrets,
        )
        .unwrap();
        let store = Arc::new(Interleaving {
            inner: MemoryConnectorStore::default(),
            meanwhile: Mutex::new(Some(meanwhile)),
        });
        api.webhooks.connectors = store.clone();
        (api, store)
    }

    async fn call(
        api: &crate::api::Api,
        method: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> (i64, Value) {
        let caller = json!({"workspace_id": "ws1", "permissions": ["trigger:connectors:read", "trigger:connectors:write"]});
        let mut headers = json!({"x-custos-callctx": caller.to_string()});
        if let Some(tag) = if_match {
            headers["if-match"] = tag.into();
        }
        let request = crate::memory::gateway_request(
            method,
            "/v1/workspaces/ws1/connectors/con_1",
            headers,
            &body.to_string(),
        )
        .unwrap();
        let response = api.handle(request).await;
        let body = match response.body {
            Some(Body::Text(text)) => serde_json::from_str(&text).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        (response.status_code, body)
    }

    #[tokio::test]
    async fn a_patch_racing_a_delete_does_not_bring_the_connector_back() {
        let (api, store) = api(Box::new(|inner| {
            futures::executor::block_on(inner.delete("con_1", None)).unwrap();
        }));
        store.inner.put(&connector(&["ssm:old"], 1)).await.unwrap();
        let (status, body) = call(&api, "PATCH", json!({"vendor": "github"}), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("trigger.connector_not_found")),
            "{body}"
        );
        assert_eq!(
            store.inner.get("con_1").await.unwrap(),
            None,
            "still deleted"
        );
    }

    #[tokio::test]
    async fn a_stale_patch_does_not_bring_a_rotated_out_secret_back() {
        // Meanwhile the rotation finishes: only the new secret is left (version 2).
        let (api, store) = api(Box::new(|inner| {
            futures::executor::block_on(inner.replace(&connector(&["ssm:new"], 2), 1)).unwrap();
        }));
        store
            .inner
            .put(&connector(&["ssm:old", "ssm:new"], 1))
            .await
            .unwrap();
        let (status, body) = call(&api, "PATCH", json!({"vendor": "github"}), None).await;
        assert_eq!(status, 200, "{body}");
        let stored = store.inner.get("con_1").await.unwrap().unwrap();
        assert_eq!(
            stored.secret_refs,
            ["ssm:new"],
            "re-applied on the fresh state"
        );
        assert_eq!(
            (stored.vendor.as_deref(), stored.version),
            (Some("github"), 3)
        );
        // With If-Match of what the caller read, the same race is 412 and writes nothing.
        *store.meanwhile.lock().unwrap() = Some(Box::new(|inner| {
            futures::executor::block_on(inner.replace(&connector(&["ssm:old"], 4), 3)).unwrap();
        }));
        let (status, body) = call(&api, "PATCH", json!({"kindPrefix": "gh"}), Some("\"3\"")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (412, Some("trigger.connector_conflict")),
            "{body}"
        );
        assert_eq!(body["etag"], "\"4\"");
        let (status, _) = call(&api, "DELETE", Value::Null, Some("\"3\"")).await;
        assert_eq!(status, 412, "a delete of a version that changed");
        let (status, _) = call(&api, "DELETE", Value::Null, Some("\"4\"")).await;
        assert_eq!(status, 204);
    }
}
