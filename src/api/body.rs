//! Request bodies: read with a size cap, parsed with the JSON path of any bad value in the message
//! (`Invalid value at .use_limit: invalid type: string "x", expected i64`).

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};

pub async fn read(mut payload: web::Payload, limit: usize) -> ApiResult<web::Bytes> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(limit),
            other => ApiError::malformed(format!("Could not read the request body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "Request body is larger than the {limit} bytes allowed."
    ))
}

/// Parses a JSON body; the error names the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("Request body must be a JSON object."));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::malformed(format!("Malformed JSON: {text}"))
            }
            _ if path == "." || path.is_empty() => {
                ApiError::validation(format!("Invalid request body: {text}"))
            }
            _ => ApiError::invalid_field(&path, text),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::malformed(format!(
            "Malformed JSON: {}",
            strip_position(&e.to_string())
        ))
    })?;
    Ok(value)
}

pub async fn json<T: DeserializeOwned>(payload: web::Payload, limit: usize) -> ApiResult<T> {
    parse(&read(payload, limit).await?)
}

/// serde_json appends "at line 1 column 14": the path says more to a client.
fn strip_position(text: &str) -> String {
    match text.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => text.to_string(),
    }
}

/// Checks a string field's length, naming the field.
pub fn max_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        limit: Option<i64>,
        tags: Option<Vec<String>>,
    }

    #[test]
    fn names_the_field() {
        let e = parse::<Body>(br#"{"name": "a", "limit": "x"}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(
            e.message
                .starts_with("Invalid value at .limit: invalid type: string"),
            "{}",
            e.message
        );
        let e = parse::<Body>(br#"{"name": "a", "tags": ["x", 5]}"#).unwrap_err();
        assert!(e.message.contains(".tags[1]"), "{}", e.message);
    }

    #[test]
    fn malformed_and_missing() {
        assert_eq!(parse::<Body>(b"{nope").unwrap_err().status.as_u16(), 400);
        assert_eq!(parse::<Body>(b"").unwrap_err().status.as_u16(), 400);
        assert_eq!(
            parse::<Body>(br#"{"name":"a"} x"#)
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
        let e = parse::<Body>(br#"{}"#).unwrap_err();
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
        let e = parse::<Body>(br#"{"name":"a","extra":1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
    }
}
