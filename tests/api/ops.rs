use crate::helpers::*;
use crate::on_both_databases;

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

on_both_databases!(health_ready_metrics_and_unknown_routes);

/// The Grafana dashboard (`grafana/avatar-supervisor.json`) queries only metrics this server
/// exports, and every metric it exports has a panel.
#[test]
fn the_dashboard_covers_every_metric() {
    use avatar_supervisor::metrics::ALL;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grafana/avatar-supervisor.json"
    ))
    .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("avs_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|b| ALL.contains(b)))
                    .unwrap_or(&name)
                    .to_string();
                assert!(
                    ALL.contains(&base.as_str()),
                    "panel `{}` queries `{name}`, which the server does not export",
                    panel["title"]
                );
                queried.insert(base);
            }
        }
    }
    let missing: Vec<_> = ALL.iter().filter(|m| !queried.contains(**m)).collect();
    assert!(missing.is_empty(), "metrics without a panel: {missing:?}");
}
