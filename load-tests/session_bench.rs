//! Live-control and session benchmark against the real server (built in-process on port 0, SQLite
//! in a temp dir, the built-in renderer, local TTS), driven over real HTTP and WebSockets.
//! Prints p50/p99 and throughput of:
//! - time to first frame: `POST /v1/sessions` sent → first JPEG on the session's preview;
//! - WebSocket `ping → pong` and `speak → ack` round trips with `--clients` clients connected;
//! - REST fan-out (`POST /v1/agent/{code}/speak` and `/add-context`) to `--sessions` live
//!   sessions, then to `--fanout` live sessions.
//!
//! ```text
//! make bench-sessions                 # or:
//! cargo run --release --example session_bench -- [--assets .setup] [--clients 100]
//!     [--sessions 100] [--fanout 1000] [--rounds 200]
//! ```

#[path = "support/mod.rs"]
mod support;

use support::{arg, report};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use avatar_supervisor::app::Application;
use avatar_supervisor::config::Settings;
use avatar_supervisor::store::accounts::NewAccount;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Bench {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Bench {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .json(&body)
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    async fn ws(&self, path: &str) -> Socket {
        let mut request = format!("{}{path}", self.base.replacen("http://", "ws://", 1))
            .into_client_request()
            .expect("ws url");
        request
            .headers_mut()
            .insert("x-api-key", self.key.parse().expect("key header"));
        tokio_tungstenite::connect_async(request)
            .await
            .expect("ws connect")
            .0
    }

    async fn session(&self, agent: &str) -> (String, String) {
        let r = self.post("/v1/sessions", json!({"agent_id": agent})).await;
        (
            r["session_id"]
                .as_str()
                .expect("session started")
                .to_string(),
            r["participant_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

/// Waits for the next text frame of `kind`.
async fn until(socket: &mut Socket, kind: &str) {
    while let Some(Ok(msg)) = socket.next().await {
        if let Message::Text(t) = msg {
            if serde_json::from_str::<Value>(&t).is_ok_and(|v| v["type"] == kind) {
                return;
            }
        }
    }
    panic!("socket closed while waiting for {kind}");
}

#[actix_web::main]
async fn main() {
    let assets = PathBuf::from(arg("--assets", ".setup".to_string()));
    let clients: usize = arg("--clients", 100);
    let sessions: usize = arg("--sessions", 100);
    let fanout: usize = arg("--fanout", 1000);
    let rounds: usize = arg("--rounds", 200);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::defaults().expect("defaults");
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.media.onnxruntime = assets.join("libonnxruntime.so").display().to_string();
    settings.media.face_model = assets.join("models/centerface.onnx").display().to_string();
    settings.render.slots_per_device = fanout.max(sessions) + 64;
    settings.sessions.idle_timeout_seconds = 3600;
    let app = Application::build(settings).await.expect("server");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    actix_web::rt::spawn(app.run_until_stopped());
    let created = state
        .store
        .create_account(NewAccount {
            name: "bench".into(),
            concurrency_limit: (fanout + sessions + 64) as i64,
            balance_ms: 1_000_000_000,
            credits: 10_000,
            webhook_url: None,
            max_session_seconds: None,
        })
        .await
        .expect("account");
    let bench = Bench {
        base,
        key: created.api_key,
        http: avatar_supervisor::net::http_client(Duration::from_secs(60)),
    };
    let portrait = std::fs::read(assets.join("images/astronaut.png")).expect("astronaut.png");
    let image = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, portrait);
    let agent = bench
        .post("/v1/agent/generate", json!({"image": image}))
        .await["agent_id"]
        .as_str()
        .expect("agent")
        .to_string();
    loop {
        let status = bench
            .http
            .get(format!("{}/v1/agent/status/{agent}", bench.base))
            .header("x-api-key", &bench.key)
            .send()
            .await
            .expect("status")
            .json::<Value>()
            .await
            .expect("json");
        match status["data"]["status"].as_str() {
            Some("ready") => break,
            Some("failed") => panic!("generation failed: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    println!("server {} ready; agent {agent}", bench.base);

    // Time to first frame.
    let mut firsts = Vec::new();
    let wall = Instant::now();
    for _ in 0..20 {
        let t0 = Instant::now();
        let (id, _) = bench.session(&agent).await;
        let mut preview = bench.ws(&format!("/v1/sessions/{id}/preview")).await;
        while let Some(Ok(msg)) = preview.next().await {
            if matches!(&msg, Message::Binary(b) if b.first() == Some(&0x01)) {
                firsts.push(t0.elapsed());
                break;
            }
        }
        bench
            .post(&format!("/v1/sessions/{id}/stop"), json!({}))
            .await;
    }
    report(
        "time to first frame (start request -> JPEG)",
        firsts,
        wall.elapsed(),
    );

    // WebSocket round trips with `clients` clients connected to one session.
    let (id, _) = bench.session(&agent).await;
    let mut sockets = Vec::new();
    for _ in 0..clients {
        let mut s = bench.ws(&format!("/v1/sessions/{id}/control")).await;
        until(&mut s, "status").await;
        sockets.push(s);
    }
    // Every client at once: latency under load.
    for (kind, frame, answer) in [
        ("ping -> pong", json!({"type": "ping"}), "pong"),
        (
            "speak -> ack",
            json!({"type": "speak", "text": "Hi.", "interrupt": true}),
            "ack",
        ),
    ] {
        let wall = Instant::now();
        let per_client = (rounds * 10 / clients).max(5);
        let tasks = sockets.drain(..).map(|mut socket| {
            let frame = frame.to_string();
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    socket
                        .send(Message::Text(frame.clone().into()))
                        .await
                        .expect("send");
                    until(&mut socket, answer).await;
                    times.push(t.elapsed());
                }
                (socket, times)
            })
        });
        let mut all = Vec::new();
        for (socket, times) in futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("client task"))
        {
            sockets.push(socket);
            all.extend(times);
        }
        report(
            &format!("WebSocket {kind}, all {clients} clients at once"),
            all,
            wall.elapsed(),
        );
    }
    // One client's round trips while the others stay connected, reading what the session
    // broadcasts to them (as live clients do) in the background.
    let mut probe = sockets.pop().expect("a client");
    let drainers: Vec<_> = sockets
        .drain(..)
        .map(|mut socket| {
            tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} })
        })
        .collect();
    for (kind, frame, answer) in [
        ("ping -> pong", json!({"type": "ping"}), "pong"),
        (
            "speak -> ack",
            json!({"type": "speak", "text": "Hi.", "interrupt": true}),
            "ack",
        ),
    ] {
        let wall = Instant::now();
        let mut times = Vec::new();
        for _ in 0..rounds * 5 {
            let t = Instant::now();
            probe
                .send(Message::Text(frame.to_string().into()))
                .await
                .expect("send");
            until(&mut probe, answer).await;
            times.push(t.elapsed());
        }
        report(
            &format!("WebSocket {kind}, one client ({clients} connected)"),
            times,
            wall.elapsed(),
        );
    }
    for drainer in drainers {
        drainer.abort();
    }
    drop(probe);
    bench
        .post(&format!("/v1/sessions/{id}/stop"), json!({}))
        .await;

    // REST fan-out to `sessions`, then `fanout`, live sessions of one agent.
    let mut live = Vec::new();
    for target in [sessions, fanout] {
        while live.len() < target {
            live.push(bench.session(&agent).await.0);
        }
        for (path, body, n) in [
            ("speak", json!({"message": "Hello everyone."}), 10),
            (
                "add-context",
                json!({"context": "The sale ends Friday."}),
                rounds.min(100),
            ),
        ] {
            let mut times = Vec::new();
            let wall = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                let r = bench
                    .post(&format!("/v1/agent/{agent}/{path}"), body.clone())
                    .await;
                times.push(t.elapsed());
                assert_eq!(r["delivered_to_rooms"], target, "{r}");
            }
            report(
                &format!("REST {path} fan-out to {target} live sessions"),
                times,
                wall.elapsed(),
            );
            // Let the voices' speech start and be cut before the next measurement.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for id in live {
        bench
            .post(&format!("/v1/sessions/{id}/stop"), json!({}))
            .await;
    }
}
