//! Time as the API shows it: milliseconds since the epoch in storage, RFC 3339 on the wire.

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 with milliseconds and `Z`, as every timestamp in the API is rendered.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn iso_opt(ms: Option<i64>) -> Option<String> {
    ms.map(iso)
}
