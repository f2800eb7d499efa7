//! The browser side over plain HTTP: the room page of a link in each of its states (a page with a
//! sentence and the right status, never JSON or a blank page), the portrait, the embedded files
//! and their caching, livekit-client from disk, the console, and the console's per-session token.
//! What a real browser does with them is in `netns::browser`.

use serde_json::{json, Value};

use crate::control::connect;
use crate::helpers::*;
use crate::on_both_databases;

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The JSON the room page hands its script.
    fn data(&self) -> Value {
        let start = self
            .body
            .find(r#"<script type="application/json" id="room-data">"#)
            .expect("room data")
            + r#"<script type="application/json" id="room-data">"#.len();
        let end = start
            + self.body[start..]
                .find("</script>")
                .expect("end of room data");
        serde_json::from_str(&self.body[start..end]).expect("room data is JSON")
    }

    /// The URL of a file the page names (`/static/room.js?v=…`).
    fn asset(&self, name: &str) -> String {
        let at = self
            .body
            .find(&format!("/static/{name}?v="))
            .unwrap_or_else(|| panic!("page names no {name}"));
        self.body[at..]
            .split('"')
            .next()
            .expect("quoted URL")
            .to_string()
    }
}

async fn page(app: &TestApp, path: &str) -> Page {
    let r = app.client.get(app.url(path)).send().await.expect("GET");
    Page {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.expect("body"),
    }
}

#[track_caller]
fn assert_notice(p: &Page, status: u16, sentence: &str) {
    assert_eq!(p.status, status, "{}", p.body);
    assert!(
        p.header("content-type").starts_with("text/html"),
        "{:?}",
        p.headers
    );
    assert_eq!(p.header("cache-control"), "no-store");
    assert!(p.body.contains(sentence), "no `{sentence}` in {}", p.body);
    assert!(!p.body.contains("{{"), "unfilled slot in {}", p.body);
}

