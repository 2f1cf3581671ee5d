//! Classify: which arms of the pipeline an event is offered to. A manual fire targets
//! one start subscription and never resumes a step; every other source goes to both.

use crate::event::{NormalizedEvent, SourceType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub to_start: bool,
    pub to_resume: bool,
}

pub fn classify(event: &NormalizedEvent) -> Classification {
    Classification {
        to_start: true,
        to_resume: event.source.source_type != SourceType::Manual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manual_goes_to_start_only_everything_else_to_both() {
        for (source, resume) in [
            ("manual", false),
            ("internal", true),
            ("webhook", true),
            ("scheduled", true),
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
