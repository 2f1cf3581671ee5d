//! Signature verification against the published examples and every listed malformation.

use super::*;

// The example of the Standard Webhooks specification.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// GitHub's documented example, recomputed independently (Python hmac/hashlib).
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

fn spec_headers(signature: &str) -> HashMap<String, String> {
    HashMap::from([
        ("webhook-id".to_owned(), SPEC_ID.to_owned()),
        ("webhook-timestamp".to_owned(), SPEC_TIMESTAMP.to_string()),
        ("webhook-signature".to_owned(), signature.to_owned()),
    ])
}

fn secrets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn verify(
    headers: &HashMap<String, String>,
    body: &[u8],
    keys: &[&str],
    now: i64,
) -> Result<Verified, Rejection> {
    standard_webhooks(headers, body, &secrets(keys), now)
}

#[test]
fn the_specification_example_verifies() {
    let verified = verify(
        &spec_headers(SPEC_SIGNATURE),
        SPEC_BODY,
        &[SPEC_SECRET],
        SPEC_TIMESTAMP,
    )
    .unwrap();
    assert_eq!(verified.delivery_id, SPEC_ID);
}

#[test]
fn a_wrong_secret_is_refused_and_a_rotated_second_secret_verifies() {
    let other = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA==";
    assert_eq!(
        verify(
            &spec_headers(SPEC_SIGNATURE),
            SPEC_BODY,
            &[other],
            SPEC_TIMESTAMP
        ),
        Err(Rejection::SignatureInvalid)
    );
    assert!(verify(
        &spec_headers(SPEC_SIGNATURE),
        SPEC_BODY,
        &[other, SPEC_SECRET],
        SPEC_TIMESTAMP
    )
    .is_ok());
}

#[test]
fn one_valid_signature_among_several_is_enough() {
    let several = format!("v1,bm90IGl0 v2,whatever {SPEC_SIGNATURE} v1,Zm9v");
    assert!(verify(
        &spec_headers(&several),
        SPEC_BODY,
        &[SPEC_SECRET],
        SPEC_TIMESTAMP
    )
    .is_ok());
}

#[test]
fn tampered_body_truncated_and_non_base64_signatures_are_invalid() {
    let tampered = br#"{"test": 2432232315}"#;
    assert_eq!(
        verify(
            &spec_headers(SPEC_SIGNATURE),
            tampered,
            &[SPEC_SECRET],
            SPEC_TIMESTAMP
        ),
        Err(Rejection::SignatureInvalid)
    );
    let truncated = &SPEC_SIGNATURE[..SPEC_SIGNATURE.len() - 6];
    assert_eq!(
        verify(
            &spec_headers(truncated),
            SPEC_BODY,
            &[SPEC_SECRET],
            SPEC_TIMESTAMP
        ),
        Err(Rejection::SignatureInvalid)
    );
    assert_eq!(
        verify(
            &spec_headers("v1,%%%not-base64%%%"),
            SPEC_BODY,
            &[SPEC_SECRET],
            SPEC_TIMESTAMP
        ),
        Err(Rejection::SignatureInvalid)
    );
    assert_eq!(
        verify(
            &spec_headers(&SPEC_SIGNATURE[3..]),
            SPEC_BODY,
            &[SPEC_SECRET],
            SPEC_TIMESTAMP
        ),
        Err(Rejection::SignatureInvalid),
        "no v1, prefix"
    );
}

#[test]
fn timestamps_six_minutes_off_either_way_are_refused() {
    let headers = spec_headers(SPEC_SIGNATURE);
    assert_eq!(
        verify(&headers, SPEC_BODY, &[SPEC_SECRET], SPEC_TIMESTAMP + 360),
        Err(Rejection::TimestampOutOfTolerance)
    );
    assert_eq!(
        verify(&headers, SPEC_BODY, &[SPEC_SECRET], SPEC_TIMESTAMP - 360),
        Err(Rejection::TimestampOutOfTolerance)
    );
    assert!(
        verify(&headers, SPEC_BODY, &[SPEC_SECRET], SPEC_TIMESTAMP + 300).is_ok(),
        "5 minutes is inside"
    );
    let mut garbled = headers.clone();
    garbled.insert("webhook-timestamp".into(), "yesterday".into());
    assert_eq!(
        verify(&garbled, SPEC_BODY, &[SPEC_SECRET], SPEC_TIMESTAMP),
        Err(Rejection::TimestampOutOfTolerance)
    );
}

#[test]
fn each_missing_header_is_signature_missing() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut headers = spec_headers(SPEC_SIGNATURE);
        headers.remove(name);
        assert_eq!(
            verify(&headers, SPEC_BODY, &[SPEC_SECRET], SPEC_TIMESTAMP),
            Err(Rejection::SignatureMissing),
            "{name}"
        );
        headers.insert(name.to_owned(), String::new());
        assert_eq!(
            verify(&headers, SPEC_BODY, &[SPEC_SECRET], SPEC_TIMESTAMP),
            Err(Rejection::SignatureMissing),
            "{name} empty"
        );
    }
}

