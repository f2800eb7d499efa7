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
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("avs_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("avs_sessions_live 0"));
}

on_both_databases!(health_ready_metrics_and_unknown_routes);
