//! The OpenAPI 3.1 document of every route (`GET /openapi.json`), derived by utoipa from the
//! handlers' own request and response types; `/docs` draws it for people. The conventions every
//! operation shares (the error shape, the credentials) are added once, by `Conventions`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::reply::Binary;
use super::{account, agents, connect, control, deployments, links, ops, rtc, sessions, steer};

/// Names of the security schemes, as operations list them.
pub const API_KEY: &str = "api_key";
pub const API_SECRET: &str = "api_secret";
pub const JWT: &str = "jwt";
pub const PARTICIPANT_TOKEN: &str = "participant_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "avatar-supervisor",
        description = "A self-hosted control plane for live AI-avatar sessions. It speaks the dialects \
of AgentHuman (links), bitHuman (agents), Ojin (public connect) and VideoSDK (deployment sessions) \
at their own paths, plus its own sessions API. Every refusal has one body shape (ErrorBody).",
    ),
    paths(
        agents::validate, agents::generate, agents::status, agents::list, steer::speak,
        steer::add_context, agents::get, agents::update, agents::delete, agents::asset,
        links::start_session, links::create, links::list, links::get, links::revoke,
        connect::connect, connect::preflight,
        deployments::start_route, deployments::end_route,
        sessions::create, sessions::list, sessions::get, sessions::stop_route, sessions::token,
        control::session, control::preview, control::agent,
        rtc::offer, rtc::trickle, rtc::leave,
        account::get, account::patch,
        ops::livekit_webhook, ops::healthz, ops::readyz, ops::metrics, document,
        crate::web::room, crate::web::portrait, crate::web::console, crate::web::docs,
        crate::web::static_file,
    ),
    components(schemas(ErrorBody, Binary)),
    modifiers(&Conventions),
    security(("api_key" = []), ("api_secret" = []), ("jwt" = [])),
    tags(
        (name = "bitHuman", description = "Agents: generate one from a photo, read, update, delete, and make its live sessions speak or learn."),
        (name = "AgentHuman", description = "Shareable links, and starting a session with one (the link id is the credential)."),
        (name = "Ojin", description = "Public connect, authorised by the browser's Origin against the agent's allowlist."),
        (name = "VideoSDK", description = "Deployment sessions: `deploymentId` names an agent, `tag` a revision."),
        (name = "Sessions", description = "This server's own sessions API."),
        (name = "Control", description = "WebSocket channels: commands and events of a session or of an agent's sessions, and the media preview."),
        (name = "Local room", description = "WHEP-style WebRTC viewers of a session's local room."),
        (name = "Account", description = "The key's account: limits, balances, webhook."),
        (name = "Operations", description = "Health, readiness, metrics, LiveKit's webhooks, this document."),
        (name = "Pages", description = "HTML pages and their files."),
    ),
)]
pub struct ApiDoc;

/// What every operation shares: the credentials' schemes, and the error shape on the statuses any
/// route may answer (the route's own refusals are listed on it).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let header = |name: &str, about: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, about)))
        };
        components.add_security_scheme(
            API_KEY,
            header("x-api-key", "An API key's secret (AgentHuman's header)."),
        );
        components.add_security_scheme(
            API_SECRET,
            header("api-secret", "The same secret (bitHuman's header)."),
        );
        components.add_security_scheme(
            JWT,
            header(
                "Authorization",
                "VideoSDK: an HS256 JWT signed with the key's secret, claims `apikey` (the key id) \
                 and `exp`; with or without `Bearer `.",
            ),
        );
        components.add_security_scheme(
            PARTICIPANT_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The session's participant token."))
                    .build(),
            ),
        );
        let error = |what: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    )))),
                )
                .into()
        };
        let secured_by_default = doc.security.as_ref().is_some_and(|s| !s.is_empty());
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.options,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, what: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(what));
                };
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                if !public && (secured_by_default || op.security.is_some()) {
                    add("401", "Missing or invalid credentials.");
                }
                if op.request_body.is_some() {
                    add("400", "Malformed JSON.");
                    add(
                        "413",
                        "The body (or a decoded image) is over the configured cap.",
                    );
                    add(
                        "422",
                        "A field has a wrong type or value; the message names it.",
                    );
                }
                add(
                    "500",
                    "An unexpected error (never with internals in the message).",
                );
                add("503", "The database or a required dependency is down.");
            }
        }
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations", operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of every route.", content_type = "application/json", body = Object)))]
pub async fn document() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        // unwrap: the document is built from static types; it always serializes.
        ApiDoc::openapi().to_json().unwrap()
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(body.clone())
}
