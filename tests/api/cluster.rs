//! Several nodes as one service: two app instances on one PostgreSQL database and the local NATS
//! (127.0.0.1:4222). A stop or a speak/add-context fan-out that reaches another node than the
//! session's is forwarded to it; an owner that does not answer makes a stop 503.

use std::time::Duration;

use avatar_supervisor::config::Settings;
use serde_json::json;

use crate::helpers::*;

pub(crate) const NATS: &str = "nats://127.0.0.1:4222";

/// `n` nodes sharing a database, a master key and NATS, `tweak`ed by index. Node ids and the
/// subject prefix are unique to the call (tests run in parallel against one NATS server), so each
/// call's nodes are one service of their own.
async fn nodes(n: usize, tweak: impl Fn(&mut Settings, usize)) -> Vec<TestApp> {
    let run = avatar_supervisor::domain::ids::random_token(8);
    let setup = |s: &mut Settings, i: usize| {
        s.cluster.nats_url = NATS.into();
        s.cluster.subject_prefix = format!("avs_test_{run}");
        s.cluster.advertise_interval_ms = 200;
        s.server.node_id = format!("node_{i}_{run}");
        tweak(s, i);
    };
    let first = spawn_app_with(Db::Postgres, |s| setup(s, 0)).await;
    let url = first.state.settings.database.url.clone();
    let dir = first.state.settings.server.data_dir.clone();
    let mut all = vec![first];
    for i in 1..n {
        let node = spawn_app_with(Db::Postgres, |s| {
            setup(s, i);
            s.database.url = url.clone();
            s.server.data_dir = dir.clone();
        })
        .await;
        all.push(node);
    }
    // Each has heard every other's advert.
    let heard = eventually(Duration::from_secs(10), || async {
        all.iter()
            .all(|node| node.state.sessions.peers().len() == n - 1)
    })
    .await;
    assert!(heard, "the nodes hear each other");
    all
}

async fn two_nodes() -> (TestApp, TestApp) {
    let mut both = nodes(2, |_, _| {}).await;
    let b = both.pop().unwrap();
    (both.pop().unwrap(), b)
}

/// The node whose row runs session `id`.
async fn node_of(app: &TestApp, id: &str) -> String {
    app.state.store.session(id).await.unwrap().unwrap().node_id
}

/// Rewrites which node session `id`'s row says runs it.
async fn set_node(app: &TestApp, id: &str, node: &str) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(app.state.settings.database.url.as_str())
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "UPDATE sessions SET node_id = '{node}' WHERE id = '{id}'"
    ))
    .await
    .unwrap();
}

fn metric_line<'a>(metrics: &'a str, start: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(start))
}

