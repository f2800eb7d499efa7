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
pub mod ops;
pub mod rtc;
pub mod sessions;

use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{web, HttpRequest};

use error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg
        // bitHuman
        .route("/v1/validate", web::post().to(agents::validate))
        .route("/v1/agent/generate", web::post().to(agents::generate))
        .route("/v1/agent/status/{agent_id}", web::get().to(agents::get))
        .route("/v1/agents", web::get().to(agents::list))
        .route("/v1/agent/{code}/speak", web::post().to(agents::speak))
        .route(
            "/v1/agent/{code}/add-context",
            web::post().to(agents::add_context),
        )
        .route("/v1/agent/{code}", web::get().to(agents::get))
        .route("/v1/agent/{code}", web::post().to(agents::update))
        .route("/v1/agent/{code}", web::delete().to(agents::delete))
        .route("/v1/assets/{id}", web::get().to(agents::asset))
        // AgentHuman
        .route(
            "/v1/links/start-session",
            web::post().to(links::start_session),
        )
        .route("/v1/links", web::post().to(links::create))
        .route("/v1/links", web::get().to(links::list))
        .route("/v1/links/{id}", web::get().to(links::get))
        .route("/v1/links/{id}", web::delete().to(links::revoke))
        // Ojin
        .route(
            "/v1/public/agents/connect",
            web::post().to(connect::connect),
        )
        .route(
            "/v1/public/agents/connect",
            web::method(actix_web::http::Method::OPTIONS).to(connect::preflight),
        )
        // VideoSDK
        .route(
            "/ai/v1/ai-deployment-sessions/start",
            web::post().to(deployments::start_route),
        )
        .route(
            "/ai/v1/ai-deployment-sessions/end",
            web::post().to(deployments::end_route),
        )
        // Own
        .route("/v1/sessions", web::post().to(sessions::create))
        .route("/v1/sessions", web::get().to(sessions::list))
        .route("/v1/sessions/{id}", web::get().to(sessions::get))
        .route(
            "/v1/sessions/{id}/stop",
            web::post().to(sessions::stop_route),
        )
        .route("/v1/sessions/{id}/token", web::post().to(sessions::token))
        .route("/v1/sessions/{id}/control", web::get().to(control::session))
        .route("/v1/sessions/{id}/preview", web::get().to(control::preview))
        .route("/v1/sessions/{id}/rtc", web::post().to(rtc::offer))
        .route(
            "/v1/sessions/{id}/rtc/{viewer}",
            web::patch().to(rtc::trickle),
        )
        .route(
            "/v1/sessions/{id}/rtc/{viewer}",
            web::delete().to(rtc::leave),
        )
        .route("/v1/agents/{code}/control", web::get().to(control::agent))
        .route("/v1/account", web::get().to(account::get))
        .route("/v1/account", web::patch().to(account::patch))
        .route("/v1/livekit/webhook", web::post().to(ops::livekit_webhook))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
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