async fn room_page_in_every_state(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app
        .ready_agent(
            &acct.key,
            json!({"name": "Ada <the helper>", "aspect_ratio": "9:16"}),
        )
        .await;
    let make_link = |limit: Option<i64>| {
        let body = match limit {
            Some(n) => json!({"agent_id": agent, "use_limit": n}),
            None => json!({"agent_id": agent}),
        };
        let app = &app;
        let key = acct.key.clone();
        async move {
            let r = app.post("/v1/links", &key, body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["link"]["link_id"].as_str().unwrap().to_string()
        }
    };

    // A live link: the agent's name (escaped), its portrait, Start, and nothing started yet.
    let live = make_link(None).await;
    let p = page(&app, &format!("/s/{live}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.header("content-type").starts_with("text/html"));
    assert_eq!(p.header("cache-control"), "no-store");
    assert_eq!(p.header("referrer-policy"), "no-referrer");
    assert!(p
        .header("content-security-policy")
        .contains("script-src 'self'"));
    assert!(p
        .body
        .contains("<h1 id=\"agent-name\">Ada &lt;the helper&gt;</h1>"));
    assert!(p.body.contains(r#"<button id="start" type="button""#));
    assert!(
        p.body.contains("ratio-3-4"),
        "a portrait agent gets a 3:4 stage"
    );
    let data = p.data();
    assert_eq!(data["link_id"], live.as_str());
    assert_eq!(data["agent_name"], "Ada <the helper>");
    assert_eq!(data["aspect_ratio"], "3:4");
    assert_eq!(data["rooms"], "local");
    let uses = app.get(&format!("/v1/links/{live}"), &acct.key).await;
    assert_eq!(uses.body["link"]["uses"], 0, "a page view spends no use");

    let portrait = app
        .client
        .get(app.url(&format!("/s/{live}/portrait")))
        .send()
        .await
        .unwrap();
    assert_eq!(portrait.status(), 200);
    assert_eq!(portrait.headers()["content-type"], "image/png");
    let bytes = portrait.bytes().await.unwrap();
    assert!(
        image::load_from_memory(&bytes).is_ok(),
        "the portrait is an image"
    );

    // The page's files: the right types; the named version is cached for good, others revalidate.
    for (name, kind) in [("room.js", "text/javascript"), ("style.css", "text/css")] {
        let url = p.asset(name);
        let r = app.client.get(app.url(&url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let again = app
            .client
            .get(app.url(&format!("/static/{name}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["cache-control"], "no-cache");
    }
    let r = page(&app, "/static/nothing.js").await;
    assert_eq!(r.status, 404);

    // Unknown and malformed ids.
    for path in [
        "/s/lnk_doesnotexist0000000000",
        "/s/not-a-link",
        "/s/lnk_%3Cscript%3E",
    ] {
        assert_notice(&page(&app, path).await, 404, "This link does not exist");
    }
    let r = page(&app, "/s/lnk_doesnotexist0000000000/portrait").await;
    assert_eq!(r.status, 404);

    // Used up: one use, spent by a start.
    let once = make_link(Some(1)).await;
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": once}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_notice(&page(&app, &format!("/s/{once}")).await, 403, "used up");
    assert!(page(&app, &format!("/s/{once}"))
        .await
        .body
        .contains("once"));

    // Revoked: 410 and a sentence; the portrait is gone too, and a start is refused and counted.
    let revoked = make_link(None).await;
    app.delete(&format!("/v1/links/{revoked}"), &acct.key).await;
    let p = page(&app, &format!("/s/{revoked}")).await;
    assert_notice(&p, 410, "Its owner revoked it");
    assert!(
        !p.body.contains("room.js"),
        "a closed link's page runs no script"
    );
    assert_eq!(
        page(&app, &format!("/s/{revoked}/portrait")).await.status,
        410
    );
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": revoked}).to_string(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (403, "link_inactive"));

    // The agent deleted under a live link.
    let orphan = make_link(None).await;
    app.delete(&format!("/v1/agent/{agent}"), &acct.key).await;
    assert_notice(
        &page(&app, &format!("/s/{orphan}")).await,
        404,
        "has been deleted",
    );

    let metrics = app.metrics().await;
    for line in [
        r#"avs_web_page_views_total{outcome="ok",page="room"} 1"#,
        r#"avs_web_page_views_total{outcome="not_found",page="room"} 3"#,
        r#"avs_web_page_views_total{outcome="exhausted",page="room"} 2"#,
        r#"avs_web_page_views_total{outcome="revoked",page="room"} 1"#,
        r#"avs_web_page_views_total{outcome="agent_gone",page="room"} 1"#,
        r#"avs_link_start_failures_total{reason="link_inactive"} 1"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
}

/// The console's token opens one session's control and preview channels, for its account only.
async fn console_token_opens_one_session(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let other_id = app.started_session(&acct.key, &agent).await;

    let r = app
        .post(&format!("/v1/sessions/{id}/token"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body["expires_in"], 600);
    let token = r.body["token"].as_str().unwrap().to_string();

    let mut ws = connect(
        &app,
        &format!("/v1/sessions/{id}/control?token={token}"),
        None,
    )
    .await
    .expect("the token opens the control channel");
    let (status, _) = ws.until("status").await;
    assert_eq!(
        (status["session_id"].as_str(), status["state"].as_str()),
        (Some(id.as_str()), Some("live"))
    );
    connect(
        &app,
        &format!("/v1/sessions/{id}/preview?token={token}"),
        None,
    )
    .await
    .expect("and the preview");
    assert_eq!(
        connect(
            &app,
            &format!("/v1/sessions/{other_id}/control?token={token}"),
            None
        )
        .await
        .err(),
        Some(403),
        "and no other session"
    );

    let stranger = app.account(1, 1.0, 0).await;
    let r = app
        .post(
            &format!("/v1/sessions/{id}/token"),
            &stranger.key,
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (404, "session_not_found"));
    let r = app
        .post_raw(&format!("/v1/sessions/{id}/token"), None, "{}")
        .await;
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
}

async fn console_page(db: Db) {
    let app = spawn_app(db).await;
    let p = page(&app, "/console").await;
    assert_eq!(p.status, 200);
    assert!(p.header("content-type").starts_with("text/html"));
    assert_eq!(p.header("x-frame-options"), "DENY");
    assert!(p.body.contains(r#"<label for="api-key">API key</label>"#));
    let js = p.asset("console.js");
    let r = app.client.get(app.url(&js)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sessionStorage"));
    assert!(app
        .metrics()
        .await
        .contains(r#"avs_web_page_views_total{outcome="ok",page="console"} 1"#));
}

/// With LiveKit, the page plays through livekit-client, which the server serves from disk (or
/// says it cannot).
async fn livekit_client_from_disk(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("lk.js");
    let present = bundle.display().to_string();
    let lk = |s: &mut avatar_supervisor::config::Settings| {
        s.livekit.url = "http://127.0.0.1:9".into();
        s.livekit.api_key = "key".into();
        s.livekit.api_secret = avatar_supervisor::config::Secret::new("secret".repeat(6));
    };
    let app = spawn_app_with(db, |s| {
        lk(s);
        s.web.livekit_client = present.clone();
    })
    .await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app
        .post("/v1/links", &acct.key, json!({"agent_id": agent}))
        .await;
    let link = r.body["link"]["link_id"].as_str().unwrap().to_string();

    // Not there yet: the page says why media cannot play, and the file is a 404 that says so.
    let data = page(&app, &format!("/s/{link}")).await.data();
    assert_eq!(data["rooms"], "livekit");
    assert!(data["livekit_client"].is_null());
    let problem = data["livekit_client_problem"].as_str().unwrap();
    assert!(
        problem.contains("livekit-client") && problem.contains("make setup"),
        "{problem}"
    );
    let r = page(&app, "/static/livekit-client.umd.js").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("make setup"), "{}", r.body);

    std::fs::write(&bundle, "window.LivekitClient = {};").unwrap();
    let data = page(&app, &format!("/s/{link}")).await.data();
    let url = data["livekit_client"]
        .as_str()
        .expect("a bundle URL")
        .to_string();
    assert!(data["livekit_client_problem"].is_null());
    let r = app.client.get(app.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(r.text().await.unwrap(), "window.LivekitClient = {};");
}

on_both_databases!(
    room_page_in_every_state,
    console_token_opens_one_session,
    console_page,
    livekit_client_from_disk
);
