//! The browser boundary: AgentHuman's shareable room page (`/s/{link_id}`) with its portrait, the
//! operator's console (`/console`), and their files (`/static/…`). The pages are plain HTML, CSS
//! and JavaScript from `web/`, embedded in the binary; they talk to the JSON API like any client.
//!
//! The room page never starts a session by itself: a preview bot or a reload must not spend one
//! of the link's uses, so the visitor's Start press does (`POST /v1/links/start-session`).

pub mod assets;
pub mod pages;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::domain::agent::AgentStatus;
use crate::domain::ids::LinkId;
use crate::domain::link::LinkStatus;
use crate::state::AppState;
use crate::store::entities::{agent, link};
use crate::store::links::effective_status;

crate::api::route_table! {
    get "/s/{link_id}" => room,
    get "/s/{link_id}/portrait" => portrait,
    get "/console" => console,
    get "/docs" => docs,
    get "/static/{name}" => static_file,
}

/// Why a link's page has nothing to start, as the visitor reads it.
struct Closed {
    status: StatusCode,
    /// The metrics label.
    outcome: &'static str,
    heading: &'static str,
    sentence: String,
}

enum Resolved {
    Live {
        link: Box<link::Model>,
        agent: Box<agent::Model>,
    },
    Closed(Closed),
}

fn closed(
    status: StatusCode,
    outcome: &'static str,
    heading: &'static str,
    sentence: impl Into<String>,
) -> Resolved {
    Resolved::Closed(Closed {
        status,
        outcome,
        heading,
        sentence: sentence.into(),
    })
}

const ASK_FOR_ANOTHER: &str = "Ask whoever shared it with you for a new link.";

/// The link and its agent when a session could start with it, else why not.
async fn resolve(state: &AppState, raw: &str) -> Resolved {
    let unknown = || {
        closed(
            StatusCode::NOT_FOUND,
            "not_found",
            "This link does not exist",
            format!("Check that the address was copied whole. {ASK_FOR_ANOTHER}"),
        )
    };
    let unavailable = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "room page: store unavailable");
        closed(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "This page cannot be shown right now",
            "The server cannot reach its database. Try again in a minute.",
        )
    };
    // A malformed id names no link, and costs no look-up.
    let Some(id) = LinkId::parse(raw) else {
        return unknown();
    };
    let link = match state.store.link(id.as_str()).await {
        Ok(Some(link)) => link,
        Ok(None) => return unknown(),
        Err(e) => return unavailable(e),
    };
    match effective_status(&link) {
        LinkStatus::Active => {}
        LinkStatus::Revoked => {
            return closed(
                StatusCode::GONE,
                "revoked",
                "This link has been turned off",
                format!("Its owner revoked it, so it cannot start a conversation any more. {ASK_FOR_ANOTHER}"),
            )
        }
        LinkStatus::Expired => {
            let when = link
                .expires_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%-d %B %Y at %H:%M UTC").to_string())
                .unwrap_or_else(|| "its expiry date".into());
            return closed(
                StatusCode::GONE,
                "expired",
                "This link has expired",
                format!("It stopped working on {when}. {ASK_FOR_ANOTHER}"),
            );
        }
        LinkStatus::Exhausted => {
            let limit = link.use_limit.unwrap_or(link.uses);
            let times = if limit == 1 {
                "once".to_string()
            } else {
                format!("{limit} times")
            };
            return closed(
                StatusCode::FORBIDDEN,
                "exhausted",
                "This link has been used up",
                format!("It could start a conversation {times}, and all of them have taken place. {ASK_FOR_ANOTHER}"),
            );
        }
    }
    let agent = match state.store.agent_of(&link.account_id, &link.agent_id).await {
        Ok(Some(agent)) => agent,
        Ok(None) => {
            return closed(
                StatusCode::NOT_FOUND,
                "agent_gone",
                "This avatar is no longer available",
                format!("The avatar behind this link has been deleted. {ASK_FOR_ANOTHER}"),
            )
        }
        Err(e) => return unavailable(e),
    };
    if agent.status != AgentStatus::Ready
        || agent.avatar_asset_id.is_none() && agent.image_asset_id.is_none()
    {
        let sentence = if agent.status == AgentStatus::Failed {
            format!("Its portrait could not be prepared. {ASK_FOR_ANOTHER}")
        } else {
            "It is still being prepared. Try again in a minute.".to_string()
        };
        return closed(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "This avatar is not ready",
            sentence,
        );
    }
    Resolved::Live {
        link: Box::new(link),
        agent: Box::new(agent),
    }
}

