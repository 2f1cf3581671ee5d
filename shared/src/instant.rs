//! Instants as the service writes and reads them: epoch milliseconds inside, RFC 3339
//! at the edges (API bodies, event timestamps, schedule tick ids, stored subscriptions).
//! One module on one crate (chrono, whose civil types the schedules walk anyway), so
//! every timestamp the service prints has one shape: UTC, millisecond precision, `Z`.

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};

/// Epoch milliseconds as RFC 3339 in UTC (`2026-11-27T10:00:00.000Z`); empty for an
/// instant chrono cannot represent (beyond ±262,000 years).
pub fn rfc3339(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::new(),
    }
}

/// The same instant with `zone`'s offset at that instant (`…T11:00:00.000+01:00`).
pub fn zoned(ms: i64, zone: &crate::zone::Zone) -> String {
    let offset = zone.offset_secs(ms).and_then(FixedOffset::east_opt);
    match offset.and_then(|offset| offset.timestamp_millis_opt(ms).single()) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::new(),
    }
}

/// An RFC 3339 instant with any offset as epoch milliseconds (sub-millisecond digits
/// are dropped).
pub fn parse_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `#[serde(with = "crate::instant::text")]`: epoch milliseconds stored and shown as
/// RFC 3339 text.
pub mod text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        super::parse_ms(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 instant: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_utc_with_milliseconds_and_reads_any_offset_back() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_774_699_200_500), "2026-03-28T12:00:00.500Z");
        assert_eq!(parse_ms("2026-03-28T12:00:00.5Z"), Some(1_774_699_200_500));
        assert_eq!(
            parse_ms("2026-03-28T13:00:00.500+01:00"),
            Some(1_774_699_200_500)
        );
        assert_eq!(parse_ms("2026-03-28 12:00"), None);
        assert_eq!(
            zoned(
                1_774_699_200_500,
                &crate::zone::Zone::named("Europe/Berlin").unwrap()
            ),
            "2026-03-28T13:00:00.500+01:00"
        );
    }

    #[test]
    fn text_round_trips_through_serde() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct At(#[serde(with = "text")] i64);
        let json = serde_json::to_string(&At(1_774_699_200_000)).unwrap();
        assert_eq!(json, "\"2026-03-28T12:00:00.000Z\"");
        assert_eq!(
            serde_json::from_str::<At>(&json).unwrap(),
            At(1_774_699_200_000)
        );
        // What the previous writer (the `time` crate) stored reads the same.
        assert_eq!(
            serde_json::from_str::<At>("\"2026-03-28T12:00:00Z\"").unwrap(),
            At(1_774_699_200_000)
        );
        assert!(serde_json::from_str::<At>("\"yesterday\"").is_err());
    }
}
