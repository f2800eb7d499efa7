//! Layered settings: `config/default.toml` (embedded), an optional file, `AVS_<SECTION>__<KEY>`
//! environment variables (plus `DATABASE_URL` and LiveKit's own `LIVEKIT_*` names), then CLI flags.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A string that never prints: API secrets, the LiveKit secret, the master key.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(***)"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub security: SecuritySettings,
    pub sessions: SessionSettings,
    pub livekit: LiveKitSettings,
    pub agents: AgentSettings,
    pub webhooks: WebhookSettings,
    pub billing: BillingSettings,
    pub limits: LimitSettings,
    pub voice: VoiceSettings,
    pub ws: WsSettings,
    pub media: MediaSettings,
    pub render: RenderSettings,
    pub web: WebSettings,
    pub cluster: ClusterSettings,
}

/// Several nodes as one service: on when `nats_url` is set (with a PostgreSQL database).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub nats_url: String,
    /// The first part of every NATS subject: the nodes of one service share it (several services
    /// may share one NATS server).
    pub subject_prefix: String,
    /// How long a node waits for another's answer before answering 503 `unavailable`.
    pub request_timeout_ms: u64,
    /// How long a node waits for another to start a session placed there.
    pub start_timeout_ms: u64,
    /// How often a node advertises its free slots and live sessions to the others.
    pub advertise_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub public_base_url: String,
    pub data_dir: PathBuf,
    pub allow_private_urls: bool,
    pub max_body_bytes: usize,
    pub node_id: String,
    pub shutdown_grace_seconds: u64,
    /// `text` (human) or `json` (one object per line, fields as keys); `--log-format`.
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub master_key: Secret,
    pub jwt_leeway_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub default_max_duration_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub retry_after_seconds: u64,
    pub max_child_restarts: u32,
    pub child_restart_window_seconds: u64,
    pub agent_identity: String,
    pub room_check_interval_ms: u64,
    /// Arbiters (threads) sessions are spread over; 0: one per core.
    pub arbiters: usize,
    /// Starts admitted at once on this node at most; past it a start is answered 503 at once.
    pub max_pending_starts: usize,
    /// A session whose heartbeat (its billing checkpoint) is older than this is taken for lost
    /// with its node: another node sharing the database ends it with `node_lost`.
    pub node_lost_after_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitSettings {
    pub url: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// LiveKit's FFI library (`liblivekit_ffi.so`); empty: `.setup/livekit/liblivekit_ffi.so`.
    pub ffi_library: String,
    /// The avatar joins each session's room and publishes its face and voice. Off: this server
    /// only makes rooms and tokens, for an avatar published by something else.
    pub avatar_participant: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub default_avatar_image: String,
    pub generation_credits: i64,
    pub max_image_bytes: usize,
    pub fetch_timeout_seconds: u64,
}

/// Requests per minute (0: no limit) of the unauthenticated and expensive routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub link_start_per_ip: u32,
    pub link_start_per_link: u32,
    pub connect_per_ip: u32,
    pub connect_per_agent: u32,
    pub preflight_per_ip: u32,
    pub generate_per_ip: u32,
    pub generate_per_account: u32,
    /// Take the client's address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// Seconds between settlements of live time (one transaction for every live session).
    pub checkpoint_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub request_timeout_seconds: u64,
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    pub espeak_voice: String,
    /// The operator's ElevenLabs key (`xi-api-key`), for agents whose `auth_method` is `signed`.
    pub elevenlabs_api_key: Secret,
    pub elevenlabs_http_base: String,
    pub elevenlabs_ws_base: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    pub heartbeat_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub mailbox_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    /// onnxruntime's shared library; empty: the `ORT_DYLIB_PATH` environment variable.
    pub onnxruntime: String,
    pub face_model: String,
    /// mediapipe's face mesh as ONNX; empty: `face_landmark.onnx` beside the face model.
    pub face_mesh_model: String,
    pub face_threshold: f64,
    /// Where the local room's UDP media socket binds.
    pub bind_ip: std::net::IpAddr,
    /// The address browsers are told to send media to (its ICE candidate); empty: `bind_ip`.
    pub public_ip: String,
    /// The UDP port range the media socket binds in (0, 0: any free port).
    pub udp_port_min: u16,
    pub udp_port_max: u16,
    /// Video bitrate of both transports (VP8), in bits per second.
    pub video_bitrate_bps: u64,
    /// Browser viewers one session of the local room takes.
    pub max_viewers_per_session: usize,
}

impl AgentSettings {
    /// The default portrait: the setting, else the one `make setup` puts in `.setup/`.
    pub fn default_avatar_path(&self) -> PathBuf {
        if self.default_avatar_image.is_empty() {
            PathBuf::from(".setup/default-avatar.png")
        } else {
            PathBuf::from(&self.default_avatar_image)
        }
    }
}

impl LiveKitSettings {
    /// The FFI library to load: the setting, else the repository root's `.setup/` copy.
    pub fn ffi_library_path(&self) -> PathBuf {
        if self.ffi_library.is_empty() {
            PathBuf::from(".setup/livekit/liblivekit_ffi.so")
        } else {
            PathBuf::from(&self.ffi_library)
        }
    }
}

impl MediaSettings {
    /// CenterFace: the setting, else where `make setup` puts it.
    pub fn face_model_path(&self) -> PathBuf {
        if self.face_model.is_empty() {
            PathBuf::from(".setup/models/centerface.onnx")
        } else {
            PathBuf::from(&self.face_model)
        }
    }

