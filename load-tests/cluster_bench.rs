//! Several nodes as one service: `--nodes` (3) servers in this process on one fresh PostgreSQL
//! database and the local NATS, `--sessions` (999) live sessions of one agent spread over them.
//! Prints p50/p99 and throughput of:
//! - a control round trip to one session (`POST /v1/agent/{code}/add-context` with its `room_id`)
//!   sent to the session's own node, then to another node (forwarded over NATS);
//! - a fan-out to every session on every node (`add-context` without `room_id`), through one node;
//! - failover: one more node, the real binary (`--binary`), runs `--failover` (200) sessions and is
//!   killed with `-9`; the time from the kill to every one of them ended `node_lost` and billed
//!   by the others (heartbeat timeout `--lost-after`, 3 s; that node settles every second);
//!
//! and the process's CPU and memory.
//!
//! ```text
//! make bench-cluster                  # or:
//! cargo build --release --bin avatar-supervisor --example cluster_bench
//! target/release/examples/cluster_bench [--assets .setup] [--nodes 3] [--sessions 999]
//!     [--rounds 300] [--failover 200] [--lost-after 3]
//!     [--binary target/release/avatar-supervisor]
//!     [--postgres postgres://postgres@127.0.0.1:5432/postgres] [--nats nats://127.0.0.1:4222]
//! ```

#[path = "support/mod.rs"]
mod support;

use support::{arg, report};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use avatar_supervisor::app::Application;
use avatar_supervisor::config::Settings;
use avatar_supervisor::store::accounts::NewAccount;
use serde_json::{json, Value};

struct Node {
    base: String,
}

#[actix_web::main]
async fn main() {
    let assets = PathBuf::from(arg("--assets", ".setup".to_string()));
    let nodes: usize = arg("--nodes", 3);
    let sessions: usize = arg("--sessions", 999);
    let rounds: usize = arg("--rounds", 300);
    let postgres: String = arg(
        "--postgres",
        "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
    );
    let nats: String = arg("--nats", "nats://127.0.0.1:4222".to_string());
    let failover: usize = arg("--failover", 200);
    let lost_after: u64 = arg("--lost-after", 3);
    let binary: String = arg("--binary", "target/release/avatar-supervisor".to_string());

    let url = support::fresh_postgres(&postgres, "avs_cluster").await;
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut up = Vec::new();
    let mut state = None;
    for i in 0..nodes {
        let mut settings = Settings::defaults().expect("defaults");
        settings.server.bind = "127.0.0.1:0".into();
        settings.server.data_dir = dir.path().to_path_buf();
        settings.server.node_id = format!("bench_{name}_{i}");
        settings.database.url = url.clone();
        settings.cluster.nats_url = nats.clone();
        settings.cluster.subject_prefix = format!("bench_{name}");
        settings.sessions.node_lost_after_seconds = lost_after;
        // Heartbeats (checkpoints) every second, well within the heartbeat timeout.
        settings.billing.checkpoint_seconds = 1;
        settings.media.onnxruntime = assets.join("libonnxruntime.so").display().to_string();
        settings.media.face_model = assets.join("models/centerface.onnx").display().to_string();
        settings.render.slots_per_device = sessions / nodes + 64;
        settings.sessions.idle_timeout_seconds = 3600;
        settings.limits.generate_per_ip = 0;
        let app = Application::build(settings).await.expect("server");
        up.push(Node {
            base: format!("http://127.0.0.1:{}", app.port()),
        });
        state.get_or_insert_with(|| app.state().clone());
        actix_web::rt::spawn(app.run_until_stopped());
    }
    let state = state.expect("a node");
    let key = state
        .store
        .create_account(NewAccount {
            name: "bench".into(),
            concurrency_limit: (sessions + failover) as i64 + 64,
            balance_ms: 1_000_000_000,
            credits: 10_000,
            webhook_url: None,
            max_session_seconds: None,
        })
        .await
        .expect("account")
        .api_key;
    let http = avatar_supervisor::net::http_client(Duration::from_secs(60));
    let post = |base: &str, path: &str, body: Value| {
        let request = http
            .post(format!("{base}{path}"))
            .header("x-api-key", &key)
            .json(&body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            assert!(status.is_success(), "{status}: {body}");
            body
        }
    };
    let portrait = std::fs::read(assets.join("images/astronaut.png")).expect("astronaut.png");
    let image = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, portrait);
    let agent = post(&up[0].base, "/v1/agent/generate", json!({"image": image})).await["agent_id"]
        .as_str()
        .expect("agent")
        .to_string();
    loop {
        let status: Value = http
            .get(format!("{}/v1/agent/status/{agent}", up[0].base))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        match status["data"]["status"].as_str() {
            Some("ready") => break,
            Some("failed") => panic!("generation failed: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }

    // Sessions spread round-robin over the nodes, eight starts at a time.
    let started = Instant::now();
    let mut rooms: Vec<(usize, String)> = Vec::new();
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(8) {
        let starts = chunk.iter().map(|i| {
            let node = i % nodes;
            let post = &post;
            let base = up[node].base.clone();
            let agent = agent.clone();
            async move {
                let body = post(&base, "/v1/sessions", json!({"agent_id": agent})).await;
                (node, body["room_name"].as_str().expect("room").to_string())
            }
        });
        rooms.extend(futures_util::future::join_all(starts).await);
    }
    println!(
        "{nodes} nodes, {} live sessions of one agent (started in {:.1} s)",
        rooms.len(),
        started.elapsed().as_secs_f64()
    );

    let mut same = Vec::new();
    let mut other = Vec::new();
    let (mut wall_same, mut wall_other) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let (owner, room) = &rooms[round % rooms.len()];
        for (via, times, wall) in [
            (*owner, &mut same, &mut wall_same),
            ((*owner + 1) % nodes, &mut other, &mut wall_other),
        ] {
            let t = Instant::now();
            let body = post(
                &up[via].base,
                &format!("/v1/agent/{agent}/add-context"),
                json!({"context": "A fact.", "room_id": room}),
            )
            .await;
            assert_eq!(body["delivered_to_rooms"], 1, "{body}");
            times.push(t.elapsed());
            *wall += t.elapsed();
        }
    }
    println!("control round trip to one session (add-context with room_id):");
    report("sent to the session's own node", same, wall_same);
    report(
        "sent to another node (forwarded over NATS)",
        other,
        wall_other,
    );

    let mut fanout = Vec::new();
    let t0 = Instant::now();
    let cpu0 = support::cpu_seconds(std::process::id());
    for _ in 0..(rounds / 10).max(10) {
        let t = Instant::now();
        let body = post(
            &up[0].base,
            &format!("/v1/agent/{agent}/add-context"),
            json!({"context": "Everyone hears this."}),
        )
        .await;
        assert_eq!(body["delivered_to_rooms"], rooms.len(), "{body}");
        fanout.push(t.elapsed());
    }
    let wall = t0.elapsed();
    let cpu = (support::cpu_seconds(std::process::id()) - cpu0) / wall.as_secs_f64() * 100.0;
    report(
        &format!(
            "fan-out to {} sessions on {nodes} nodes, via one",
            rooms.len()
        ),
        fanout,
        wall,
    );
    println!(
        "  process (all {nodes} nodes and this client): RSS {:.0} MiB, CPU {cpu:.0} % of a core during the fan-outs",
        support::rss_mib(std::process::id())
    );

    if failover > 0 {
        let client = Client {
            http: http.clone(),
            key: key.clone(),
        };
        let doomed = Doomed {
            binary: &binary,
            dir: dir.path(),
            url: &url,
            nats: &nats,
            prefix: &format!("bench_{name}"),
            assets: &assets,
        };
        failover_phase(
            &client,
            &up[0].base,
            doomed,
            failover,
            lost_after,
            rooms.len(),
            &agent,
        )
        .await;
    }
}

/// The benchmark's HTTP client and API key.
struct Client {
    http: reqwest::Client,
    key: String,
}

impl Client {
    async fn call(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert!(status.is_success(), "{status}: {body}");
        body
    }
}

/// How to run the node that is killed: the real binary, on the cluster's database and NATS.
struct Doomed<'a> {
    binary: &'a str,
    dir: &'a std::path::Path,
    url: &'a str,
    nats: &'a str,
    prefix: &'a str,
    assets: &'a std::path::Path,
}

