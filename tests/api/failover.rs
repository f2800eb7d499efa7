//! Nodes sharing a PostgreSQL database: a node that stops heartbeating (frozen with SIGSTOP, as a
//! dead or partitioned one looks to the others) has its sessions ended once by one of the others
//! with `node_lost`, billed to their last checkpoint, their counts released and their webhook sent
//! once; when it wakes, it stops its own copy of them quietly and nothing is resurrected.

use std::process::Command;
use std::time::Duration;

use avatar_supervisor::config::Settings;
use avs_rtc::test_client::{ClientConfig, TestClient};
use serde_json::json;

use crate::cli::{serve_command, spawn_serve};
use crate::helpers::*;
use crate::local_room::offer_with;
use crate::support::webhook_sink::WebhookSink;

fn signal(pid: u32, which: &str) {
    let ok = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {which} {pid}");
}

/// Starts a session on the node at `base` (the real binary) through `app`'s client; its id.
async fn start_on(app: &TestApp, base: &str, key: &str, agent: &str) -> String {
    let started = reply(
        app.client
            .post(format!("{base}/v1/sessions"))
            .header("x-api-key", key)
            .json(&json!({"agent_id": agent}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    started.body["session_id"].as_str().unwrap().to_string()
}

pub(crate) fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Node B (this process) and node A (the real binary) of one cluster, on one PostgreSQL and the
/// local NATS, with an account and a ready agent made on B.
/// Two nodes on one PostgreSQL database and NATS: B in this process, A the real binary; an
/// account that may run two sessions and a ready agent.
pub(crate) struct TwoNodes {
    pub(crate) b: TestApp,
    a: std::process::Child,
    pub(crate) a_base: String,
    pub(crate) key: String,
    pub(crate) agent: String,
}

impl TwoNodes {
    /// `tweak` adjusts B's settings, `a_env` adds to A's environment.
    pub(crate) async fn start(tweak: impl FnOnce(&mut Settings), a_env: &[(&str, &str)]) -> Self {
        let run = avatar_supervisor::domain::ids::random_token(8);
        let prefix = format!("avs_test_{run}");
        let b = spawn_app_with(Db::Postgres, |s| {
            s.cluster.nats_url = crate::cluster::NATS.into();
            s.cluster.subject_prefix = prefix.clone();
            s.cluster.advertise_interval_ms = 200;
            s.server.node_id = format!("node_b_{run}");
            tweak(s);
        })
        .await;
        let url = b.state.settings.database.url.clone();
        let dir = b.state.settings.server.data_dir.clone();
        let acct = b.account(2, 10.0, 1000).await;
        let agent = b.ready_agent(&acct.key, json!({})).await;
        let mut command = serve_command(&dir, &["--database-url", &url]);
        command
            .env("AVS_SERVER__NODE_ID", format!("node_a_{run}"))
            .env("AVS_CLUSTER__NATS_URL", crate::cluster::NATS)
            .env("AVS_CLUSTER__SUBJECT_PREFIX", &prefix)
            .env("AVS_CLUSTER__ADVERTISE_INTERVAL_MS", "200")
            .envs(a_env.iter().copied());
        let (a, a_base) = spawn_serve(command);
        Self {
            b,
            a,
            a_base,
            key: acct.key,
            agent,
        }
    }

    /// A session started on A through its own API.
    /// A's `/metrics`.
    pub(crate) async fn a_metrics(&self) -> String {
        let response = self.b.client.get(format!("{}/metrics", self.a_base));
        response.send().await.unwrap().text().await.unwrap()
    }

    async fn start_on_a(&self) -> String {
        start_on(&self.b, &self.a_base, &self.key, &self.agent).await
    }

    fn freeze_a(&self) {
        signal(self.a.id(), "-STOP");
    }

    /// Wakes A if frozen, and ends it.
    pub(crate) fn end_a(mut self) -> TestApp {
        signal(self.a.id(), "-CONT");
        self.a.kill().unwrap();
        let _ = self.a.wait();
        self.b
    }
}

#[actix_web::test]
async fn a_lost_nodes_sessions_are_ended_once_by_another() {
    const LOST_AFTER: u64 = 3;
    let sink = WebhookSink::start().await;
    let b = spawn_app_with(Db::Postgres, |s| {
        s.sessions.node_lost_after_seconds = LOST_AFTER;
        s.billing.checkpoint_seconds = 1;
        s.server.node_id = "node_b".into();
    })
    .await;
    let url = b.state.settings.database.url.clone();
    let dir = b.state.settings.server.data_dir.clone();
    let c = spawn_app_with(Db::Postgres, |s| {
        s.sessions.node_lost_after_seconds = LOST_AFTER;
        s.billing.checkpoint_seconds = 1;
        s.server.node_id = "node_c".into();
        s.database.url = url.clone();
        s.server.data_dir = dir.clone();
    })
    .await;
    let acct = b.account(2, 10.0, 1000).await;
    let r = b.set_account_webhook(&acct.key, &sink.url("/hooks")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let agent = b.ready_agent(&acct.key, json!({})).await;

    // Node A: the real binary on the same database (and master key), settling every second.
    let mut command = serve_command(&dir, &["--database-url", &url]);
    command
        .env("AVS_SERVER__NODE_ID", "node_a")
        .env("AVS_BILLING__CHECKPOINT_SECONDS", "1")
        .env(
            "AVS_SESSIONS__NODE_LOST_AFTER_SECONDS",
            LOST_AFTER.to_string(),
        );
    let (mut a, a_base) = spawn_serve(command);
    let id = start_on(&b, &a_base, &acct.key, &agent).await;
    let row = b.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(row["status"], "live");
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // A freezes: no heartbeat. B or C takes its session for lost.
    signal(a.id(), "-STOP");
    let ended = b
        .wait_session(&acct.key, &id, "stopped", Duration::from_secs(20))
        .await;
    assert_eq!(ended["end_reason"], "node_lost", "{ended}");
    let billed = ended["billed_seconds"].as_i64().unwrap();
    assert!(billed >= 1, "billed up to its last checkpoint: {ended}");
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(ended[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    assert_eq!(
        at("ended_at") - at("started_at"),
        billed * 1000,
        "it ends at its last checkpoint: billed seconds are live seconds"
    );
    let account = b.account_info(&acct.key).await;
    assert_eq!(account["live_sessions"], 0, "its count is released");
    assert_eq!(
        account["seconds_remaining"].as_i64().unwrap(),
        600 - billed,
        "the balance is debited exactly what was billed"
    );

    // A wakes: its checkpoint finds the row ended and stops its copy without a word.
    signal(a.id(), "-CONT");
    let a_metrics = || async {
        b.client
            .get(format!("{a_base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            metric(&a_metrics().await, "avs_sessions_live ") == 0.0
        })
        .await,
        "the woken node stops the session another ended"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = b.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(after["status"], "stopped");
    assert_eq!(after["end_reason"], "node_lost");
    assert_eq!(after["billed_seconds"], billed, "nothing more is billed");
    assert_eq!(after["ended_at"], ended["ended_at"]);
    assert_eq!(b.account_info(&acct.key).await["live_sessions"], 0);

    let stopped: Vec<_> = sink
        .received()
        .into_iter()
        .map(|r| r.json())
        .filter(|w| w["event"] == "session.stopped" && w["data"]["session_id"] == id.as_str())
        .collect();
    assert_eq!(stopped.len(), 1, "one session.stopped webhook: {stopped:?}");
    assert_eq!(stopped[0]["data"]["end_reason"], "node_lost");
    let lost = |text: String| {
        metric(
            &text,
            "avs_orphaned_sessions_ended_total{reason=\"node_lost\"}",
        )
    };
    assert_eq!(
        lost(b.metrics().await) + lost(c.metrics().await),
        1.0,
        "exactly one node ended it"
    );
    assert!(a_metrics()
        .await
        .contains("avs_sessions_ended_total{reason=\"node_lost\"} 1"));
    a.kill().unwrap();
    let _ = a.wait();
}

/// A channel on one node relaying a session of another (the real binary, on the same database and
/// NATS) closes with 1001 when that node falls silent (frozen: no pings, no frames).
#[actix_web::test]
async fn a_relayed_channel_closes_when_the_sessions_node_falls_silent() {
    let nodes = TwoNodes::start(
        |s| {
            // The channel's loop wakes more often than the relay's silence lasts: the silence is
            // counted from the last message, not from the last wake.
            s.ws.heartbeat_interval_ms = 300;
        },
        &[],
    )
    .await;
    let id = nodes.start_on_a().await;
    let mut ws = crate::control::connect(
        &nodes.b,
        &format!("/v1/sessions/{id}/control"),
        Some(&nodes.key),
    )
    .await
    .unwrap();
    let status = ws.next().await;
    assert_eq!(status["state"], "live", "A's session, relayed: {status}");
    ws.send(json!({"type": "add_context", "id": "c", "text": "Across processes."}))
        .await;
    let (ack, _) = ws.until("ack").await;
    assert_eq!(ack["delivered_to"], 1, "{ack}");

    nodes.freeze_a();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let frame = ws.next().await;
            if frame["type"] == "__closed" {
                break frame;
            }
        }
    })
    .await;
    nodes.end_a();
    let closed = closed.expect("the channel closes within 15 s of its node falling silent");
    assert_eq!(closed["code"], 1001, "{closed}");
}

/// An agent's channel on one node, whose agent has a session on another (the real binary, on the
/// same database and NATS): when that node falls silent, the channel stays open and announces the
/// session's end (`node_lost`) once a surviving node has written it.
#[actix_web::test]
async fn an_agent_channel_hears_the_end_of_a_silent_nodes_session() {
    const LOST_AFTER: &str = "3";
    let nodes = TwoNodes::start(
        |s| {
            s.sessions.node_lost_after_seconds = LOST_AFTER.parse().unwrap();
            s.billing.checkpoint_seconds = 1;
            s.ws.heartbeat_interval_ms = 300;
        },
        &[
            ("AVS_BILLING__CHECKPOINT_SECONDS", "1"),
            ("AVS_SESSIONS__NODE_LOST_AFTER_SECONDS", LOST_AFTER),
        ],
    )
    .await;
    let id = nodes.start_on_a().await;
    let key = nodes.key.clone();
    let mut ws = crate::control::connect(
        &nodes.b,
        &format!("/v1/agents/{}/control", nodes.agent),
        Some(&key),
    )
    .await
    .unwrap();
    // The channel taps A: a command reaches A's session through it.
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            ws.send(json!({"type": "add_context", "id": "c", "text": "Across processes."}))
                .await;
            let (ack, _) = ws.until("ack").await;
            if ack["delivered_to"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "the agent channel reaches A's session");
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    nodes.freeze_a();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frame = ws.next().await;
            if frame["type"] == "__closed" {
                break frame;
            }
            if frame["type"] == "status"
                && frame["session_id"] == id.as_str()
                && frame["state"] == "stopped"
            {
                break frame;
            }
        }
    })
    .await;
    let b = nodes.end_a();
    let ended =
        ended.expect("the session's end is announced within 20 s of its node falling silent");
    assert_eq!(ended["type"], "status", "the channel stays open: {ended}");
    assert_eq!(ended["end_reason"], "node_lost", "{ended}");
    let row = b.get(&format!("/v1/sessions/{id}"), &key).await.body["data"].clone();
    assert_eq!(
        row["status"], "stopped",
        "the survivor wrote it first: {row}"
    );
    assert_eq!(
        ended["billed_seconds"], row["billed_seconds"],
        "{ended} {row}"
    );
    // Once only (a few beats later), and the channel still answers.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ws.send(json!({"type": "add_context", "id": "d", "text": "Still here."}))
        .await;
    let mut before = Vec::new();
    let answer = loop {
        let frame = ws.next().await;
        assert_ne!(frame["type"], "__closed", "{before:?}");
        if frame["type"] == "ack" || frame["type"] == "error" {
            break frame;
        }
        before.push(frame);
    };
    assert_eq!(answer["id"], "d", "{answer}");
    assert!(
        !before
            .iter()
            .any(|f| f["type"] == "status" && f["session_id"] == id.as_str()),
        "the end is announced once: {before:?}"
    );
}

/// The room page's WebRTC on any node: a viewer's offer to one node for a session running on
/// another (the real binary, on the same database and NATS) is answered by the session's node,
/// whose media reaches the viewer; its DELETE goes there too. When that node falls silent, an
/// offer is `503 unavailable` with `retry_after_seconds`.
#[actix_web::test]
async fn a_viewer_on_one_node_watches_a_session_on_another() {
    let nodes = TwoNodes::start(|s| s.cluster.request_timeout_ms = 1_000, &[]).await;
    let id = nodes.start_on_a().await;
    let (b, key) = (&nodes.b, nodes.key.clone());
    let offer_to_b = |offer: String| {
        let key = ("x-api-key", key.clone());
        let id = id.clone();
        async move { offer_with(b, &id, key, &offer).await }
    };
    let (client, offer) = TestClient::new(ClientConfig::default());
    let (status, location, answer) = offer_to_b(offer).await;
    assert_eq!(status, 201, "B answers for A's session: {answer}");
    let location = location.expect("a Location for the viewer");
    let client = client.start(&answer);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while client.frames() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "A's frames reach a viewer that offered to B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_metrics = nodes.a_metrics().await;
    let connected = |text: &str| metric(text, "avs_rtc_connections_total{state=\"connected\"}");
    assert_eq!(connected(&a_metrics), 1.0, "the viewer is A's");
    let b_metrics = b.metrics().await;
    assert_eq!(connected(&b_metrics), 0.0, "not B's");
    assert_eq!(
        metric(
            &b_metrics,
            "avs_cluster_forwards_total{kind=\"rtc\",outcome=\"ok\"}"
        ),
        1.0,
        "B counts the offer it forwarded"
    );
    let leave = |path: String| {
        let request = b.client.delete(b.url(&path)).header("x-api-key", &key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(leave(location.clone()).await, 204, "B forwards the DELETE");
    assert_eq!(leave(location).await, 404, "a viewer leaves once");
    drop(client.stop());

    // A falls silent: an offer through B is refused for now, nothing held.
    nodes.freeze_a();
    let (_, offer) = TestClient::new(ClientConfig::default());
    let (status, _, body) = offer_to_b(offer).await;
    nodes.end_a();
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_code"], "unavailable", "{body}");
    assert!(
        body["retry_after_seconds"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
}
