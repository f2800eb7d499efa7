//! The real binary, as operators run it: account commands print JSON; `serve` drains live sessions
//! on SIGTERM, and a crashed server's sessions are ended (and their slots returned) at the next start.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_avatar-supervisor");

fn run(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{args:?} printed {text:?}: {e}"))
}

/// Starts `serve` on a free port; returns the child and its base URL.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--bind", "127.0.0.1:0", "--allow-private-urls"])
        .env("AVS_SESSIONS__IDLE_TIMEOUT_SECONDS", "600")
        .env("ORT_DYLIB_PATH", assets().join("libonnxruntime.so"))
        .env(
            "AVS_MEDIA__FACE_MODEL",
            assets().join("models/centerface.onnx"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base)
}

async fn live_session(client: &reqwest::Client, base: &str, key: &str) -> String {
    let r = reply(
        client
            .post(format!("{base}/v1/agent/generate"))
            .header("api-secret", key)
            .json(&json!({"image": base64_photo("astronaut.png")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let agent = r.body["agent_id"].as_str().unwrap().to_string();
    for _ in 0..200 {
        let r = reply(
            client
                .get(format!("{base}/v1/agent/{agent}"))
                .header("api-secret", key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if r.body["data"]["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = reply(
        client
            .post(format!("{base}/v1/sessions"))
            .header("x-api-key", key)
            .json(&json!({"agent_id": agent}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["session_id"].as_str().unwrap().to_string()
}

async fn session(client: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    reply(
        client
            .get(format!("{base}/v1/sessions/{id}"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap(),
    )
    .await
    .body["data"]
        .clone()
}

#[actix_web::test]
async fn account_commands_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let created = run(
        dir.path(),
        &[
            "account",
            "create",
            "--name",
            "ops",
            "--concurrency-limit",
            "2",
            "--minutes",
            "0.05",
            "--credits",
            "500",
        ],
    );
    let id = created["account_id"].as_str().unwrap();
    assert!(id.starts_with("acct_"));
    assert!(created["key_id"].as_str().unwrap().starts_with("key_"));
    assert!(created["api_key"].as_str().unwrap().len() >= 32);
    let key2 = run(dir.path(), &["account", "key-create", "--account", id]);
    assert_eq!(key2["account_id"], id);
    assert_ne!(key2["api_key"], created["api_key"]);
    let topped = run(
        dir.path(),
        &[
            "account",
            "topup",
            "--account",
            id,
            "--minutes",
            "1.5",
            "--credits",
            "10",
        ],
    );
    assert_eq!(topped["credits"], 510);
    assert!(
        (topped["minutes_remaining"].as_f64().unwrap() - 1.55).abs() < 1e-9,
        "{topped}"
    );
    let listed = run(dir.path(), &["account", "list"]);
    assert_eq!(listed["account_id"], id);
    assert_eq!(run(dir.path(), &["migrate"]), json!({"migrated": true}));
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["account", "topup", "--account", "acct_nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account acct_nope"));
}

#[actix_web::test]
async fn sigterm_drains_and_a_crash_is_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let created = run(
        dir.path(),
        &[
            "account",
            "create",
            "--name",
            "ops",
            "--concurrency-limit",
            "2",
            "--minutes",
            "10",
            "--credits",
            "1000",
        ],
    );
    let key = created["api_key"].as_str().unwrap().to_string();
    let client = avatar_supervisor::net::http_client(Duration::from_secs(10));

    // SIGTERM: the live session ends with `shutdown` before the process exits.
    let (mut child, base) = serve(dir.path());
    let drained = live_session(&client, &base, &key).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    // SIGKILL: nothing ends the session, so the next start must.
    let (mut child, base) = serve(dir.path());
    let row = session(&client, &base, &key, &drained).await;
    assert_eq!(
        (row["status"].as_str(), row["end_reason"].as_str()),
        (Some("stopped"), Some("shutdown")),
        "{row}"
    );
    let crashed = live_session(&client, &base, &key).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, base) = serve(dir.path());
    let row = session(&client, &base, &key, &crashed).await;
    assert_eq!(
        (row["status"].as_str(), row["end_reason"].as_str()),
        (Some("stopped"), Some("shutdown")),
        "{row}"
    );
    let account = reply(
        client
            .get(format!("{base}/v1/account"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap(),
    )
    .await
    .body;
    assert_eq!(account["live_sessions"], 0);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Without what `make setup` installs, `serve` stops at once with a sentence saying what to run.
#[test]
fn serve_fails_fast_without_the_media_runtime() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("AVS_MEDIA__FACE_MODEL", "/nonexistent/centerface.onnx"),
        ("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"),
    ] {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("ORT_DYLIB_PATH", assets().join("libonnxruntime.so"))
            .env(
                "AVS_MEDIA__FACE_MODEL",
                assets().join("models/centerface.onnx"),
            )
            .env(var, value)
            .current_dir(dir.path())
            .output()
            .expect("run the binary");
        assert!(!out.status.success(), "{var}: started anyway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("make setup") && stderr.contains("/nonexistent/"),
            "{var}: {stderr}"
        );
    }
}