/// AgentHuman's session ratios are 4:3, 3:4 and 1:1; the agent's own (16:9, 9:16, 1:1…) picks
/// the one of the same orientation.
pub fn session_ratio(agent_ratio: &str) -> &'static str {
    let parsed = agent_ratio
        .split_once(':')
        .and_then(|(w, h)| Some((w.trim().parse::<f64>().ok()?, h.trim().parse::<f64>().ok()?)))
        .filter(|(w, h)| *w > 0.0 && *h > 0.0);
    match parsed {
        Some((w, h)) if w > h * 1.05 => "4:3",
        Some((w, h)) if h > w * 1.05 => "3:4",
        Some(_) => "1:1",
        None => "4:3",
    }
}

fn count_view(state: &AppState, page: &str, outcome: &str) {
    state
        .metrics
        .web_page_views
        .with_label_values(&[page, outcome])
        .inc();
}

/// `GET /s/{link_id}`: the room page, or a page saying why the link cannot start anything.
#[utoipa::path(get, path = "/s/{link_id}", tag = "Pages", operation_id = "room_page", security(()),
    params(("link_id" = String, Path, description = "The link's id.")),
    responses(
        (status = 200, description = "The room page: Start begins one session of the link and plays the avatar.", content_type = "text/html", body = String),
        (status = 403, description = "A page saying the link is revoked, expired or used up.", content_type = "text/html", body = String),
        (status = 404, description = "A page saying the link does not exist.", content_type = "text/html", body = String),
    ))]
pub async fn room(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let (link, agent) = match resolve(&state, &path).await {
        Resolved::Live { link, agent } => (link, agent),
        Resolved::Closed(c) => {
            count_view(&state, "room", c.outcome);
            let mut response = pages::html(c.status, pages::notice(c.heading, &c.sentence), false);
            if c.status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            return response;
        }
    };
    count_view(&state, "room", "ok");
    let ratio = session_ratio(&agent.aspect_ratio);
    let livekit = state.rooms.is_livekit();
    let client_path = state.settings.web.livekit_client_path();
    let client = livekit
        .then(|| assets::livekit_client_version(&client_path))
        .flatten();
    let problem = (livekit && client.is_none()).then(|| {
        format!(
            "This server uses LiveKit for media, but it has no copy of the livekit-client \
             library to give your browser ({} is missing; its operator should run `make setup` \
             or set web.livekit_client), so the avatar cannot be seen or heard here.",
            client_path.display()
        )
    });
    let data = json!({
        "link_id": link.id,
        "agent_name": agent.name,
        "aspect_ratio": ratio,
        "rooms": if livekit { "livekit" } else { "local" },
        "portrait": format!("/s/{}/portrait", link.id),
        "livekit_client": client.map(|v| format!("/static/{}?v={v}", assets::LIVEKIT_CLIENT)),
        "livekit_client_problem": problem,
    });
    let body = pages::room(&pages::RoomView {
        link_id: &link.id,
        agent_name: &agent.name,
        aspect_ratio: ratio,
        data,
    });
    pages::html(StatusCode::OK, body, true)
}

/// `GET /s/{link_id}/portrait`: the agent's framed face. Public, because the link id is the
/// credential; only while the link could start a session.
#[utoipa::path(get, path = "/s/{link_id}/portrait", tag = "Pages", operation_id = "room_portrait", security(()),
    params(("link_id" = String, Path, description = "The link's id.")),
    responses(
        (status = 200, description = "The agent's face.", content_type = "image/jpeg", body = crate::api::reply::Binary),
        (status = 404, description = "No portrait for this link.", content_type = "text/plain", body = String),
    ))]
pub async fn portrait(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let agent = match resolve(&state, &path).await {
        Resolved::Live { agent, .. } => agent,
        Resolved::Closed(c) => {
            return HttpResponse::build(c.status)
                .content_type("text/plain; charset=utf-8")
                .insert_header(("Cache-Control", "no-store"))
                .body(c.sentence)
        }
    };
    let id = agent
        .avatar_asset_id
        .as_deref()
        .or(agent.image_asset_id.as_deref());
    let asset = match id {
        Some(id) => state.store.asset(id).await,
        None => Ok(None),
    };
    match asset {
        Ok(Some(asset)) if asset.account_id == agent.account_id => HttpResponse::Ok()
            .content_type(asset.content_type)
            .insert_header(("Cache-Control", "private, max-age=300"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .body(asset.data),
        Ok(_) => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("This avatar has no portrait."),
        Err(e) => {
            tracing::error!(error = %e, "portrait: store unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body("The server cannot reach its database. Try again in a minute.")
        }
    }
}

/// `GET /console`: the operator's console. The API key is typed into the page and kept in the
/// tab's sessionStorage; the server only serves the page.
#[utoipa::path(get, path = "/console", tag = "Pages", operation_id = "console_page", security(()),
    responses((status = 200, description = "The operator's console.", content_type = "text/html", body = String)))]
pub async fn console(state: web::Data<AppState>) -> HttpResponse {
    count_view(&state, "console", "ok");
    let mut response = pages::html(StatusCode::OK, pages::console(), false);
    // The console holds an API key: no one may frame it.
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /docs`: a readable reference of the API, drawn in the browser from `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "Pages", operation_id = "docs_page", security(()),
    responses((status = 200, description = "This reference, readable.", content_type = "text/html", body = String)))]
