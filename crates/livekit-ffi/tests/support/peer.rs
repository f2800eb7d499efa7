//! `Peer`: a participant of a real LiveKit room played by the repository's
//! `tests/support/lk_peer.py` (LiveKit's Python SDK, `.setup/venv`), driven over its JSON-lines
//! stdin/stdout. It measures what it receives, publishes a WAV microphone, sends byte streams and
//! calls or answers RPC (see the script for its commands).
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct Peer {
    child: Child,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Pending,
    next_id: AtomicU64,
    pub identity: String,
    /// Who was in the room when it joined: `[{"identity", "kind"}]`.
    pub participants_at_join: Value,
}

impl Peer {
    /// Starts the peer and waits (at most 40 s) until it is in the room.
    pub async fn join(root: &Path, url: &str, token: &str) -> Peer {
        let python = std::env::var_os("AVS_LIVEKIT_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".setup/venv/bin/python"));
        let script = root.join("tests/support/lk_peer.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--url", url, "--token", token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {}: {e}", python.display(), script.display()));
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(40), lines.next_line())
            .await
            .expect("the peer joins within 40 s")
            .expect("read the peer's stdout")
            .expect("the peer says it is ready (it exited instead: see its stderr)");
        let ready: Value = serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready}"));
        assert_eq!(ready["event"], "ready", "the peer could not join: {ready}");
        let pending: Pending = Arc::default();
        let replies = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(reply) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("lk_peer said: {line}");
                    continue;
                };
                let waiter = reply["id"]
                    .as_u64()
                    .and_then(|id| replies.lock().unwrap().remove(&id));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    None => eprintln!("lk_peer: unclaimed {reply}"),
                }
            }
        });
        Peer {
            child,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            identity: ready["identity"].as_str().unwrap_or_default().to_string(),
            participants_at_join: ready["participants"].clone(),
        }
    }

    /// One command; answers its reply (`ok` checked) or panics after `timeout`.
    pub async fn command_within(&self, timeout: Duration, cmd: &str, args: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({"id": id, "cmd": cmd});
        if let (Some(request), Value::Object(args)) = (request.as_object_mut(), args) {
            request.extend(args);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin.as_mut().expect("the peer's stdin is open");
            stdin
                .write_all(format!("{request}\n").as_bytes())
                .await
                .expect("write to the peer");
            stdin.flush().await.expect("flush the peer's stdin");
        }
        let reply = tokio::time::timeout(timeout, rx)
            .await
            .unwrap_or_else(|_| panic!("the peer did not answer {cmd} within {timeout:?}"))
            .unwrap_or_else(|_| panic!("the peer exited during {cmd}"));
        assert_eq!(reply["ok"], true, "{cmd} failed at the peer: {reply}");
        reply
    }

    pub async fn command(&self, cmd: &str, args: Value) -> Value {
        self.command_within(Duration::from_secs(20), cmd, args)
            .await
    }

    /// What the peer decoded of `identity`'s tracks: `{"video": [{"t", "w", "h", "mouth"}],
    /// "audio": [{"t", "rms"}]}`.
    pub async fn observations(&self, identity: &str) -> Value {
        self.command("observations", json!({"identity": identity}))
            .await
    }

    /// `{"participants", "left", "rpc_calls", "disconnected"}`.
    pub async fn state(&self) -> Value {
        self.command("state", json!({})).await
    }

    /// Leaves the room (and waits until the SDK says it has).
    pub async fn leave(&self) {
        self.command("leave", json!({})).await;
    }

    /// Closes stdin (the peer leaves and exits) and waits at most 15 s for it.
    pub async fn close(mut self) {
        self.stdin.lock().await.take();
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
