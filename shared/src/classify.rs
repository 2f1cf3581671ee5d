//! Classify: which arms of the pipeline an event is offered to. A manual fire and a
//! schedule's tick target one start subscription and never resume a step; every other
//! source goes to both.

use crate::event::{NormalizedEvent, SourceType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub to_start: bool,
    pub to_resume: bool,
}

pub fn classify(event: &NormalizedEvent) -> Classification {
    Classification {
        to_start: true,
        to_resume: !addressed(event.source.source_type),
    }
}

/// Sources whose events name the one subscription they are for (`source.subscriptionId`).
pub fn addressed(source: SourceType) -> bool {
    matches!(source, SourceType::Manual | SourceType::Scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manual_and_scheduled_go_to_start_only_everything_else_to_both() {
        for (source, resume) in [
            ("manual", false),
            ("internal", true),
            ("webhook", true),
            ("scheduled", false),
            ("vendor-push", true),
            ("pull", true),
        ] {
            let event: NormalizedEvent = serde_json::from_value(json!({
                "eventId": "e", "kind": "vendor.x",
                "source": {"type": source, "occurredAt": "t"}
            }))
            .unwrap();
            let c = classify(&event);
            assert!(c.to_start);
            assert_eq!(c.to_resume, resume, "{source}");
        }
    }
}