pub async fn docs(state: web::Data<AppState>) -> HttpResponse {
    count_view(&state, "docs", "ok");
    pages::html(StatusCode::OK, pages::docs(), false)
}

#[derive(Deserialize)]
struct VersionQuery {
    v: Option<String>,
}

fn cache_control(requested: Option<&str>, current: &str, fallback: &'static str) -> &'static str {
    if requested == Some(current) {
        "public, max-age=31536000, immutable"
    } else {
        fallback
    }
}

fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// `GET /static/{name}`: the pages' embedded files, and livekit-client from disk.
/// `GET /static/{name}`: the pages' scripts and styles, and livekit-client's bundle.
#[utoipa::path(get, path = "/static/{name}", tag = "Pages", operation_id = "static_file", security(()),
    params(("name" = String, Path, description = "A file name, e.g. room.js."),
        ("v" = Option<String>, Query, description = "The file's version: with the current one, the answer may be cached for good.")),
    responses(
        (status = 200, description = "The file.", content_type = "text/javascript", body = String),
        (status = 304, description = "Not modified (ETag)."),
        (status = 404, description = "No such file.", content_type = "text/plain", body = String),
    ))]
pub async fn static_file(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let query = web::Query::<VersionQuery>::from_query(req.query_string())
        .map(|q| q.into_inner().v)
        .unwrap_or(None);
    let missing = |what: String| {
        HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .body(what)
    };
    if path.as_str() == assets::LIVEKIT_CLIENT {
        let file = state.settings.web.livekit_client_path();
        let Some(version) = assets::livekit_client_version(&file) else {
            return missing(format!(
                "livekit-client is not installed on this server ({} is missing): run `make setup`.",
                file.display()
            ));
        };
        let etag = format!("\"{version}\"");
        let cache = cache_control(query.as_deref(), &version, "public, max-age=3600");
        if not_modified(&req, &etag) {
            return HttpResponse::NotModified()
                .insert_header(("ETag", etag))
                .insert_header(("Cache-Control", cache))
                .finish();
        }
        return match tokio::fs::read(&file).await {
            Ok(bytes) => HttpResponse::Ok()
                .content_type("text/javascript; charset=utf-8")
                .insert_header(("ETag", etag))
                .insert_header(("Cache-Control", cache))
                .insert_header(("X-Content-Type-Options", "nosniff"))
                .body(bytes),
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot read livekit-client");
                missing("livekit-client could not be read on this server.".into())
            }
        };
    }
    let Some(asset) = assets::find(&path) else {
        return missing(format!("No file `{}`.", path.as_str()));
    };
    let version = asset.version();
    let etag = format!("\"{version}\"");
    let cache = cache_control(query.as_deref(), &version, "no-cache");
    if not_modified(&req, &etag) {
        return HttpResponse::NotModified()
            .insert_header(("ETag", etag))
            .insert_header(("Cache-Control", cache))
            .finish();
    }
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header(("ETag", etag))
        .insert_header(("Cache-Control", cache))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ratio_keeps_the_orientation() {
        assert_eq!(session_ratio("16:9"), "4:3");
        assert_eq!(session_ratio("4:3"), "4:3");
        assert_eq!(session_ratio("9:16"), "3:4");
        assert_eq!(session_ratio("1:1"), "1:1");
        assert_eq!(session_ratio("nonsense"), "4:3");
        assert_eq!(session_ratio("0:0"), "4:3");
    }

    #[test]
    fn only_the_current_version_is_cached_for_good() {
        assert!(cache_control(Some("abc"), "abc", "no-cache").contains("immutable"));
        assert_eq!(cache_control(Some("old"), "abc", "no-cache"), "no-cache");
        assert_eq!(cache_control(None, "abc", "no-cache"), "no-cache");
    }
}
