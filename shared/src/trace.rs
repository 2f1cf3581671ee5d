//! W3C trace context (`traceparent`) carried with an event from the door that accepted
//! it (API request, webhook delivery, lifecycle message) through the queues to the
//! Workflow Service call, so one trace id finds every log line of an event and the run
//! it started. A door that receives no valid `traceparent` starts a new trace.

use serde::{Deserialize, Serialize};

/// A validated `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses a `traceparent` header value; `None` when it is not a usable version-00
    /// value (all-zero ids are invalid by the specification).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return None;
        };
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        let valid = *version == "00"
            && hex(trace_id, 32)
            && hex(parent_id, 16)
            && hex(flags, 2)
            && nonzero(trace_id)
            && nonzero(parent_id);
        valid.then(|| Self(text.to_owned()))
    }

    /// A new trace (random ids, sampled).
    pub fn generate() -> Self {
        let trace_id = rand::random::<u128>().max(1);
        Self(format!("00-{trace_id:032x}-{:016x}-01", span_id()))
    }

    /// The incoming value when valid, else a new trace.
    pub fn continue_or_start(incoming: Option<&str>) -> Self {
        incoming
            .and_then(Self::parse)
            .unwrap_or_else(Self::generate)
    }

    /// The 32-hex trace id (what log lines carry as `trace_id`).
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The same trace with a new parent id: the header a hop sends onwards (one per
    /// dispatch message, so made with one allocation and the thread's generator, not
    /// a system call per id).
    pub fn child(&self) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // `00-<trace id>-` | parent id | `-<flags>`: every valid value is 55 bytes.
        let (head, tail) = (&self.0[..36], &self.0[52..]);
        let mut text = String::with_capacity(self.0.len());
        text.push_str(head);
        let id = span_id();
        text.extend(
            (0..16)
                .rev()
                .map(|i| char::from(HEX[(id >> (i * 4)) as usize & 0xf])),
        );
        text.push_str(tail);
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A random parent id; all zeros is invalid, so never that.
fn span_id() -> u64 {
    rand::random::<u64>().max(1)
}

impl TryFrom<String> for TraceParent {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or_else(|| format!("not a traceparent: {text:?}"))
    }
}

impl From<TraceParent> for String {
    fn from(trace: TraceParent) -> Self {
        trace.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_parse_and_keep_their_trace_id_through_hops() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceParent::parse(value).unwrap();
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = trace.child();
        assert_eq!(child.trace_id(), trace.trace_id());
        assert_ne!(child, trace);
        assert!(TraceParent::parse(child.as_str()).is_some());
        assert!(child.as_str().ends_with("-01"));
    }

    #[test]
    fn invalid_values_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let fresh = TraceParent::continue_or_start(Some("garbage"));
        assert!(TraceParent::parse(fresh.as_str()).is_some());
        assert_ne!(fresh.trace_id(), TraceParent::generate().trace_id());
    }

    #[test]
    fn children_are_valid_keep_trace_and_flags_and_differ_from_each_other() {
        let unsampled = "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ";
        for trace in [
            TraceParent::parse(unsampled).unwrap(),
            TraceParent::generate(),
        ] {
            let children: std::collections::HashSet<String> = (0..1_000)
                .map(|_| {
                    let child = trace.child();
                    assert_eq!(TraceParent::parse(child.as_str()), Some(child.clone()));
                    assert_eq!(child.trace_id(), trace.trace_id());
                    assert_eq!(child.as_str()[52..], trace.as_str()[52..]);
                    child.as_str().to_owned()
                })
                .collect();
            assert_eq!(children.len(), 1_000);
        }
    }
}
