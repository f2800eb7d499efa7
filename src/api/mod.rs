//! The HTTP boundary: one file per dialect; handlers parse, authenticate, send a message or call
//! the store, and map the reply.

pub mod account;
pub mod agents;
pub mod auth;
pub mod body;
pub mod connect;
pub mod control;
pub mod deployments;
pub mod error;
pub mod limits;
pub mod links;
pub mod openapi;
pub mod ops;
pub mod reply;
pub mod routes;
pub mod rtc;
pub mod sessions;
pub mod steer;

use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{web, HttpRequest};

use error::ApiError;
pub(crate) use routes::route_table;

mod table {
    use super::*;

    route_table! {
        // bitHuman
        post "/v1/validate" => agents::validate,
        post "/v1/agent/generate" => agents::generate,
        get "/v1/agent/status/{agent_id}" => agents::status,
        get "/v1/agents" => agents::list,
        post "/v1/agent/{code}/speak" => steer::speak,
        post "/v1/agent/{code}/add-context" => steer::add_context,
        get "/v1/agent/{code}" => agents::get,
        post "/v1/agent/{code}" => agents::update,
        delete "/v1/agent/{code}" => agents::delete,
        get "/v1/assets/{id}" => agents::asset,
        // AgentHuman
        post "/v1/links/start-session" => links::start_session,
        post "/v1/links" => links::create,
        get "/v1/links" => links::list,
        get "/v1/links/{id}" => links::get,
        delete "/v1/links/{id}" => links::revoke,
        // Ojin
        post "/v1/public/agents/connect" => connect::connect,
        options "/v1/public/agents/connect" => connect::preflight,
        // VideoSDK
        post "/ai/v1/ai-deployment-sessions/start" => deployments::start_route,
        post "/ai/v1/ai-deployment-sessions/end" => deployments::end_route,
        // Own
        post "/v1/sessions" => sessions::create,
        get "/v1/sessions" => sessions::list,
        get "/v1/sessions/{id}" => sessions::get,
        post "/v1/sessions/{id}/stop" => sessions::stop_route,
        post "/v1/sessions/{id}/token" => sessions::token,
        get "/v1/sessions/{id}/control" => control::session,
        get "/v1/sessions/{id}/preview" => control::preview,
        post "/v1/sessions/{id}/rtc" => rtc::offer,
        patch "/v1/sessions/{id}/rtc/{viewer}" => rtc::trickle,
        delete "/v1/sessions/{id}/rtc/{viewer}" => rtc::leave,
        get "/v1/agents/{code}/control" => control::agent,
        get "/v1/account" => account::get,
        patch "/v1/account" => account::patch,
        post "/v1/livekit/webhook" => ops::livekit_webhook,
        get "/healthz" => ops::healthz,
        get "/readyz" => ops::readyz,
        get "/metrics" => ops::metrics,
        get "/openapi.json" => openapi::document,
    }
}

pub use table::ROUTES;

pub fn routes(cfg: &mut web::ServiceConfig) {
    table::routes(cfg);
    crate::web::routes(cfg);
}

/// Unknown routes answer in the one error shape too.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "not_found",
        format!("No route for {} {}.", req.method(), req.path()),
    ))
}

/// Counts and times every request by its route pattern (not its path, which holds ids).
pub fn observe<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + 'static
where
    S: Service<
        actix_web::dev::ServiceRequest,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    S::Future: 'static,
{
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<crate::state::AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().to_string();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    // A request id the client gave (kept if it is a sane token), else a new one; in every log line
    // of the request (as a span field) and in the answer's `x-request-id`.
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| crate::domain::ids::random_token(16));
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let fut = tracing::Instrument::instrument(srv.call(req), span.clone());
    async move {
        let mut response = fut.await?;
        span.in_scope(|| {
            tracing::debug!(
                status = response.status().as_u16(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "answered"
            )
        });
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                value,
            );
        }
        if let Some(metrics) = metrics {
            let status = response.status().as_u16().to_string();
            metrics
                .http_requests
                .with_label_values(&[&method, &route, &status])
                .inc();
            metrics
                .http_duration
                .with_label_values(&[&method, &route])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(response)
    }
}
