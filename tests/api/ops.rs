use std::time::Duration;

use serde_json::{json, Value};

use crate::control::connect;
use crate::helpers::*;
use crate::media::preview;
use crate::on_both_databases;
use crate::support::webhook_sink::WebhookSink;

async fn health_ready_metrics_and_unknown_routes(db: Db) {
    let app = spawn_app(db).await;
    let r = reply(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = reply(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
    let r = reply(
        app.client
            .get(app.url("/v1/nothing-here"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let text = app.metrics().await;
    assert!(
        text.contains("avs_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("avs_sessions_live 0"));
}

/// A fresh server's first scrape exports every family (each known label value at zero), so the
/// dashboards and alerts read 0 rather than "no data", and `rate()` sees the first increment.
async fn every_metric_family_is_exported_from_the_first_scrape(db: Db) {
    use avatar_supervisor::metrics::ALL;
    let app = spawn_app(db).await;
    let text = app.metrics().await;
    // Each node's advertised figures come once the node hears its cluster (`cluster.nats_url`);
    // a lone server has none to show.
    let heard_from_the_cluster = [
        "avs_cluster_node_free_slots",
        "avs_cluster_node_live_sessions",
    ];
    let missing: Vec<_> = ALL
        .iter()
        .filter(|name| !heard_from_the_cluster.contains(name))
        .filter(|name| !text.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(missing.is_empty(), "not in the first scrape: {missing:?}");
    for (family, labels) in [
        ("avs_sessions_ended_total", "reason=\"node_lost\""),
        ("avs_admissions_rejected_total", "reason=\"no_capacity\""),
        ("avs_session_child_restarts_total", "child=\"renderer\""),
        ("avs_webhook_deliveries_total", "outcome=\"gave_up\""),
        ("avs_ws_connections", "channel=\"agent\""),
    ] {
        let line = format!("{family}{{{labels}}} 0");
        assert!(text.contains(&line), "{line} is not in the first scrape");
    }
    assert!(text.contains("avs_control_ack_seconds_count{command=\"speak\"} 0"));
    assert!(
        text.contains("avs_render_frames_total{device=\"cpu\"} 0"),
        "{text}"
    );
}

on_both_databases!(
    health_ready_metrics_and_unknown_routes,
    every_metric_family_is_exported_from_the_first_scrape,
);

/// Every Grafana dashboard's queries, as (dashboard file, panel title, expr).
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("grafana/dashboards")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the four dashboards: {files:?}");
    let mut queries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr").to_string();
                queries.push((name.clone(), panel["title"].to_string(), expr));
            }
        }
    }
    queries
}

/// The metric names an expression reads (`avs_…`, histogram suffixes folded into their family).
fn metrics_in(expr: &str) -> Vec<String> {
    use avatar_supervisor::metrics::ALL;
    expr.match_indices("avs_")
        .map(|(i, _)| {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| ALL.contains(b)))
                .unwrap_or(&name)
                .to_string()
        })
        .collect()
}

/// The Grafana dashboards (`grafana/dashboards/*.json`) query only metrics this server exports,
/// and every metric it exports has a panel.
#[test]
fn the_dashboards_cover_every_metric() {
    use avatar_supervisor::metrics::ALL;
    let mut queried = std::collections::BTreeSet::new();
    for (file, title, expr) in dashboard_queries() {
        for name in metrics_in(&expr) {
            assert!(
                ALL.contains(&name.as_str()),
                "{file}: panel {title} queries `{name}`, which the server does not export"
            );
            queried.insert(name);
        }
    }
    let missing: Vec<_> = ALL.iter().filter(|m| !queried.contains(**m)).collect();
    assert!(missing.is_empty(), "metrics without a panel: {missing:?}");
}

/// A real Prometheus (Debian's, installed by `make setup`) scrapes a real server while the test
/// runs sessions, control commands, a refusal and webhooks through it; then every expression of
/// every dashboard is evaluated through Prometheus's HTTP API: each must parse and run, and the
/// counters the test exercised must have data.
#[actix_web::test]
async fn a_real_prometheus_evaluates_every_dashboard_query() {
    let prometheus = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("prometheus is not installed: run `make setup` (Debian package prometheus)");
    let sink = WebhookSink::start().await;
    let app = spawn_app(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: avatar-supervisor\n    static_configs:\n      - targets: ['{}']\n",
            app.base.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let _prometheus = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |expr: String| {
        let (client, api) = (app.client.clone(), api.clone());
        async move {
            let r = client
                .get(format!("{api}/query"))
                .query(&[("query", expr.as_str())])
                .send()
                .await;
            match r {
                Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        }
    };

    // Traffic: an account with a webhook, an agent, sessions watched and steered, a refusal.
    let acct = app.account(1, 10.0, 1000).await;
    let r = app
        .set_account_webhook(&acct.key, &sink.url("/hooks"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["session_id"].as_str().unwrap().to_string();
    let token = r.body["participant_token"].as_str().unwrap().to_string();
    let refused = app.start_session(&acct.key, &agent).await;
    assert_eq!(refused.error_code(), "concurrency_limit");
    let mut pv = preview(&app, &id, &token).await.unwrap();
    for _ in 0..3 {
        pv.frame().await;
    }
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    ws.send(json!({"type": "ping", "id": "p"})).await;
    ws.until("pong").await;
    ws.send(json!({"type": "speak", "id": "s", "text": "Hello."}))
        .await;
    ws.until("speech_started").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = app
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.wait_for(
        |r| r.json()["event"] == "session.stopped",
        Duration::from_secs(10),
    )
    .await
    .expect("session.stopped delivered");

    // Prometheus has scraped the server at least twice since the last of that (a rate needs two
    // samples).
    let ready = eventually(Duration::from_secs(30), || async move {
        let v = query("max(count_over_time(avs_sessions_ended_total[5m]))".into()).await;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|n| n >= 2.0)
    })
    .await;
    assert!(
        ready,
        "prometheus did not scrape the server: {}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );

    // Every dashboard expression, as Grafana would send it with "All" selected.
    let mut with_data = std::collections::BTreeSet::new();
    for (file, title, expr) in dashboard_queries() {
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "15s")
            .replace("$node", ".*")
            .replace("$device", ".*");
        let v = query(concrete.clone()).await;
        assert_eq!(
            v["status"], "success",
            "{file}: panel {title}: `{concrete}` failed: {v}"
        );
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            with_data.extend(metrics_in(&expr));
        }
    }
    for exercised in [
        "avs_sessions_started_total",
        "avs_sessions_ended_total",
        "avs_admissions_rejected_total",
        "avs_billed_seconds_total",
        "avs_render_frames_total",
        "avs_webhook_deliveries_total",
        "avs_control_ack_seconds",
        "avs_speak_to_speech_seconds",
        "avs_ws_frames_total",
        "avs_database_up",
    ] {
        assert!(
            with_data.contains(exercised),
            "no dashboard query of `{exercised}` returned data (with data: {with_data:?})"
        );
    }
}
