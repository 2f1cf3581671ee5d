//! Webhook signature verification, over the raw body bytes exactly as received.
//! Standard Webhooks: HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` with a
//! `whsec_<base64>` secret, one or more space-separated `v1,<base64>` signatures, and a
//! 5-minute timestamp tolerance both ways. GitHub: `X-Hub-Signature-256: sha256=<hex>`.
//! Comparisons are constant-time (`hmac`'s `verify_slice`). Several secrets may be
//! active at once (rotation); any of them verifies.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Seconds a Standard Webhooks timestamp may differ from now, either way.
pub const TOLERANCE_SECS: u64 = 300;

/// The shortest signing key accepted (Standard Webhooks recommends 24–64 bytes): a
/// shorter one (an empty `whsec_` above all) would let anyone forge deliveries.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why a delivery was refused (the `reason` of audit `trigger.webhook.rejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    SignatureMissing,
    SignatureInvalid,
    TimestampOutOfTolerance,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::SignatureMissing => "signature_missing",
            Rejection::SignatureInvalid => "signature_invalid",
            Rejection::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
        }
    }
}

/// A verified delivery: its id, made of signed material so a replay cannot pose as a
/// new delivery (Standard Webhooks: the signed `webhook-id`; GitHub, whose delivery id
/// is unsigned: `sha256:<hex of the body>`), and its signed timestamp, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub delivery_id: String,
    pub timestamp: Option<String>,
}

/// The key bytes of a `whsec_<base64>` secret (a secret without the prefix is taken as
/// base64 too, as the Standard Webhooks libraries do).
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .filter(|key| key.len() >= MIN_SECRET_BYTES)
}

/// The key bytes of a GitHub secret (the secret text itself), if long enough.
pub fn github_key(secret: &str) -> Option<&[u8]> {
    Some(secret.as_bytes()).filter(|key| key.len() >= MIN_SECRET_BYTES)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac)
}

fn header<'a>(headers: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Verifies a Standard Webhooks delivery; `headers` have lower-cased names.
pub fn standard_webhooks(
    headers: &HashMap<String, String>,
    body: &[u8],
    secrets: &[String],
    now_secs: i64,
) -> Result<Verified, Rejection> {
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
        header(headers, "webhook-signature"),
    ) else {
        return Err(Rejection::SignatureMissing);
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::TimestampOutOfTolerance)?;
    // Checked: a timestamp like i64::MIN must be refused, not overflow.
    let skew = now_secs.checked_sub(sent).map(i64::unsigned_abs);
    if skew.is_none_or(|s| s > TOLERANCE_SECS) {
        return Err(Rejection::TimestampOutOfTolerance);
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .collect();
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    let valid = secrets
        .iter()
        .filter_map(|s| standard_key(s))
        .filter_map(|key| mac(&key, &signed))
        .any(|m| {
            candidates
                .iter()
                .any(|sig| m.clone().verify_slice(sig).is_ok())
        });
    if !valid {
        return Err(Rejection::SignatureInvalid);
    }
    Ok(Verified {
        delivery_id: id.to_owned(),
        timestamp: Some(timestamp.to_owned()),
    })
}

/// Verifies a GitHub delivery (`x-hub-signature-256`, `x-github-delivery`).
pub fn github(
    headers: &HashMap<String, String>,
    body: &[u8],
    secrets: &[String],
) -> Result<Verified, Rejection> {
    let (Some(signature), Some(_delivery)) = (
        header(headers, "x-hub-signature-256"),
        header(headers, "x-github-delivery"),
    ) else {
        return Err(Rejection::SignatureMissing);
    };
    let given = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Rejection::SignatureInvalid)?;
    let valid = secrets
        .iter()
        .filter_map(|s| github_key(s))
        .filter_map(|key| mac(key, &[body]))
        .any(|m| m.verify_slice(&given).is_ok());
    if !valid {
        return Err(Rejection::SignatureInvalid);
    }
    // GitHub signs only the body: the delivery is the body (any X-GitHub-Delivery).
    Ok(Verified {
        delivery_id: format!("sha256:{}", hex::encode(Sha256::digest(body))),
        timestamp: None,
    })
}

#[cfg(test)]
mod tests;
