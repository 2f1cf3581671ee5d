//! Workflow lifecycle envelopes as the Workflow Service (or anyone who can write to the
//! queue) sends them: normalization must refuse or accept, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(queued) = custos_trigger::stage::ingest::lifecycle_envelope(&value) {
            let _ = custos_trigger::limits::message_body("event", &queued, usize::MAX);
        }
    }
});