/// Kills a node running `sessions` sessions with `-9` and times the others' failover, asking
/// through `via`; `live_elsewhere` sessions run on the other nodes.
async fn failover_phase(
    client: &Client,
    via: &str,
    node: Doomed<'_>,
    sessions: usize,
    lost_after: u64,
    live_elsewhere: usize,
    agent: &str,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(node.binary)
        .arg("--data-dir")
        .arg(node.dir)
        .args(["--database-url", node.url])
        .args(["serve", "--bind", "127.0.0.1:0", "--allow-private-urls"])
        .env("AVS_SERVER__NODE_ID", format!("{}_doomed", node.prefix))
        .env("AVS_CLUSTER__NATS_URL", node.nats)
        .env("AVS_CLUSTER__SUBJECT_PREFIX", node.prefix)
        .env("AVS_BILLING__CHECKPOINT_SECONDS", "1")
        .env("AVS_SESSIONS__IDLE_TIMEOUT_SECONDS", "3600")
        .env("AVS_RENDER__SLOTS_PER_DEVICE", (sessions + 8).to_string())
        .env("ORT_DYLIB_PATH", node.assets.join("libonnxruntime.so"))
        .env(
            "AVS_MEDIA__FACE_MODEL",
            node.assets.join("models/centerface.onnx"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release --bin avatar-supervisor)",
                node.binary
            )
        });
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the node's first line");
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut ids = Vec::new();
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(8) {
        let starts = chunk.iter().map(|_| {
            let request = client
                .http
                .post(format!("{base}/v1/sessions"))
                .json(&json!({"agent_id": agent}));
            client.call(request)
        });
        for body in futures_util::future::join_all(starts).await {
            ids.push(body["session_id"].as_str().expect("session").to_string());
        }
    }
    // Every session has a checkpoint behind it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let killed = Instant::now();
    child.kill().expect("kill -9");
    let _ = child.wait();
    loop {
        let account = client
            .call(client.http.get(format!("{via}/v1/account")))
            .await;
        if account["live_sessions"].as_u64() == Some(live_elsewhere as u64) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "failover: {account}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = killed.elapsed();
    let mut exact = 0;
    for id in &ids {
        let row = client
            .call(client.http.get(format!("{via}/v1/sessions/{id}")))
            .await["data"]
            .clone();
        assert_eq!(row["end_reason"], "node_lost", "{row}");
        let at = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(row[field].as_str().unwrap_or_default())
                .map(|t| t.timestamp_millis())
                .unwrap_or_default()
        };
        let billed = row["billed_seconds"].as_i64().unwrap_or(-1);
        exact += (at("ended_at") - at("started_at") == billed * 1000) as usize;
    }
    println!(
        "failover: {sessions} sessions of a node killed with -9, all ended `node_lost` and their counts released {:.2} s after the kill (heartbeat timeout {lost_after} s, checkpoint 1 s); billed = ended_at - started_at for {exact}/{sessions}",
        failover.as_secs_f64()
    );
}