#[actix_web::test]
async fn stop_and_fan_out_reach_sessions_on_another_node() {
    let (a, b) = two_nodes().await;
    let acct = a.account(4, 10.0, 1000).await;
    let agent = a.ready_agent(&acct.key, json!({})).await;
    let on_a = a.started_session(&acct.key, &agent).await;
    let on_b = b.started_session(&acct.key, &agent).await;

    // A fan-out through either node reaches both sessions.
    for node in [&a, &b] {
        let r = node
            .post(
                &format!("/v1/agent/{agent}/speak"),
                &acct.key,
                json!({"message": "Hello from any node."}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["delivered_to_rooms"], 2, "{:?}", r.body);
    }
    // `room_id` picks the one session, wherever it runs.
    let room = b.get(&format!("/v1/sessions/{on_a}"), &acct.key).await.body["data"]["room_name"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b
        .post(
            &format!("/v1/agent/{agent}/add-context"),
            &acct.key,
            json!({"context": "The user prefers short answers.", "room_id": room}),
        )
        .await;
    assert_eq!(r.body["delivered_to_rooms"], 1, "{:?}", r.body);

    // B stops A's session: A's actor ends it and B answers the ended row.
    let r = b
        .post(&format!("/v1/sessions/{on_a}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
    assert_eq!(r.body["data"]["end_reason"], "stopped_by_api");
    assert!(
        a.state.sessions.live(&on_a).await.unwrap().is_none(),
        "A's actor is gone"
    );
    let forwards = b.metrics().await;
    assert!(
        forwards.contains("avs_cluster_forwards_total{kind=\"stop\",outcome=\"ok\"} 1"),
        "{forwards}"
    );

    // Only B's session is left: a fan-out through A counts one.
    let r = a
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &acct.key,
            json!({"message": "Still here?"}),
        )
        .await;
    assert_eq!(r.body["delivered_to_rooms"], 1, "{:?}", r.body);
    let r = a
        .post(&format!("/v1/sessions/{on_b}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
    assert_eq!(a.account_info(&acct.key).await["live_sessions"], 0);
}

#[actix_web::test]
async fn a_stop_for_a_node_that_does_not_answer_is_503_and_changes_nothing() {
    let (a, b) = two_nodes().await;
    let acct = a.account(2, 10.0, 1000).await;
    let agent = a.ready_agent(&acct.key, json!({})).await;
    let id = a.started_session(&acct.key, &agent).await;
    // The row says another node runs it, one nobody answers for.
    set_node(&a, &id, "node_gone").await;
    let r = b
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.error_code(), "unavailable");
    assert!(
        !r.body["message"].as_str().unwrap().contains("node_gone"),
        "no internals"
    );
    let row = b.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(row["status"], "live", "nothing changed");
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("avs_cluster_forwards_total{kind=\"stop\",outcome=\"no_answer\"} 1"),
        "{metrics}"
    );
    // Its own node still stops it.
    let r = a
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
}

#[actix_web::test]
async fn a_start_on_a_full_node_is_placed_on_a_node_with_a_free_slot() {
    let all = nodes(2, |s, i| s.render.slots_per_device = [1, 2][i]).await;
    let (a, b) = (&all[0], &all[1]);
    let (a_id, b_id) = (a.state.node_id.clone(), b.state.node_id.clone());
    let acct = a.account(10, 10.0, 1000).await;
    let agent = a.ready_agent(&acct.key, json!({})).await;
    let here = a.started_session(&acct.key, &agent).await;
    assert_eq!(node_of(a, &here).await, a_id, "A's one slot");

    // A is full: its next starts go to B, with B's room access in the answer.
    let mut placed = Vec::new();
    for _ in 0..2 {
        let r = a.start_session(&acct.key, &agent).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body["participant_token"].is_string(), "{}", r.body);
        let id = r.body["session_id"].as_str().unwrap().to_string();
        assert_eq!(node_of(a, &id).await, b_id);
        assert!(b.state.sessions.live(&id).await.unwrap().is_some());
        placed.push(id);
    }
    // No node has a slot: `no_capacity`, and nothing is admitted.
    let r = a.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error_code(), "no_capacity");
    assert_eq!(a.account_info(&acct.key).await["live_sessions"], 3);
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("avs_cluster_forwards_total{kind=\"start\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    // Each node's slots and sessions, as the other hears them.
    let heard = eventually(Duration::from_secs(5), || async {
        let metrics = b.metrics().await;
        metric_line(
            &metrics,
            &format!("avs_cluster_node_free_slots{{node=\"{a_id}\"}}"),
        ) == Some(&*format!(
            "avs_cluster_node_free_slots{{node=\"{a_id}\"}} 0"
        )) && metric_line(
            &metrics,
            &format!("avs_cluster_node_live_sessions{{node=\"{b_id}\"}}"),
        ) == Some(&*format!(
            "avs_cluster_node_live_sessions{{node=\"{b_id}\"}} 2"
        ))
    })
    .await;
    assert!(heard, "{}", b.metrics().await);

    // A placed session stopped through A (forwarded to B) frees B's slot: the next start from A
    // is placed there again.
    let r = a
        .post(
            &format!("/v1/sessions/{}/stop", placed[0]),
            &acct.key,
            json!({}),
        )
        .await;
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
    let r = a.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let again = r.body["session_id"].as_str().unwrap().to_string();
    assert_eq!(node_of(a, &again).await, b_id);
    for id in [here, placed[1].clone(), again] {
        let r = b
            .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
            .await;
        assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
    }
    assert_eq!(a.account_info(&acct.key).await["live_sessions"], 0);
}

#[actix_web::test]
async fn racing_starts_on_three_nodes_never_pass_a_limit() {
    let all = nodes(3, |_, _| {}).await;
    let acct = all[0].account(4, 10.0, 1000).await;
    let agent = all[0].ready_agent(&acct.key, json!({})).await;
    let starts = (0..15).map(|i| all[i % 3].start_session(&acct.key, &agent));
    let replies = futures_util::future::join_all(starts).await;
    let admitted: Vec<&str> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        admitted.len(),
        4,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.error_code(), "concurrency_limit");
    }
    assert_eq!(all[1].account_info(&acct.key).await["live_sessions"], 4);
    for id in admitted {
        let r = all[2]
            .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
            .await;
        assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
    }
    assert_eq!(all[0].account_info(&acct.key).await["live_sessions"], 0);

    // A link's use_limit holds the same way: 12 racing link starts over the nodes, 3 win.
    let acct = all[0].account(50, 10.0, 1000).await;
    let agent = all[0].ready_agent(&acct.key, json!({})).await;
    let link = all[0]
        .post(
            "/v1/links",
            &acct.key,
            json!({"agent_id": agent, "use_limit": 3}),
        )
        .await
        .body["link"]["link_id"]
        .as_str()
        .unwrap()
        .to_string();
    let starts = (0..12).map(|i| {
        all[i % 3].post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link}).to_string(),
        )
    });
    let replies = futures_util::future::join_all(starts).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 403 && r.body["error_code"] == "link_inactive")
        .count();
    assert_eq!(
        (ok, refused),
        (3, 9),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let uses = all[1]
        .get(&format!("/v1/links/{link}"), &acct.key)
        .await
        .body["link"]["uses"]
        .clone();
    assert_eq!(uses, 3);
    assert_eq!(all[2].account_info(&acct.key).await["live_sessions"], 3);
}