#[test]
fn binary_bodies_are_verified_byte_for_byte() {
    let body: Vec<u8> = (0u8..=255).rev().collect();
    let key = standard_key(SPEC_SECRET).unwrap();
    let signature = mac(
        &key,
        &[
            SPEC_ID.as_bytes(),
            b".",
            SPEC_TIMESTAMP.to_string().as_bytes(),
            b".",
            &body,
        ],
    )
    .unwrap()
    .finalize()
    .into_bytes();
    let header = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(signature)
    );
    assert!(verify(
        &spec_headers(&header),
        &body,
        &[SPEC_SECRET],
        SPEC_TIMESTAMP
    )
    .is_ok());
    let lossy = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        verify(
            &spec_headers(&header),
            lossy.as_bytes(),
            &[SPEC_SECRET],
            SPEC_TIMESTAMP
        ),
        Err(Rejection::SignatureInvalid),
        "re-encoding the body breaks the signature"
    );
}

fn gh_headers(signature: &str) -> HashMap<String, String> {
    HashMap::from([
        ("x-hub-signature-256".to_owned(), signature.to_owned()),
        (
            "x-github-delivery".to_owned(),
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
        ),
        ("x-github-event".to_owned(), "push".to_owned()),
    ])
}

#[test]
fn github_signature_verifies_with_its_secret_only() {
    let verified = github(&gh_headers(GH_SIGNATURE), GH_BODY, &secrets(&[GH_SECRET])).unwrap();
    assert_eq!(
        verified.delivery_id,
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(GH_BODY))
        ),
        "GitHub's delivery id is unsigned: the signed body is the delivery"
    );
    assert_eq!(
        github(&gh_headers(GH_SIGNATURE), GH_BODY, &secrets(&["nope"])),
        Err(Rejection::SignatureInvalid)
    );
    assert!(
        github(
            &gh_headers(GH_SIGNATURE),
            GH_BODY,
            &secrets(&["nope", GH_SECRET])
        )
        .is_ok(),
        "rotation"
    );
    assert_eq!(
        github(
            &gh_headers(GH_SIGNATURE),
            b"Hello, World?",
            &secrets(&[GH_SECRET])
        ),
        Err(Rejection::SignatureInvalid)
    );
    assert_eq!(
        github(
            &gh_headers(&GH_SIGNATURE[..20]),
            GH_BODY,
            &secrets(&[GH_SECRET])
        ),
        Err(Rejection::SignatureInvalid)
    );
    assert_eq!(
        github(&gh_headers("sha256=zz"), GH_BODY, &secrets(&[GH_SECRET])),
        Err(Rejection::SignatureInvalid)
    );
    assert_eq!(
        github(&gh_headers("sha1=abcd"), GH_BODY, &secrets(&[GH_SECRET])),
        Err(Rejection::SignatureInvalid)
    );
    for name in ["x-hub-signature-256", "x-github-delivery"] {
        let mut headers = gh_headers(GH_SIGNATURE);
        headers.remove(name);
        assert_eq!(
            github(&headers, GH_BODY, &secrets(&[GH_SECRET])),
            Err(Rejection::SignatureMissing),
            "{name}"
        );
    }
}

#[test]
fn extreme_timestamps_are_refused_without_overflow() {
    for timestamp in [i64::MIN.to_string(), i64::MAX.to_string()] {
        let mut headers = spec_headers(SPEC_SIGNATURE);
        headers.insert("webhook-timestamp".into(), timestamp);
        assert_eq!(
            standard_webhooks(
                &headers,
                SPEC_BODY,
                &secrets(&[SPEC_SECRET]),
                SPEC_TIMESTAMP
            ),
            Err(Rejection::TimestampOutOfTolerance)
        );
    }
}

#[test]
fn short_secrets_verify_nothing() {
    // An empty `whsec_` key, and keys under 16 bytes, would let anyone sign.
    let empty_key_signature = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"").unwrap();
        mac.update(format!("{SPEC_ID}.{SPEC_TIMESTAMP}.").as_bytes());
        mac.update(SPEC_BODY);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    let headers = spec_headers(&empty_key_signature);
    assert_eq!(
        standard_webhooks(&headers, SPEC_BODY, &secrets(&["whsec_"]), SPEC_TIMESTAMP),
        Err(Rejection::SignatureInvalid)
    );
    assert!(standard_key("whsec_c2hvcnQ=").is_none(), "5 bytes");
    assert!(github_key("short").is_none());
}
