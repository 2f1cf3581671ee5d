//! Reading and writing DynamoDB attribute maps without repeating the match arms.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::StoreError;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub fn require_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, name)
        .ok_or_else(|| StoreError::Corrupt(format!("item lacks string attribute {name}")))
}

/// Decodes the JSON document stored in the `doc` attribute.
pub fn doc<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let text = require_s(item, "doc")?;
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("doc does not decode: {e}")))
}
