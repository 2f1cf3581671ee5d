//! JSON text written in place, byte for byte as `serde_json` writes it: the dispatch
//! message of every match is written this way, and serde escapes every string and
//! name byte by byte as if it could need it (most of a message's serializing).

use serde_json::{Map, Value};

/// Any serializable value, or a text that already is JSON.
pub(crate) trait Json {
    fn write(&self, out: &mut String) -> serde_json::Result<()>;
}

impl<T: serde::Serialize> Json for T {
    fn write(&self, out: &mut String) -> serde_json::Result<()> {
        out.push_str(&serde_json::to_string(self)?);
        Ok(())
    }
}

/// An integer, written in place (every message carries `receivedMs`).
pub(crate) struct Int(pub i64);

impl Json for Int {
    fn write(&self, out: &mut String) -> serde_json::Result<()> {
        out.push_str(itoa::Buffer::new().format(self.0));
        Ok(())
    }
}

/// A JSON string exactly as serde writes it. A text with nothing to escape (the usual
/// id, name or mapped value) is copied as it is.
pub(crate) fn string(out: &mut String, text: &str) -> serde_json::Result<()> {
    if needs_escape(text.as_bytes()) {
        return text.write(out);
    }
    out.reserve(text.len() + 2);
    out.push('"');
    out.push_str(text);
    out.push('"');
    Ok(())
}

/// A value as serde writes it, a string through [`string`].
pub(crate) fn value(out: &mut String, value: &Value) -> serde_json::Result<()> {
    match value {
        Value::String(text) => string(out, text),
        other => other.write(out),
    }
}

/// An object as serde writes it (members in the map's order).
pub(crate) fn object(out: &mut String, object: &Map<String, Value>) -> serde_json::Result<()> {
    out.push('{');
    for (i, (key, member)) in object.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, key)?;
        out.push(':');
        value(out, member)?;
    }
    out.push('}');
    Ok(())
}

/// Whether serde would escape a byte of `text`: a control character, `"` or `\`.
/// Checked 16 bytes at a time (the last few padded with spaces), with no early exit
/// inside a block, so the compiler turns each block into a few vector compares: most
/// texts here are ids and short values, which a byte loop would walk one by one.
fn needs_escape(text: &[u8]) -> bool {
    fn escapes(block: &[u8; 16]) -> bool {
        block.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    }
    let mut blocks = text.chunks_exact(16);
    let any_block = blocks
        .by_ref()
        .any(|block| <&[u8; 16]>::try_from(block).is_ok_and(escapes));
    let rest = blocks.remainder();
    let mut last = [b' '; 16];
    last[..rest.len()].copy_from_slice(rest);
    any_block || escapes(&last)
}
