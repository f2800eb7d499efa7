//! `LiveKitServer`: LiveKit's own server (`.setup/livekit-server/livekit-server`, built by
//! `scripts/setup_livekit_server.sh`) as a child process for the netns tests, and the RoomService
//! calls they make (Twirp with JSON bodies). Plus [`token`], the HS256 access tokens both the avatar
//! and the test peers join with.
//!
//! The server binds the namespace's first address (`$AVS_NETNS_ADDRS`, else 10.99.0.1) on free
//! ports, advertises that address for media (`rtc.node_ip`, no external IP, ICE over UDP in a port
//! range on the veth interface only), and is killed when dropped. Its log goes to a file in a
//! temporary directory; the last lines are printed when it fails to start.
#![allow(dead_code)] // each test binary uses a part

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!";

/// An HS256 JWT signed with [`API_SECRET`], `iss` [`API_KEY`], `sub` `identity`, valid for an
/// hour; `extra` is merged into the claims (e.g. `{"kind": "agent", "video": {...}}`).
pub fn token(identity: &str, extra: Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let mut claims = json!({
        "iss": API_KEY, "sub": identity, "name": identity, "nbf": now - 10, "exp": now + 3600,
    });
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    let signing_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(API_SECRET.as_bytes()).expect("any key size");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// A token that joins `room` and may publish, subscribe and send data; `kind` is LiveKit's
/// participant kind claim (`"agent"`, or `None` for a standard participant).
pub fn join_token(room: &str, identity: &str, kind: Option<&str>) -> String {
    let mut extra = json!({
        "video": {"roomJoin": true, "room": room, "canPublish": true, "canSubscribe": true,
                  "canPublishData": true},
    });
    if let Some(kind) = kind {
        extra["kind"] = json!(kind);
        if kind == "agent" {
            extra["video"]["agent"] = json!(true);
        }
    }
    token(identity, extra)
}

/// What a RoomService call answered when it was not a 200: the HTTP status and Twirp's body.
#[derive(Debug)]
pub struct TwirpError {
    pub status: u16,
    pub body: String,
}

pub struct LiveKitServer {
    child: Child,
    host: String,
    port: u16,
    dir: PathBuf,
}

/// A port nothing listens on now (the kernel's choice; released at once for the server to take).
fn free_tcp_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free TCP port on {host}: {e}"))
}

