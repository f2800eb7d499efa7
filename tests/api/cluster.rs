//! Several nodes as one service: two app instances on one PostgreSQL database and the local NATS
//! (127.0.0.1:4222). A stop or a speak/add-context fan-out that reaches another node than the
//! session's is forwarded to it; an owner that does not answer makes a stop 503.

use serde_json::json;

use crate::helpers::*;

const NATS: &str = "nats://127.0.0.1:4222";

/// Two nodes sharing a database, a master key and NATS. Node ids are unique on the NATS server
/// (tests run in parallel against the same one), as the default random ones are.
async fn two_nodes() -> (TestApp, TestApp) {
    let run = avatar_supervisor::domain::ids::random_token(8);
    let a = spawn_app_with(Db::Postgres, |s| {
        s.cluster.nats_url = NATS.into();
        s.server.node_id = format!("node_a_{run}");
    })
    .await;
    let url = a.state.settings.database.url.clone();
    let dir = a.state.settings.server.data_dir.clone();
    let b = spawn_app_with(Db::Postgres, |s| {
        s.cluster.nats_url = NATS.into();
        s.server.node_id = format!("node_b_{run}");
        s.database.url = url.clone();
        s.server.data_dir = dir.clone();
    })
    .await;
    (a, b)
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
    let db = sea_orm::Database::connect(a.state.settings.database.url.as_str())
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&format!(
        "UPDATE sessions SET node_id = 'node_gone' WHERE id = '{id}'"
    ))
    .await
    .unwrap();
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