    /// The face mesh: the setting, else `face_landmark.onnx` beside the face model.
    pub fn face_mesh_model_path(&self) -> PathBuf {
        if self.face_mesh_model.is_empty() {
            self.face_model_path().with_file_name("face_landmark.onnx")
        } else {
            PathBuf::from(&self.face_mesh_model)
        }
    }

    /// The onnxruntime library to load: the setting, else `ORT_DYLIB_PATH`.
    pub fn onnxruntime_path(&self) -> Option<PathBuf> {
        if !self.onnxruntime.is_empty() {
            return Some(PathBuf::from(&self.onnxruntime));
        }
        std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderSettings {
    /// Comma-separated: `cpu`, `cuda:0`, … (a device may be named twice for two workers).
    pub devices: String,
    /// Live sessions a device takes; 0: [`TALKING_PER_CORE`] per core of this machine.
    pub slots_per_device: usize,
    pub fps: u32,
    pub max_side: u32,
    pub jpeg_quality: u8,
    /// A Wav2Lip-style ONNX model (`mel` + `face` → `face`); empty: the built-in renderer.
    pub lipsync_model: String,
}

/// Talking sessions (all speaking, each watched at 25 fps) one core draws and encodes:
/// `make bench-media` holds 8 on this project's 2-core machine (`load-tests/RESULTS.md`).
pub const TALKING_PER_CORE: usize = 4;

impl RenderSettings {
    /// The slots of each device: the setting, or by default no more than this machine's cores
    /// hold with everyone speaking and watched.
    pub fn slots(&self) -> usize {
        if self.slots_per_device > 0 {
            return self.slots_per_device;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        TALKING_PER_CORE * cores
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    /// livekit-client's UMD build, which the room page needs with LiveKit configured; empty:
    /// `.setup/web/livekit-client.umd.js`, where `make setup` puts it.
    pub livekit_client: String,
}

impl WebSettings {
    /// The livekit-client bundle to serve: the setting, else the one `make setup` installs.
    pub fn livekit_client_path(&self) -> PathBuf {
        if self.livekit_client.is_empty() {
            PathBuf::from(".setup/web/livekit-client.umd.js")
        } else {
            PathBuf::from(&self.livekit_client)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Settings {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// The embedded defaults alone: what tests start from.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::load_with_env(None, std::iter::empty())
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root = parse_toml(DEFAULTS, "config/default.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            merge(&mut root, parse_toml(&text, &path.display().to_string())?);
        }
        for (name, value) in env {
            let key = match name.as_str() {
                "DATABASE_URL" => "database.url".to_string(),
                "LIVEKIT_URL" => "livekit.url".to_string(),
                "LIVEKIT_API_KEY" => "livekit.api_key".to_string(),
                "LIVEKIT_API_SECRET" => "livekit.api_secret".to_string(),
                "ELEVENLABS_API_KEY" => "voice.elevenlabs_api_key".to_string(),
                other => match other.strip_prefix("AVS_") {
                    Some(rest) if rest.contains("__") => rest.to_lowercase().replace("__", "."),
                    _ => continue,
                },
            };
            set_path(&mut root, &key, &value)?;
        }
        root.try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin: "settings".into(),
                message: e.message().to_string(),
            })
    }

    /// The database URL, defaulting to a SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            let path = self.server.data_dir.join("avatar-supervisor.db");
            format!("sqlite://{}?mode=rwc", path.display())
        } else {
            self.database.url.clone()
        }
    }

    pub fn livekit_enabled(&self) -> bool {
        !self.livekit.url.is_empty()
            && !self.livekit.api_key.is_empty()
            && !self.livekit.api_secret.is_empty()
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            message: e.message().to_string(),
        })
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets `section.key` from an environment string, keeping the type the defaults give that key.
fn set_path(root: &mut toml::Table, path: &str, raw: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: path.to_string(),
        message,
    };
    let (section, key) = path
        .split_once('.')
        .ok_or_else(|| invalid("expected SECTION__KEY".into()))?;
    let table = match root.get_mut(section) {
        Some(toml::Value::Table(t)) => t,
        _ => return Err(invalid(format!("unknown section `{section}`"))),
    };
    let value = match table.get(key) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.parse()
                .map_err(|_| invalid(format!("expected an integer, got `{raw}`")))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.parse()
                .map_err(|_| invalid(format!("expected true or false, got `{raw}`")))?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            raw.parse()
                .map_err(|_| invalid(format!("expected a number, got `{raw}`")))?,
        ),
        Some(_) => toml::Value::String(raw.to_string()),
        None => return Err(invalid(format!("unknown setting `{key}`"))),
    };
    table.insert(key.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert!(s.database_url().starts_with("sqlite://"));
        assert!(!s.livekit_enabled());
    }

    #[test]
    fn env_overrides_keep_types() {
        let env = vec![
            (
                "AVS_SESSIONS__IDLE_TIMEOUT_SECONDS".to_string(),
                "7".to_string(),
            ),
            (
                "AVS_SERVER__ALLOW_PRIVATE_URLS".to_string(),
                "true".to_string(),
            ),
            ("DATABASE_URL".to_string(), "postgres://x/y".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let s = Settings::load_with_env(None, env).unwrap();
        assert_eq!(s.sessions.idle_timeout_seconds, 7);
        assert!(s.server.allow_private_urls);
        assert_eq!(s.database_url(), "postgres://x/y");
    }

    #[test]
    fn bad_env_value_names_the_setting() {
        let env = vec![(
            "AVS_SESSIONS__IDLE_TIMEOUT_SECONDS".to_string(),
            "soon".to_string(),
        )];
        let err = Settings::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains("sessions.idle_timeout_seconds"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
