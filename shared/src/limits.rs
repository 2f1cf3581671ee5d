//! What the pipeline can carry. Every stage hands the next one an SQS message, and SQS
//! takes at most 256 KiB; so each door computes the real size of the message it is about
//! to send (and, where it knows the match, of the dispatch message after it) and refuses
//! what does not fit, instead of accepting an event that can only fail later.

use serde::Serialize;
use thiserror::Error;

/// The SQS limit on one message body.
pub const MAX_QUEUE_MESSAGE_BYTES: usize = 256 * 1024;

/// Room a dispatch message needs beside its event (target ids, small resolved inputs).
/// An event larger than `MAX_QUEUE_MESSAGE_BYTES - DISPATCH_HEADROOM_BYTES` could never
/// be dispatched, so the doors refuse it; a match whose resolved inputs still push its
/// dispatch message over the limit is dead-lettered `too_large` by the match stage.
pub const DISPATCH_HEADROOM_BYTES: usize = 8 * 1024;

/// The largest queued event the doors accept (normalized event with its raw body).
pub const MAX_EVENT_MESSAGE_BYTES: usize = MAX_QUEUE_MESSAGE_BYTES - DISPATCH_HEADROOM_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the {what} would be {bytes} bytes; the limit is {limit} bytes")]
pub struct TooLarge {
    pub what: &'static str,
    pub bytes: usize,
    pub limit: usize,
}

/// Serializes `value` as the body a stage sends, refusing it when over `limit`.
pub fn message_body<T: Serialize>(
    what: &'static str,
    value: &T,
    limit: usize,
) -> Result<String, TooLarge> {
    // Plain data (maps, strings, numbers) always serializes; an error would be a bug,
    // reported as "too large" with the size unknown rather than panicking.
    let body = serde_json::to_string(value).map_err(|_| TooLarge {
        what,
        bytes: usize::MAX,
        limit,
    })?;
    checked_body(what, body, limit)
}

/// A body serialized elsewhere, made SQS-safe and refused when over `limit`.
pub fn checked_body(what: &'static str, body: String, limit: usize) -> Result<String, TooLarge> {
    let body = escape_for_sqs(body);
    if body.len() > limit {
        return Err(TooLarge {
            what,
            bytes: body.len(),
            limit,
        });
    }
    Ok(body)
}

/// SQS refuses U+FFFE and U+FFFF in a message (it takes `#x9 | #xA | #xD | #x20-#xD7FF |
/// #xE000-#xFFFD | #x10000-#x10FFFF`); serde_json already escapes the control
/// characters, and in JSON text the two can only occur inside strings, where `\uXXXX`
/// is the same value. So they are escaped rather than refused.
fn escape_for_sqs(body: String) -> String {
    if !has_noncharacter(&body) {
        return body;
    }
    body.replace('\u{FFFE}', "\\ufffe")
        .replace('\u{FFFF}', "\\uffff")
}

/// Whether `text` holds U+FFFE or U+FFFF (UTF-8 `EF BF BE`, `EF BF BF`): a vectorized
/// search for their lead byte, rare in JSON text, since every message body passes here
/// and a char-by-char scan cost more than building the body.
fn has_noncharacter(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr_iter(0xEF, bytes)
        .any(|at| matches!(bytes.get(at + 1..at + 3), Some([0xBF, 0xBE | 0xBF])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_at_the_limit_pass_and_one_byte_more_is_refused() {
        let text = "x".repeat(98);
        assert_eq!(message_body("event", &text, 100).unwrap().len(), 100);
        let err = message_body("event", &format!("{text}y"), 100).unwrap_err();
        assert_eq!((err.bytes, err.limit), (101, 100));
        assert!(err.to_string().contains("event"));
    }

    #[test]
    fn characters_sqs_refuses_are_escaped_and_read_back_the_same() {
        let value = serde_json::json!({"text": "a\u{FFFF}b\u{FFFE}c\u{FFFD}"});
        let body = message_body("event", &value, 1_000).unwrap();
        assert!(!body.contains(['\u{FFFE}', '\u{FFFF}']), "{body}");
        assert!(
            body.contains('\u{FFFD}'),
            "allowed characters stay as they are"
        );
        let back: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn the_byte_search_finds_exactly_the_two_noncharacters() {
        let texts = [
            "",
            "plain",
            "\u{FFFE}",
            "x\u{FFFF}",
            "\u{FFFD}\u{FFFC}\u{FFF0}",
            "\u{EFBF}\u{BFBE}",
            "\u{10FFFF}\u{1FFFE}",
            "é\u{FFFD}\u{FFFF}z",
            "\u{FEFF}",
        ];
        for text in texts {
            let by_chars = text.contains(['\u{FFFE}', '\u{FFFF}']);
            assert_eq!(has_noncharacter(text), by_chars, "{text:?}");
        }
    }
}