#[actix_web::test]
async fn channels_opened_on_any_node_relay_the_session_from_its_node() {
    use crate::control::connect;
    let (a, b) = two_nodes().await;
    let acct = a.account(4, 10.0, 1000).await;
    let agent = a.ready_agent(&acct.key, json!({})).await;
    let r = a.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["session_id"].as_str().unwrap().to_string();
    let token = r.body["participant_token"].as_str().unwrap().to_string();

    // An agent channel on B hears A's sessions, those started later too.
    let mut agent_ws = connect(&b, &format!("/v1/agents/{agent}/control"), Some(&acct.key))
        .await
        .unwrap();
    let (status, _) = agent_ws.until("status").await;
    assert_eq!(status["session_id"], id.as_str(), "{status}");

    // A session channel on B: A's status, commands acked once A's session took them, and the
    // events they cause.
    let mut ws = connect(&b, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    let status = ws.next().await;
    assert_eq!(
        (status["type"].as_str(), status["state"].as_str()),
        (Some("status"), Some("live")),
        "{status}"
    );
    ws.send(json!({"type": "speak", "id": "s1", "text": "Hello from another node."}))
        .await;
    // A status may come first (the session's node pushes one whenever its room or voice
    // changes); nothing else may.
    let (ack, before) = ws.until("ack").await;
    assert_eq!(ack, json!({"type": "ack", "id": "s1", "delivered_to": 1}));
    assert!(before.iter().all(|m| m["type"] == "status"), "{before:?}");
    let (started, _) = ws.until("speech_started").await;
    let (ended, _) = ws.until("speech_ended").await;
    assert_eq!(started["utterance_id"], ended["utterance_id"]);
    let (heard, _) = agent_ws.until("speech_started").await;
    assert_eq!(heard["utterance_id"], started["utterance_id"]);

    // The preview on B carries A's frames.
    let mut pv = crate::media::preview(&b, &id, &token).await.unwrap();
    let frame = pv.frame().await;
    assert!(frame.width() > 0);

    // A session that starts on A later reaches the agent channel on B.
    let later = a.started_session(&acct.key, &agent).await;
    loop {
        let (status, _) = agent_ws.until("status").await;
        if status["session_id"] == later.as_str() && status["state"] == "live" {
            break;
        }
    }

    // `stop` on B's session channel ends A's session; the channel hears the end and closes.
    ws.send(json!({"type": "stop", "id": "x"})).await;
    let (ack, _) = ws.until("ack").await;
    assert_eq!(ack["delivered_to"], 1, "{ack}");
    let last = loop {
        let frame = ws.next().await;
        if frame["type"] == "__closed" {
            break frame;
        }
    };
    assert_eq!(last["code"], 1000, "{last}");
    let row = b.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(row["status"], "stopped", "{row}");
    assert_eq!(row["end_reason"], "stopped_by_client", "{row}");
    let r = a
        .post(&format!("/v1/sessions/{later}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
}

#[actix_web::test]
async fn a_channel_to_a_node_that_does_not_answer_is_refused_503() {
    let (a, b) = two_nodes().await;
    let acct = a.account(2, 10.0, 1000).await;
    let agent = a.ready_agent(&acct.key, json!({})).await;
    let id = a.started_session(&acct.key, &agent).await;
    set_node(&a, &id, "node_gone").await;
    let refused =
        crate::control::connect(&b, &format!("/v1/sessions/{id}/control"), Some(&acct.key)).await;
    assert_eq!(refused.err(), Some(503));
    set_node(&a, &id, &a.state.node_id).await;
    let r = b
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
}

#[actix_web::test]
async fn a_node_that_leaves_drains_its_sessions_while_the_others_serve() {
    let sink = crate::support::webhook_sink::WebhookSink::start().await;
    let (a, b) = two_nodes().await;
    let acct = a.account(6, 10.0, 1000).await;
    let r = a.set_account_webhook(&acct.key, &sink.url("/hooks")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let agent = a.ready_agent(&acct.key, json!({})).await;
    let on_a = [
        a.started_session(&acct.key, &agent).await,
        a.started_session(&acct.key, &agent).await,
    ];
    let on_b = b.started_session(&acct.key, &agent).await;

    // A leaves as on SIGTERM: its sessions end with `shutdown`; B's goes on.
    a.state.sessions.drain(Duration::from_secs(10)).await;
    for id in &on_a {
        let row = b.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
        assert_eq!(row["status"], "stopped", "{row}");
        assert_eq!(row["end_reason"], "shutdown", "{row}");
    }
    let row = b.get(&format!("/v1/sessions/{on_b}"), &acct.key).await.body["data"].clone();
    assert_eq!(row["status"], "live", "{row}");
    assert_eq!(b.account_info(&acct.key).await["live_sessions"], 1);

    // B still starts, steers and stops sessions; a start that reaches A while it leaves is
    // placed on B.
    let more = b.started_session(&acct.key, &agent).await;
    let r = a.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let placed = r.body["session_id"].as_str().unwrap().to_string();
    assert_eq!(node_of(&b, &placed).await, b.state.node_id);
    let r = b
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &acct.key,
            json!({"message": "Still serving."}),
        )
        .await;
    assert_eq!(r.body["delivered_to_rooms"], 3, "{:?}", r.body);
    for id in [&on_b, &more, &placed] {
        let r = b
            .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
            .await;
        assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
    }
    // One `ended` webhook per session, whichever node ended it.
    let stopped = || {
        sink.received()
            .iter()
            .map(|h| h.json())
            .filter(|w| w["event"] == "session.stopped")
            .map(|w| {
                w["data"]["session_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let ended = eventually(Duration::from_secs(10), || async { stopped().len() >= 5 }).await;
    assert!(ended, "{:?}", sink.received());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: std::collections::HashSet<String> = stopped().into_iter().collect();
    assert_eq!((ids.len(), stopped().len()), (5, 5), "each once");
}
