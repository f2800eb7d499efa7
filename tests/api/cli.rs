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
    spawn_serve(serve_command(dir, &[]))
}

/// `serve` on a free port with the test assets, `extra` arguments before `serve`.
pub(crate) fn serve_command(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .args(["serve", "--bind", "127.0.0.1:0", "--allow-private-urls"])
        .env("AVS_SESSIONS__IDLE_TIMEOUT_SECONDS", "600")
        .env("ORT_DYLIB_PATH", assets().join("libonnxruntime.so"))
        .env(
            "AVS_MEDIA__FACE_MODEL",
            assets().join("models/centerface.onnx"),
        )
        .stderr(Stdio::null());
    command
}

/// Spawns a prepared `serve` command and reads the base URL it prints.
pub(crate) fn spawn_serve(mut command: Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base)
}

/// A new account with one concurrent session and credits for a generation; its API key.
fn account_key(dir: &Path, name: &str) -> String {
    let created = run(
        dir,
        &[
            "account",
            "create",
            "--name",
            name,
            "--concurrency-limit",
            "1",
            "--minutes",
            "1",
            "--credits",
            "1000",
        ],
    );
    created["api_key"].as_str().unwrap().to_string()
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

/// `serve --check` says what it found and what is missing, and exits 1 when the server could not
/// start.
#[test]
fn serve_check_reports_what_it_finds() {
    let dir = tempfile::tempdir().unwrap();
    let check = |face: &Path| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["serve", "--check"])
            .env("ORT_DYLIB_PATH", assets().join("libonnxruntime.so"))
            .env("AVS_MEDIA__FACE_MODEL", face)
            .current_dir(dir.path())
            .output()
            .expect("run the binary")
    };
    let out = check(&assets().join("models/centerface.onnx"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok       database",
        "ok       onnxruntime",
        "ok       face model",
        "ok       espeak-ng",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(text.contains("the server can start"), "{text}");
    let out = check(Path::new("/nonexistent/centerface.onnx"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("MISSING  face model") && text.contains("/nonexistent/centerface.onnx"),
        "{text}"
    );
}

/// Run from the repository root with nothing configured (as `make run` would, without its
/// environment), the binary finds onnxruntime, the face model and the default portrait in
/// `.setup/`: a generate request without an image reaches `ready`.
#[actix_web::test]
async fn the_binary_alone_finds_what_make_setup_installed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".setup/default-avatar.png").exists() {
        panic!("run `make setup` first: .setup/default-avatar.png is missing");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = account_key(dir.path(), "alone");
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("AVS_MEDIA__FACE_MODEL")
        .env_remove("AVS_AGENTS__DEFAULT_AVATAR_IMAGE")
        .current_dir(root)
        .stderr(Stdio::null());
    let (mut child, base) = spawn_serve(command);
    let client = avatar_supervisor::net::http_client(Duration::from_secs(10));
    let r = reply(
        client
            .post(format!("{base}/v1/agent/generate"))
            .header("api-secret", &key)
            .json(&json!({"prompt": "You are a friendly AI assistant."}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let agent = r.body["agent_id"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..1200 {
        status = reply(
            client
                .get(format!("{base}/v1/agent/status/{agent}"))
                .header("api-secret", &key)
                .send()
                .await
                .unwrap(),
        )
        .await
        .body;
        if status["data"]["status"] == "ready" || status["data"]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status["data"]["status"], "ready", "{status}");
}

/// `--log-format json`: one JSON object a line, each request's lines carrying its `request_id`
/// (the one the client sent, echoed in `x-request-id`); and in the logs of a whole run at debug
/// level, neither the API key nor the master key appears.
#[actix_web::test]
async fn json_logs_carry_request_ids_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = account_key(dir.path(), "logs");
    let master = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let log = dir.path().join("server.log");
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--log-format", "json", "serve", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .env("ORT_DYLIB_PATH", assets().join("libonnxruntime.so"))
        .env(
            "AVS_MEDIA__FACE_MODEL",
            assets().join("models/centerface.onnx"),
        )
        .stderr(std::fs::File::create(&log).unwrap());
    let (mut child, base) = spawn_serve(command);
    let client = avatar_supervisor::net::http_client(Duration::from_secs(10));
    let id = live_session(&client, &base, &key).await;
    let r = client
        .post(format!("{base}/v1/sessions/{id}/stop"))
        .header("x-api-key", &key)
        .header("x-request-id", "req-test-42")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-test-42");
    let r = client
        .get(format!("{base}/v1/sessions"))
        .header("x-api-key", format!("{key}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-request-id"));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut tagged = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["span"]["request_id"] == "req-test-42" {
            tagged += 1;
        }
    }
    assert!(
        tagged > 0,
        "no line of the stop request carries its request_id:\n{text}"
    );
    let secret = key.rsplit('_').next().unwrap();
    assert!(!text.contains(secret), "the API key is in the logs");
    assert!(
        !text.contains(master.trim()),
        "the master key is in the logs"
    );
}
