//! `spawn_app`: the real server on port 0 against a fresh database (a temp SQLite file, or a new
//! PostgreSQL database per test), plus small clients for the dialects.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use avatar_supervisor::app::Application;
use avatar_supervisor::config::Settings;
use avatar_supervisor::state::AppState;
use avatar_supervisor::store::accounts::{CreatedKey, NewAccount};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs `$case(Db)` once per database, as `$case::sqlite` and `$case::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[actix_web::test]
            async fn sqlite() {
                super::$case($crate::helpers::Db::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$case($crate::helpers::Db::Postgres).await
            }
        }
    )*};
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    /// Kept so the temp dir (SQLite file, master key) lives as long as the app.
    _dir: tempfile::TempDir,
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,sqlx=warn")
                .with_test_writer()
                .try_init();
        }
    });
}

pub fn postgres_admin_url() -> String {
    std::env::var("AVS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn fresh_postgres() -> String {
    let admin = postgres_admin_url();
    let name = format!(
        "avs_test_{}",
        avatar_supervisor::domain::ids::random_token(12).to_lowercase()
    );
    let conn = Database::connect(&admin)
        .await
        .expect("PostgreSQL must run at AVS_TEST_DATABASE_URL (make test starts it)");
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin);
    format!("{base}/{name}")
}

/// A PNG of `w`×`h` with some texture.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// What `make setup` installs (onnxruntime, the face model, real photos): `make test` points
/// `AVS_TEST_ASSETS` at it; a plain `cargo test` finds it in the repository's `.setup/`.
pub fn assets() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("AVS_TEST_ASSETS")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.setup").into()),
    );
    assert!(
        dir.join("models/centerface.onnx").exists(),
        "{} lacks the face model: run `make setup`",
        dir.display()
    );
    dir
}

/// A real photo from scikit-image (`astronaut.png` and `camera.png` have one face each,
/// `coffee.png` and `chelsea.png`, a cat, none).
pub fn photo(name: &str) -> Vec<u8> {
    let path = assets().join("images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn base64_photo(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(photo(name))
}

/// Two copies of the astronaut side by side: a photo with two faces.
pub fn two_faces_png() -> Vec<u8> {
    let one = image::load_from_memory(&photo("astronaut.png"))
        .expect("astronaut")
        .to_rgb8();
    let mut two = image::RgbImage::new(one.width() * 2, one.height());
    image::imageops::replace(&mut two, &one, 0, 0);
    image::imageops::replace(&mut two, &one, one.width() as i64, 0);
    let mut out = std::io::Cursor::new(Vec::new());
    two.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

pub async fn spawn_app_with(db: Db, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::defaults().expect("defaults");
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.allow_private_urls = true;
    settings.server.shutdown_grace_seconds = 2;
    settings.database.max_connections = 8;
    settings.database.url = match db {
        Db::Sqlite => String::new(),
        Db::Postgres => fresh_postgres().await,
    };
    let assets = assets();
    settings.agents.default_avatar_image = assets.join("default-avatar.png").display().to_string();
    settings.media.onnxruntime = assets.join("libonnxruntime.so").display().to_string();
    settings.media.face_model = assets.join("models/centerface.onnx").display().to_string();
    settings.webhooks.poll_interval_ms = 50;
    settings.webhooks.initial_backoff_ms = 100;
    settings.sessions.room_check_interval_ms = 200;
    // Races of 50 starts test the quota, not render capacity (a test of its own sets it low).
    settings.render.slots_per_device = 64;
    // Every test client is 127.0.0.1: races of 50 starts test the quota, not the rate limits
    // (tests of their own set them).
    let l = &mut settings.limits;
    (
        l.link_start_per_ip,
        l.link_start_per_link,
        l.connect_per_ip,
        l.connect_per_agent,
    ) = (0, 0, 0, 0);
    (
        l.preflight_per_ip,
        l.generate_per_ip,
        l.generate_per_account,
    ) = (0, 0, 0);
    // Settle often: tests read billed seconds while sessions run.
    settings.billing.checkpoint_seconds = 1;
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: avatar_supervisor::net::http_client(Duration::from_secs(30)),
        state,
        _dir: dir,
    }
}

/// A response, read whole: status, headers and JSON body (Null if not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the API.md error shape and returns its code.
    #[track_caller]
    pub fn error_code(&self) -> &str {
        assert_eq!(
            self.body["success"], false,
            "not an error body: {}",
            self.body
        );
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {}",
            self.body
        );
        self.body["error_code"].as_str().expect("error_code")
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

pub struct Account {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn account(&self, concurrency: i64, minutes: f64, credits: i64) -> Account {
        let CreatedKey {
            account_id,
            key_id,
            api_key,
        } = self
            .state
            .store
            .create_account(NewAccount {
                name: "test".into(),
                concurrency_limit: concurrency,
                balance_ms: (minutes * 60_000.0) as i64,
                credits,
                webhook_url: None,
                max_session_seconds: None,
            })
            .await
            .expect("create account");
        Account {
            id: account_id,
            key: api_key,
            key_id,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        reply(
            self.client
                .get(self.url(path))
                .header("x-api-key", key)
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    /// Points the account's lifecycle webhooks at `url`.
    pub async fn set_account_webhook(&self, key: &str, url: &str) -> Reply {
        reply(
            self.client
                .patch(self.url("/v1/account"))
                .header("x-api-key", key)
                .json(&json!({ "webhook_url": url }))
                .send()
                .await
                .expect("PATCH"),
        )
        .await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        reply(
            self.client
                .post(self.url(path))
                .header("x-api-key", key)
                .json(&body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        reply(req.send().await.expect("POST")).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        reply(
            self.client
                .delete(self.url(path))
                .header("x-api-key", key)
                .send()
                .await
                .expect("DELETE"),
        )
        .await
    }

    /// Generates an agent from a real portrait and waits until it is ready.
    pub async fn ready_agent(&self, key: &str, extra: Value) -> String {
        let mut body =
            json!({"prompt": "You are helpful.", "image": base64_photo("astronaut.png")});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.post("/v1/agent/generate", key, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.body["agent_id"].as_str().expect("agent_id").to_string();
        let status = self.wait_agent(key, &id).await;
        assert_eq!(status["status"], "ready", "{status}");
        id
    }

    /// Polls an agent until `ready` or `failed`.
    pub async fn wait_agent(&self, key: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get(&format!("/v1/agent/status/{id}"), key).await;
            let data = r.body["data"].clone();
            if matches!(data["status"].as_str(), Some("ready" | "failed"))
                || Instant::now() > deadline
            {
                return data;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls a session until its status is `status`.
    pub async fn wait_session(&self, key: &str, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.get(&format!("/v1/sessions/{id}"), key).await;
            if r.body["data"]["status"] == status || Instant::now() > deadline {
                return r.body["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prometheus scrape, as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn account_info(&self, key: &str) -> Value {
        self.get("/v1/account", key).await.body
    }

    pub async fn start_session(&self, key: &str, agent: &str) -> Reply {
        self.post("/v1/sessions", key, json!({"agent_id": agent}))
            .await
    }

    /// Starts a session that must go live; its id.
    pub async fn started_session(&self, key: &str, agent: &str) -> String {
        let r = self.start_session(key, agent).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["session_id"]
            .as_str()
            .expect("session_id")
            .to_string()
    }
}

pub fn base64_png(w: u32, h: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(png(w, h))
}

/// Polls `check` every 25 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
