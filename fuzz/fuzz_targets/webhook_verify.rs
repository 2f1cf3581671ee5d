//! Webhook deliveries from anyone on the internet: header lines then a blank line then
//! the body. Verification (both schemes) must refuse or accept, never panic.
#![no_main]

use std::collections::HashMap;

use custos_trigger::webhook::verify;
use libfuzzer_sys::fuzz_target;

const SECRETS: &[&str] = &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "It's a Secret to Everybody"];

fuzz_target!(|data: &[u8]| {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let mut headers = HashMap::new();
    for line in String::from_utf8_lossy(head).lines() {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let secrets: Vec<String> = SECRETS.iter().map(|s| (*s).to_owned()).collect();
    let _ = verify::standard_webhooks(&headers, body, &secrets, 1_614_265_330);
    let _ = verify::github(&headers, body, &secrets);
});
