//! `FakeLiveKit`: the fake LiveKit server (`tests/support/fake_livekit.py` of the repository,
//! aiortc underneath) as a child process, and its control API. Shared by this crate's netns tests
//! and the server's (`tests/api/netns/livekit.rs` includes this file by path).
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub struct FakeLiveKit {
    child: Child,
    host: String,
    port: u16,
}

impl FakeLiveKit {
    /// Starts the fake on the namespace's first address (`$AVS_NETNS_ADDRS`, else 10.99.0.1),
    /// with the venv and script of the repository at `root`.
    pub async fn start(root: &Path, api_key: &str, api_secret: &str) -> FakeLiveKit {
        let python = std::env::var_os("AVS_LIVEKIT_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".setup/venv/bin/python"));
        let script = root.join("tests/support/fake_livekit.py");
        let host = std::env::var("AVS_NETNS_ADDRS")
            .ok()
            .and_then(|a| a.split(',').next().map(str::to_string))
            .unwrap_or_else(|| "10.99.0.1".into());
        let mut child = Command::new(&python)
            .arg(&script)
            .args([
                "--host",
                &host,
                "--port",
                "0",
                "--api-key",
                api_key,
                "--api-secret",
                api_secret,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {}: {e}", python.display(), script.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the fake prints its port within 30 s")
        .expect("read the fake's stdout");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("a port, not {line:?}"));
        FakeLiveKit { child, host, port }
    }

    pub fn url(&self) -> String {
        format!("ws://{}:{}", self.host, self.port)
    }

    /// One JSON request to the control API, over a fresh HTTP/1.1 connection.
    pub async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .expect("connect to the fake's control API");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send a control request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the control response");
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{method} {path}: {head}\n{body}"
        );
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"))
    }

    /// What the fake decoded of `identity`'s tracks: `{"video": [{"t", "w", "h", "mouth"}],
    /// "audio": [{"t", "rms"}]}`.
    pub async fn observations(&self, identity: &str) -> Value {
        self.control(
            "GET",
            &format!("/control/observations?identity={identity}"),
            None,
        )
        .await
    }

    pub async fn participant(&self, identity: &str) -> Value {
        let state = self.control("GET", "/control/state", None).await;
        state["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|room| room["participants"].as_array().cloned().unwrap_or_default())
            .rfind(|p| p["identity"] == identity)
            .unwrap_or(Value::Null)
    }
}

impl FakeLiveKit {
    /// Kills the fake at once (a server that vanishes without a word).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
