//! The one error body of API.md: `{"success": false, "error_code", "message"}` (+ `retry_after_seconds`
//! on 429). bitHuman's routes spell codes in upper case and also carry them as `code`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodeStyle {
    #[default]
    Snake,
    /// bitHuman: `AGENT_NOT_FOUND`, with the code also under `code`.
    Upper,
}

/// What every refusal answers, on every route of every dialect.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// snake_case (`agent_not_found`); upper case on bitHuman's routes (`AGENT_NOT_FOUND`).
    pub error_code: String,
    /// bitHuman's routes only: the upper-case code again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A sentence for a person; names the field when a value is wrong.
    pub message: String,
    /// On 429 (and some 503): when to try again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
    pub style: CodeStyle,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
            style: CodeStyle::Snake,
        }
    }

    /// Malformed JSON (400) is told apart from a well-formed body with a bad value (422).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            message,
        )
    }
    /// A bad value of one field, named by its JSON path (`.use_limit`).
    pub fn invalid_field(path: &str, problem: impl std::fmt::Display) -> Self {
        Self::validation(format!("Invalid value at .{path}: {problem}"))
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn insufficient_balance(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_balance",
            message,
        )
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn agent_not_found(id: &str) -> Self {
        Self::not_found("agent_not_found", format!("No agent `{id}`."))
    }
    pub fn session_not_found(id: &str) -> Self {
        Self::not_found("session_not_found", format!("No session `{id}`."))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after_seconds: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "An unexpected error occurred.",
        )
    }

    pub fn upper(mut self) -> Self {
        self.style = CodeStyle::Upper;
        self
    }

    pub fn body(&self) -> ErrorBody {
        let (error_code, code) = match self.style {
            CodeStyle::Snake => (self.code.to_string(), None),
            CodeStyle::Upper => {
                let upper = self.code.to_uppercase();
                (upper.clone(), Some(upper))
            }
        };
        ErrorBody {
            success: false,
            error_code,
            code,
            message: self.message.clone(),
            retry_after_seconds: self.retry_after_seconds,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.json(self.body())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "database unavailable");
                ApiError::unavailable("The database is unavailable; try again shortly.")
            }
            StoreError::Db(e) => {
                tracing::error!(error = %e, "database error");
                ApiError::internal()
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "corrupt stored value");
                ApiError::internal()
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_style_carries_code_twice() {
        let body = serde_json::to_value(ApiError::agent_not_found("x").upper().body()).unwrap();
        assert_eq!(body["error_code"], "AGENT_NOT_FOUND");
        assert_eq!(body["code"], "AGENT_NOT_FOUND");
        assert_eq!(body["success"], false);
    }

    #[test]
    fn retry_after_is_an_integer_and_at_least_one() {
        let body = serde_json::to_value(ApiError::too_many("concurrency_limit", "busy", 0).body())
            .unwrap();
        assert_eq!(body["retry_after_seconds"], 1);
        assert!(body.get("code").is_none());
    }
}
