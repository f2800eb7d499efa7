use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;

pub fn videosdk_jwt(key_id: &str, secret: &str, exp_offset: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + exp_offset;
    encode(
        &Header::default(),
        &json!({"apikey": key_id, "exp": exp, "permissions": ["allow_join"]}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign jwt")
}

async fn with_jwt(app: &TestApp, token: &str) -> Reply {
    reply(
        app.client
            .get(app.url("/v1/account"))
            .header("authorization", token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn validate_and_keys(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 1.0, 0).await;
    for header in ["api-secret", "x-api-key"] {
        let r = reply(
            app.client
                .post(app.url("/v1/validate"))
                .header(header, &acct.key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((r.status, r.body.clone()), (200, json!({"valid": true})));
    }
    let r = reply(
        app.client
            .post(app.url("/v1/validate"))
            .header("api-secret", "avs_sk_wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "UNAUTHORIZED");
    assert_eq!(r.body["code"], "UNAUTHORIZED");
    let r = reply(
        app.client
            .post(app.url("/v1/validate"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, "UNAUTHORIZED"));
    // Own routes spell codes in snake case.
    let r = app.get("/v1/account", "avs_sk_wrong").await;
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    let r = reply(
        app.client
            .get(app.url("/v1/sessions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    // Secrets are stored sealed and hashed, never in clear.
    let rows = app.state.store.accounts().await.unwrap();
    assert_eq!(rows.len(), 1);
    let sealed = format!("{:?}", rows);
    assert!(!sealed.contains(&acct.key));
}

async fn videosdk_jwts(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 1.0, 0).await;
    let good = videosdk_jwt(&acct.key_id, &acct.key, 600);
    assert_eq!(with_jwt(&app, &good).await.status, 200);
    assert_eq!(with_jwt(&app, &format!("Bearer {good}")).await.status, 200);

    let expired = videosdk_jwt(&acct.key_id, &acct.key, -600);
    let r = with_jwt(&app, &expired).await;
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    assert!(r.body["message"].as_str().unwrap().contains("expired"));

    let wrong = videosdk_jwt(&acct.key_id, "not-the-secret", 600);
    assert_eq!(with_jwt(&app, &wrong).await.status, 401);

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"apikey": acct.key_id, "exp": chrono::Utc::now().timestamp() + 600}).to_string(),
    );
    assert_eq!(
        with_jwt(&app, &format!("{header}.{claims}.")).await.status,
        401
    );

    let unknown = videosdk_jwt("key_unknown", &acct.key, 600);
    assert_eq!(with_jwt(&app, &unknown).await.status, 401);
    // A token whose apikey claim names another key than the one that signed it.
    let other = app.account(1, 1.0, 0).await;
    let mixed = videosdk_jwt(&other.key_id, &acct.key, 600);
    assert_eq!(with_jwt(&app, &mixed).await.status, 401);
    assert_eq!(with_jwt(&app, "garbage").await.status, 401);
}

on_both_databases!(validate_and_keys, videosdk_jwts);
