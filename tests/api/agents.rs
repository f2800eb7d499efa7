use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;

/// Serves `bytes` at `/img` on a loopback port (an image host for URL generation).
async fn serve_bytes(bytes: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = web::Data::new(bytes);
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/img",
            web::get().to(|d: web::Data<Vec<u8>>| async move {
                HttpResponse::Ok()
                    .content_type("image/png")
                    .body(d.get_ref().clone())
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    format!("http://127.0.0.1:{port}/img")
}

async fn generate_poll_get_and_assets(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 1.0, 1000).await;
    let r = app
        .post(
            "/v1/agent/generate",
            &acct.key,
            json!({"prompt": "Be kind.", "image": base64_photo("astronaut.png"), "name": "Ada", "aspect_ratio": "9:16"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["message"], "Agent generation started");
    assert_eq!(r.body["status"], "processing");
    let id = r.body["agent_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("agnt_"));
    assert_eq!(app.account_info(&acct.key).await["credits"], 750);

    let data = app.wait_agent(&acct.key, &id).await;
    assert_eq!(data["status"], "ready", "{data}");
    assert_eq!(data["progress"], 1.0);
    assert_eq!(data["current_step"], "lip_created");
    assert_eq!(data["system_prompt"], "Be kind.");
    assert_eq!(data["name"], "Ada");
    assert!(data["error_message"].is_null());

    let got = app.get(&format!("/v1/agent/{id}"), &acct.key).await;
    assert_eq!(got.body["data"]["agent_id"], id.as_str());
    let image_url = got.body["data"]["image_url"].as_str().unwrap().to_string();
    assert!(image_url.starts_with(&app.base), "{image_url}");
    // The image is served with the key, byte for byte, and to nobody else.
    let bytes = app
        .client
        .get(&image_url)
        .header("x-api-key", &acct.key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), photo("astronaut.png").as_slice());

    // The model: the face framed at the agent's 9:16, its landmarks and mouth, and the crop.
    let fetch = |url: String| {
        let client = app.client.clone();
        let key = acct.key.clone();
        async move {
            let r = client
                .get(&url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            let kind = r.headers()["content-type"].to_str().unwrap().to_string();
            (kind, r.bytes().await.unwrap())
        }
    };
    let (kind, model) = fetch(got.body["data"]["model_url"].as_str().unwrap().into()).await;
    assert_eq!(kind, "application/json");
    let model: serde_json::Value = serde_json::from_slice(&model).unwrap();
    assert_eq!(model["aspect_ratio"], "9:16");
    let (w, h) = (
        model["width"].as_f64().unwrap(),
        model["height"].as_f64().unwrap(),
    );
    assert!((w / h - 9.0 / 16.0).abs() < 0.01, "{model}");
    let lm = &model["landmarks"];
    let x = |p: &str| lm[p][0].as_f64().unwrap();
    let y = |p: &str| lm[p][1].as_f64().unwrap();
    assert!(
        x("left_eye") < x("right_eye") && x("mouth_left") < x("mouth_right"),
        "{model}"
    );
    assert!(
        y("left_eye") < y("nose") && y("nose") < y("mouth_left"),
        "{model}"
    );
    for p in ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"] {
        assert!(
            x(p) > 0.0 && x(p) < w && y(p) > 0.0 && y(p) < h,
            "{p} outside: {model}"
        );
    }
    assert!(model["mouth"]["region"]["w"].as_f64().unwrap() > 0.0);
    // The face mesh: 468 points, the lips' inner edges between the mouth's corners and in its
    // region, the upper above the lower, each eye's lids about the detector's eye.
    assert_eq!(model["version"], 2, "{model}");
    assert_eq!(model["mesh"]["status"], "ok", "{}", model["mesh"]);
    let mesh = model["mesh"]["points"].as_array().unwrap();
    assert_eq!(mesh.len(), 468);
    let at = |i: usize| (mesh[i][0].as_f64().unwrap(), mesh[i][1].as_f64().unwrap());
    let region = &model["mouth"]["region"];
    let (rx, ry) = (region["x"].as_f64().unwrap(), region["y"].as_f64().unwrap());
    let (rw, rh) = (region["w"].as_f64().unwrap(), region["h"].as_f64().unwrap());
    for lip in [13, 14, 0, 17] {
        let (px, py) = at(lip);
        assert!(
            px > x("mouth_left") && px < x("mouth_right"),
            "lip point {lip} at {px} is not between the corners"
        );
        assert!(
            px > rx && px < rx + rw && py > ry && py < ry + rh,
            "lip point {lip} ({px}, {py}) outside the mouth region"
        );
    }
    assert!(at(0).1 < at(13).1 && at(13).1 <= at(14).1 && at(14).1 < at(17).1);
    let eye_distance = x("right_eye") - x("left_eye");
    for (lids, eye) in [([159, 145], "left_eye"), ([386, 374], "right_eye")] {
        let (ux, uy) = at(lids[0]);
        let (_, ly) = at(lids[1]);
        assert!(uy < ly, "{eye}: upper lid below the lower");
        let (ex, ey) = (x(eye), y(eye));
        assert!(
            (ux - ex).abs() < 0.25 * eye_distance && (uy - ey).abs() < 0.25 * eye_distance,
            "{eye}: lid ({ux}, {uy}) far from the detector's eye ({ex}, {ey})"
        );
    }
    let avatar_url = got.body["data"]["avatar_image_url"].as_str().unwrap();
    assert_ne!(avatar_url, image_url);
    let (kind, crop) = fetch(avatar_url.into()).await;
    assert_eq!(kind, "image/png");
    let crop = image::load_from_memory(&crop).unwrap();
    assert_eq!((crop.width() as f64, crop.height() as f64), (w, h));
    let stranger = app.account(1, 1.0, 1000).await;
    let r = reply(
        app.client
            .get(&image_url)
            .header("x-api-key", &stranger.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        reply(app.client.get(&image_url).send().await.unwrap())
            .await
            .status,
        401
    );

    let list = app.get("/v1/agents", &acct.key).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/v1/agents", &stranger.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

async fn prompt_only_uses_the_default_avatar(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 1.0, 250).await;
    // The seed's own "Generate and poll" example, verbatim.
    let r = app
        .post(
            "/v1/agent/generate",
            &acct.key,
            json!({"prompt": "You are a friendly AI assistant."}),
        )
        .await;
    assert_eq!(r.status, 200);
    let data = app
        .wait_agent(&acct.key, r.body["agent_id"].as_str().unwrap())
        .await;
    assert_eq!(data["status"], "ready", "{data}");
    assert!(data["image_url"].is_string());
    assert_eq!(app.account_info(&acct.key).await["credits"], 0);
    // No credits left: 402 in bitHuman's spelling, and nothing created.
    let r = app
        .post("/v1/agent/generate", &acct.key, json!({"prompt": "x"}))
        .await;
    assert_eq!((r.status, r.error_code()), (402, "INSUFFICIENT_BALANCE"));
    assert_eq!(
        app.get("/v1/agents", &acct.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn failures_are_reported_and_refunded(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.agents.default_avatar_image = "/nonexistent/portrait.png".into()
    })
    .await;
    let acct = app.account(1, 1.0, 250).await;
    let cases = [
        (
            json!({"prompt": "x"}),
            "no image given and this server has no default avatar image",
        ),
        (
            json!({"image": base64_png(120, 90)}),
            "image too small: 120x90, need at least 256x256",
        ),
        (json!({"image": "aGVsbG8gd29ybGQ="}), "not an image"),
        (
            json!({"image": format!("data:image/png;base64,{}", base64_png(255, 400))}),
            "image too small: 255x400",
        ),
        (
            json!({"image": base64_photo("coffee.png")}),
            "no face detected",
        ),
        (
            json!({"image": base64_photo("chelsea.png")}),
            "no face detected",
        ),
        (json!({"image": base64_png(400, 300)}), "no face detected"),
        (
            json!({"image": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, two_faces_png())}),
            "2 faces detected",
        ),
    ];
    for (body, expected) in cases {
        let r = app.post("/v1/agent/generate", &acct.key, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let data = app
            .wait_agent(&acct.key, r.body["agent_id"].as_str().unwrap())
            .await;
        assert_eq!(data["status"], "failed");
        let message = data["error_message"].as_str().unwrap();
        assert!(message.contains(expected), "{message} !~ {expected}");
        // Refunded each time, so the same 250 credits pay for the next try.
        assert_eq!(app.account_info(&acct.key).await["credits"], 250);
    }
    let ledger = app.state.store.usage(&acct.id).await.unwrap();
    let refunds = ledger
        .iter()
        .filter(|l| l.kind == "credits" && l.amount == 250 && l.reason.contains("refund"))
        .count();
    assert_eq!(refunds, 8);
}

async fn image_urls_are_fetched_and_private_ones_refused(db: Db) {
    let url = serve_bytes(photo("camera.png")).await;
    let app = spawn_app(db).await;
    let acct = app.account(1, 1.0, 1000).await;
    let r = app
        .post("/v1/agent/generate", &acct.key, json!({"image": url}))
        .await;
    let data = app
        .wait_agent(&acct.key, r.body["agent_id"].as_str().unwrap())
        .await;
    assert_eq!(data["status"], "ready", "{data}");

    let strict = spawn_app_with(db, |s| s.server.allow_private_urls = false).await;
    let acct = strict.account(1, 1.0, 1000).await;
    let r = strict
        .post("/v1/agent/generate", &acct.key, json!({"image": url}))
        .await;
    assert_eq!((r.status, r.error_code()), (422, "VALIDATION_ERROR"));
    assert!(
        r.body["message"].as_str().unwrap().contains(".image"),
        "{}",
        r.body
    );
    assert_eq!(strict.account_info(&acct.key).await["credits"], 1000);
}

async fn custom_ids_updates_revisions_and_delete(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 1.0, 10_000).await;
    let id = app
        .ready_agent(&acct.key, json!({"agent_id": "A91XMB7113"}))
        .await;
    assert_eq!(id, "A91XMB7113");
    let r = app
        .post(
            "/v1/agent/generate",
            &acct.key,
            json!({"agent_id": "A91XMB7113"}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (409, "CONFLICT"));
    assert_eq!(
        app.account_info(&acct.key).await["credits"],
        9750,
        "a refused generate charges nothing"
    );
    let r = app
        .post(
            "/v1/agent/generate",
            &acct.key,
            json!({"agent_id": "no spaces!"}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (422, "VALIDATION_ERROR"));
    assert!(r.body["message"].as_str().unwrap().contains(".agent_id"));

    let r = app
        .post(
            &format!("/v1/agent/{id}"),
            &acct.key,
            json!({"system_prompt": "You sell things."}),
        )
        .await;
    assert_eq!(r.body, json!({"agent_code": id, "updated": true}));
    let got = app.get(&format!("/v1/agent/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(got["system_prompt"], "You sell things.");
    assert_eq!(got["revision"], "v2");
    let rev1 = app
        .state
        .store
        .agent_revision(&id, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rev1.system_prompt, "You are helpful.");

    let r = app
        .post(
            &format!("/v1/agent/{id}"),
            &acct.key,
            json!({"system_prompt": 5}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (422, "VALIDATION_ERROR"));
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains(".system_prompt"));
    assert_eq!(
        app.get(&format!("/v1/agent/{id}"), &acct.key).await.body["data"]["system_prompt"],
        "You sell things."
    );

    // Another tenant can neither see, change nor delete it.
    let other = app.account(1, 1.0, 1000).await;
    for r in [
        app.get(&format!("/v1/agent/{id}"), &other.key).await,
        app.get(&format!("/v1/agent/status/{id}"), &other.key).await,
        app.post(
            &format!("/v1/agent/{id}"),
            &other.key,
            json!({"system_prompt": "pwned"}),
        )
        .await,
        app.delete(&format!("/v1/agent/{id}"), &other.key).await,
    ] {
        assert_eq!((r.status, r.error_code()), (404, "AGENT_NOT_FOUND"));
    }
    assert_eq!(
        app.get(&format!("/v1/agent/{id}"), &acct.key).await.body["data"]["system_prompt"],
        "You sell things."
    );

    assert_eq!(
        app.delete(&format!("/v1/agent/{id}"), &acct.key)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/v1/agent/{id}"), &acct.key).await.status,
        404
    );
}

async fn bad_generate_bodies_change_nothing(db: Db) {
    let app = spawn_app_with(db, |s| s.server.max_body_bytes = 64 * 1024).await;
    let acct = app.account(1, 1.0, 1000).await;
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{not json", 400, "Malformed JSON"),
        ("[]", 422, "Invalid request body"),
        (r#"{"prompt": 42}"#, 422, ".prompt"),
        (r#"{"aspect_ratio": "4:5"}"#, 422, ".aspect_ratio"),
        (r#"{"allowed_origins": "x"}"#, 422, ".allowed_origins"),
        (
            r#"{"allowed_origins": ["ok.com", ""]}"#,
            422,
            ".allowed_origins[1]",
        ),
        (
            r#"{"voice_agent": {"provider": "Acme", "agent_id": "a"}}"#,
            422,
            ".voice_agent.provider",
        ),
        (
            r#"{"voice_agent": {"provider": "ElevenLabs", "agent_id": "a", "auth_method": "magic"}}"#,
            422,
            ".voice_agent.auth_method",
        ),
        (r#"{"image": "%%%not base64%%%"}"#, 422, ".image"),
        (r#"{"duration": -3}"#, 422, ".duration"),
    ];
    for (body, status, needle) in cases {
        let r = app
            .post_raw("/v1/agent/generate", Some(&acct.key), body.to_string())
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.error_code(), "VALIDATION_ERROR");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.body
        );
    }
    let huge = json!({"image": "A".repeat(100 * 1024)}).to_string();
    let r = app
        .post_raw("/v1/agent/generate", Some(&acct.key), huge)
        .await;
    assert_eq!((r.status, r.error_code()), (413, "PAYLOAD_TOO_LARGE"));
    assert_eq!(app.account_info(&acct.key).await["credits"], 1000);
    assert_eq!(
        app.get("/v1/agents", &acct.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// An agent made before the face mesh (model version 1, no `mesh`) gets it on its next start:
/// the session renders with it and the stored model (`model_url`) is upgraded, with no new
/// generation and no charge.
async fn an_agent_made_before_the_mesh_gets_it_on_its_next_start(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(2, 10.0, 1000).await;
    let id = app.ready_agent(&acct.key, json!({})).await;
    let credits = app.account_info(&acct.key).await["credits"].clone();
    // What a model of version 1 looked like: the same, less the mesh.
    let row = app.state.store.agent(&id).await.unwrap().unwrap();
    let asset_id = row.model_asset_id.clone().expect("a model asset");
    let stored = app.state.store.asset(&asset_id).await.unwrap().unwrap();
    let mut old: serde_json::Value = serde_json::from_slice(&stored.data).unwrap();
    assert_eq!(old["mesh"]["status"], "ok", "{}", old["mesh"]);
    old.as_object_mut().unwrap().remove("mesh");
    old["version"] = json!(1);
    let old_bytes = serde_json::to_vec(&old).unwrap();
    assert!(app
        .state
        .store
        .upgrade_model_asset(&asset_id, old_bytes)
        .await
        .unwrap());
    let got = app.get(&format!("/v1/agent/{id}"), &acct.key).await;
    let model_url = got.body["data"]["model_url"].as_str().unwrap().to_string();
    let model = || async {
        let r = app
            .client
            .get(&model_url)
            .header("x-api-key", &acct.key)
            .send()
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()
    };
    assert!(model().await.get("mesh").is_none());

    let session = app.started_session(&acct.key, &id).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            model().await["mesh"]["status"] == "ok"
        })
        .await,
        "the stored model was not upgraded: {}",
        model().await
    );
    let upgraded = model().await;
    assert_eq!(upgraded["version"], 2, "{upgraded}");
    assert_eq!(upgraded["mesh"]["points"].as_array().unwrap().len(), 468);
    // Everything else is as it was.
    for field in [
        "avatar_asset_id",
        "face",
        "landmarks",
        "mouth",
        "width",
        "height",
    ] {
        assert_eq!(upgraded[field], old[field], "{field}");
    }
    let r = app
        .post(
            &format!("/v1/sessions/{session}/stop"),
            &acct.key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // No generation ran again, and nothing was charged for it.
    assert_eq!(app.account_info(&acct.key).await["credits"], credits);
    let agent = app.get(&format!("/v1/agent/status/{id}"), &acct.key).await;
    assert_eq!(agent.body["data"]["status"], "ready", "{}", agent.body);
}

on_both_databases!(
    an_agent_made_before_the_mesh_gets_it_on_its_next_start,
    generate_poll_get_and_assets,
    prompt_only_uses_the_default_avatar,
    failures_are_reported_and_refunded,
    image_urls_are_fetched_and_private_ones_refused,
    custom_ids_updates_revisions_and_delete,
    bad_generate_bodies_change_nothing,
);