/// The first of `count` consecutive UDP ports that are all free now.
fn free_udp_range(host: &str, count: u16) -> u16 {
    let start = std::process::id() as usize;
    for attempt in 0..200usize {
        let base = 40_000 + ((start + attempt) % 200) as u16 * count;
        let all_free = (base..base + count).all(|p| UdpSocket::bind((host, p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} consecutive free UDP ports on {host}");
}

impl LiveKitServer {
    /// Starts livekit-server and waits (at most 30 s) until its HTTP port answers.
    pub async fn start(root: &Path) -> LiveKitServer {
        let binary = std::env::var_os("AVS_LIVEKIT_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".setup/livekit-server/livekit-server"));
        assert!(
            binary.is_file(),
            "{} is missing: scripts/setup_livekit_server.sh builds it (it needs Go)",
            binary.display()
        );
        let host = std::env::var("AVS_NETNS_ADDRS")
            .ok()
            .and_then(|a| a.split(',').next().map(str::to_string))
            .unwrap_or_else(|| "10.99.0.1".into());
        let port = free_tcp_port(&host);
        let tcp_port = free_tcp_port(&host);
        let udp_start = free_udp_range(&host, 100);
        // The veth end that carries `host`, so ICE offers nothing else (the namespace has only it,
        // its peer and lo anyway).
        let interface = interface_of(&host);
        let dir = std::env::temp_dir().join(format!(
            "avs-lks-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let interfaces = interface
            .map(|i| format!("  interfaces:\n    includes: [{i}]\n"))
            .unwrap_or_default();
        let config = format!(
            "port: {port}\n\
             bind_addresses: [\"{host}\"]\n\
             keys:\n  {API_KEY}: \"{API_SECRET}\"\n\
             rtc:\n  node_ip: {host}\n  use_external_ip: false\n  tcp_port: {tcp_port}\n  \
             port_range_start: {udp_start}\n  port_range_end: {}\n{interfaces}\
             room:\n  empty_timeout: 60\n  departure_timeout: 5\n\
             logging:\n  level: info\n",
            udp_start + 99
        );
        let config_path = dir.join("livekit.yaml");
        std::fs::write(&config_path, config).expect("write the server's config");
        let log_path = dir.join("livekit-server.log");
        let log = std::fs::File::create(&log_path).expect("create the server's log");
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a file handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut server = LiveKitServer {
            child,
            host,
            port,
            dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("livekit-server exited ({status}):\n{}", server.log_tail(30));
            }
            if let Ok((200, body)) = server.http("GET", "/", None, "").await {
                if body.trim() == "OK" {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "livekit-server did not answer within 30 s:\n{}",
                server.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// The URL clients join with.
    pub fn url(&self) -> String {
        format!("ws://{}:{}", self.host, self.port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("livekit-server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the server at once (SIGKILL: a server that vanishes without a word) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// One HTTP/1.1 request over a fresh connection; answers the status and the (de-chunked) body.
    async fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let exchange = async {
            let mut stream =
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let auth = bearer
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.host,
                self.port,
                body.len()
            );
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "10 s"))??;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let raw = &response[split + 4..];
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked { dechunk(raw) } else { raw.to_vec() };
        let body = String::from_utf8_lossy(&body).into_owned();
        Ok((status, body))
    }

    /// `POST /twirp/livekit.RoomService/<method>` with a JSON body and an admin token.
    pub async fn room_service(&self, method: &str, body: Value) -> Result<Value, TwirpError> {
        let admin = token(
            "test-admin",
            json!({"video": {"roomCreate": true, "roomAdmin": true, "roomList": true,
                             "room": body.get("room").cloned().unwrap_or(Value::Null)}}),
        );
        let path = format!("/twirp/livekit.RoomService/{method}");
        let (status, text) = self
            .http("POST", &path, Some(&admin), &body.to_string())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if status != 200 {
            return Err(TwirpError { status, body: text });
        }
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
    }

    pub async fn create_room(&self, room: &str) -> Value {
        self.room_service("CreateRoom", json!({"name": room, "empty_timeout": 60}))
            .await
            .unwrap_or_else(|e| panic!("CreateRoom {room}: {e:?}"))
    }

    pub async fn delete_room(&self, room: &str) {
        self.room_service("DeleteRoom", json!({"room": room}))
            .await
            .unwrap_or_else(|e| panic!("DeleteRoom {room}: {e:?}"));
    }

    /// The identities in `room` as the server sees them (an unknown room: none).
    pub async fn participants(&self, room: &str) -> Vec<String> {
        match self
            .room_service("ListParticipants", json!({"room": room}))
            .await
        {
            Ok(answer) => answer["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["identity"].as_str().map(str::to_string))
                .collect(),
            Err(TwirpError { status: 404, .. }) => Vec::new(),
            Err(e) => panic!("ListParticipants {room}: {e:?}"),
        }
    }

    pub async fn remove_participant(&self, room: &str, identity: &str) {
        self.room_service(
            "RemoveParticipant",
            json!({"room": room, "identity": identity}),
        )
        .await
        .unwrap_or_else(|e| panic!("RemoveParticipant {identity} of {room}: {e:?}"));
    }
}

impl Drop for LiveKitServer {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; wait for it here so the next test's server finds its ports.
        let _ = self.child.start_kill();
        if let Some(pid) = self.child.id() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name of the interface that has `addr`, from `ip -o -4 addr` (None if `ip` cannot say).
fn interface_of(addr: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let has = fields.iter().any(|f| f.split('/').next() == Some(addr));
            has.then(|| fields.get(1).map(|s| s.trim_end_matches(':').to_string()))
                .flatten()
        })
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let line = String::from_utf8_lossy(&body[..eol]);
        let size =
            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let rest = &body[eol + 2..];
        if size == 0 || rest.len() < size {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
}
