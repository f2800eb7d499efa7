//! `Application::build` wires the store, the actors and the HTTP server; `run_until_stopped` serves
//! until SIGTERM/Ctrl-C, then drains sessions (they end with `shutdown`) before exiting.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::actors::billing::Billing;
use crate::actors::quota::Quota;
use crate::actors::registry::Registry;
use crate::actors::render_pool::RenderPool;
use crate::actors::service::SessionService;
use crate::actors::session::SessionDeps;
use crate::actors::webhooks::Webhooks;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::crypto::MasterKey;
use crate::domain::views::Urls;
use crate::livekit::RoomBackend;
use crate::media::MediaRuntime;
use crate::metrics::Metrics;
use crate::net::{http_client, UrlPolicy};
use crate::state::AppState;
use crate::store::Store;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

/// The master key from settings, else from `<data_dir>/master.key`, created on first use.
pub fn master_key(settings: &Settings) -> Result<MasterKey, BoxError> {
    if !settings.security.master_key.is_empty() {
        return Ok(MasterKey::from_hex(settings.security.master_key.expose())?);
    }
    let path = settings.server.data_dir.join("master.key");
    if !path.exists() {
        std::fs::create_dir_all(&settings.server.data_dir)?;
        write_private(&path, &MasterKey::generate_hex())?;
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(MasterKey::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

/// The session's media transport: LiveKit's FFI library when LiveKit is configured (refusing to
/// start without it, saying what to run), else the local room's WebRTC engine.
type Transports = (
    Option<Arc<avs_livekit_ffi::FfiLibrary>>,
    Option<avs_rtc::RtcServer>,
);

fn media_transport(settings: &Settings) -> Result<Transports, BoxError> {
    if settings.livekit_enabled() {
        if !settings.livekit.avatar_participant {
            return Ok((None, None));
        }
        let path = settings.livekit.ffi_library_path();
        if !path.exists() {
            return Err(format!(
                "LiveKit is configured but its FFI library {} is missing: run `make setup` \
                 (or set livekit.ffi_library / AVS_LIVEKIT__FFI_LIBRARY)",
                path.display()
            )
            .into());
        }
        let library = avs_livekit_ffi::FfiLibrary::load(&path)
            .map_err(|e| format!("cannot load LiveKit's FFI library {}: {e}", path.display()))?;
        return Ok((Some(library), None));
    }
    let m = &settings.media;
    let public_ip = if m.public_ip.is_empty() {
        None
    } else {
        Some(
            m.public_ip
                .parse()
                .map_err(|_| format!("media.public_ip `{}` is not an IP address", m.public_ip))?,
        )
    };
    let config = avs_rtc::RtcConfig {
        bind_ip: m.bind_ip,
        public_ip,
        port_min: m.udp_port_min,
        port_max: m.udp_port_max,
        video_bitrate_bps: m.video_bitrate_bps.min(u32::MAX as u64) as u32,
        max_viewers_per_session: m.max_viewers_per_session,
        ..Default::default()
    };
    let rtc = avs_rtc::RtcServer::start(config)
        .map_err(|e| format!("cannot start the local room's media engine: {e}"))?;
    tracing::info!(media = %rtc.candidate_addr(), "local room media socket");
    Ok((None, Some(rtc)))
}

/// Opens (and migrates) the database the settings name.
pub async fn open_store(settings: &Settings) -> Result<Store, BoxError> {
    std::fs::create_dir_all(&settings.server.data_dir).map_err(|e| {
        format!(
            "cannot create data dir {}: {e}",
            settings.server.data_dir.display()
        )
    })?;
    let key = master_key(settings)?;
    let url = settings.database_url();
    let store = Store::connect(&url, &settings.database, key)
        .await
        .map_err(|e| format!("cannot open database: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate database: {e}"))?;
    Ok(store)
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, BoxError> {
        let settings = Arc::new(settings);
        // Fails fast, saying what to run, when `make setup` has not provided the media runtime.
        let media = Arc::new(MediaRuntime::load(&settings.media)?);
        let store = open_store(&settings).await?;
        let listener = TcpListener::bind(&settings.server.bind)
            .map_err(|e| format!("cannot bind {}: {e}", settings.server.bind))?;
        let addr = listener.local_addr()?;
        let public_base_url = if settings.server.public_base_url.is_empty() {
            format!("http://{addr}")
        } else {
            settings
                .server
                .public_base_url
                .trim_end_matches('/')
                .to_string()
        };
        let node_id = if settings.server.node_id.is_empty() {
            // A SQLite file has one node, so every unfinished session in it is this node's own.
            if settings.database_url().starts_with("sqlite:") {
                "local".to_string()
            } else {
                format!("node_{}", crate::domain::ids::random_token(10))
            }
        } else {
            settings.server.node_id.clone()
        };
        let metrics = Metrics::new();
        let http = http_client(Duration::from_secs(
            settings.webhooks.request_timeout_seconds,
        ));
        let policy = UrlPolicy {
            allow_private: settings.server.allow_private_urls,
        };
        let rooms = Arc::new(RoomBackend::from_settings(
            &settings,
            &store.master_key,
            &public_base_url,
        ));
        let urls = Urls {
            public_base_url: public_base_url.clone(),
            room_url: match rooms.as_ref() {
                RoomBackend::LiveKit { url, .. } | RoomBackend::Local { url, .. } => url.clone(),
            },
        };
        let render_pool = RenderPool::new(
            &settings.render,
            &media.onnx,
            media.mesher.clone(),
            store.clone(),
            metrics.clone(),
        )?
        .start();
        let quota = Quota::new(store.clone(), metrics.clone()).start();
        let billing =
            Billing::new(store.clone(), metrics.clone(), settings.billing.clone()).start();
        let registry = Registry::new(metrics.clone()).start();
        let webhooks = Webhooks::new(
            store.clone(),
            http.clone(),
            settings.webhooks.clone(),
            policy,
            urls.clone(),
            metrics.clone(),
        )
        .start();
        let (livekit, rtc) = media_transport(&settings)?;
        if let Some(rtc) = &rtc {
            metrics.watch_rtc(rtc.clone());
        }
        let session_deps = Arc::new(SessionDeps {
            store: store.clone(),
            billing: billing.clone(),
            registry: registry.clone().recipient(),
            webhooks: webhooks.clone(),
            rooms: rooms.clone(),
            render_pool: render_pool.clone(),
            metrics: metrics.clone(),
            settings: settings.clone(),
            http: http.clone(),
            tts: Default::default(),
            livekit,
            rtc: rtc.clone(),
        });
        let cluster = match settings.cluster.nats_url.trim() {
            "" => None,
            url => Some(
                Cluster::connect(
                    url,
                    &settings.cluster.subject_prefix,
                    &node_id,
                    Duration::from_millis(settings.cluster.request_timeout_ms.max(1)),
                )
                .await?,
            ),
        };
        let sessions = SessionService::new(
            session_deps,
            quota,
            registry.clone(),
            node_id.clone(),
            cluster,
        );
        let state = AppState {
            settings: settings.clone(),
            store,
            registry,
            webhooks,
            rooms,
            media,
            render_pool,
            sessions,
            limits: crate::api::limits::RateLimits::new(&settings.limits, metrics.clone()),
            metrics,
            http,
            urls,
            policy,
            node_id,
        };
        crate::jobs::orphans::reconcile(&state).await;
        // A SQLite file has one node: there are no other nodes to watch.
        if !settings.database_url().starts_with("sqlite:") {
            actix_web::rt::spawn(crate::jobs::orphans::watch_nodes(state.clone()));
        }
        actix_web::rt::spawn(state.sessions.clone().serve_forwarded());
        actix_web::rt::spawn(state.sessions.clone().join_cluster());
        actix_web::rt::spawn(crate::ws::relay::serve(state.clone()));
        actix_web::rt::spawn(crate::api::rtc::serve(state.clone()));
        actix_web::rt::spawn(watch_database(state.store.clone(), state.metrics.clone()));
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap_fn(crate::api::observe)
                .configure(crate::api::routes)
                .default_service(web::to(crate::api::not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        tracing::info!(%addr, base = %public_base_url, rooms = ?state.rooms, "listening");
        println!("avatar-supervisor listening on {public_base_url}");
        Ok(Self {
            port: addr.port(),
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the server stops or SIGTERM/Ctrl-C arrives; then drains sessions and stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let state = self.state;
        let server = actix_web::rt::spawn(self.server);
        shutdown_signal().await;
        tracing::info!("shutting down: draining sessions");
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_seconds);
        state.sessions.drain(grace).await;
        handle.stop(true).await;
        let _ = server.await;
        Ok(())
    }
}

/// How often the database is pinged for `avs_database_up`.
const DATABASE_PING: Duration = Duration::from_secs(5);

/// Keeps `avs_database_up` current: 1 while the database answers a ping, 0 while it does not.
async fn watch_database(store: Store, metrics: Metrics) {
    loop {
        let up = tokio::time::timeout(DATABASE_PING, store.ready())
            .await
            .is_ok_and(|r| r.is_ok());
        metrics.database_up.set(up as i64);
        tokio::time::sleep(DATABASE_PING).await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What `serve --check` prints: each thing the server loads, where it was looked for and whether
/// it is there (or answers), and whether the server could start with them.
pub async fn check(settings: &Settings) -> (String, bool) {
    let mut lines = Vec::new();
    let mut ready = true;
    let mut report = |what: &str, required: bool, found: Result<String, String>| {
        let (mark, detail) = match found {
            Ok(detail) => ("ok", detail),
            Err(detail) if required => {
                ready = false;
                ("MISSING", detail)
            }
            Err(detail) => ("absent", detail),
        };
        lines.push(format!("{mark:<8} {what:<22} {detail}"));
    };
    let file = |path: PathBuf, fix: &str| {
        if path.exists() {
            Ok(path.display().to_string())
        } else {
            Err(format!("{} does not exist: {fix}", path.display()))
        }
    };
    let url = settings.database_url();
    let shown = match url::Url::parse(&url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.clone(),
    };
    let answered = match sea_orm::Database::connect(&url).await {
        Ok(db) => db
            .ping()
            .await
            .map(|_| shown.clone())
            .map_err(|e| format!("{shown} does not answer: {e}")),
        Err(e) => Err(format!("{shown} cannot be opened: {e}")),
    };
    report("database", true, answered);
    let onnxruntime = settings
        .media
        .onnxruntime_path()
        .unwrap_or_else(|| PathBuf::from(".setup/libonnxruntime.so"));
    report(
        "onnxruntime",
        true,
        file(
            onnxruntime,
            "run `make setup`, or set ORT_DYLIB_PATH / media.onnxruntime",
        ),
    );
    report(
        "face model",
        true,
        file(
            settings.media.face_model_path(),
            "run `make setup`, or set media.face_model",
        ),
    );
    report(
        "face mesh",
        true,
        file(
            settings.media.face_mesh_model_path(),
            "run `make setup`, or set media.face_mesh_model",
        ),
    );
    report(
        "default portrait",
        false,
        file(
            settings.agents.default_avatar_path(),
            "generate requests must bring an image; run `make setup` or set agents.default_avatar_image",
        ),
    );
    let espeak = crate::voice::tts::check(&settings.voice.espeak_voice)
        .await
        // A missing library says to run `make setup`; a missing voice names the voice.
        .map_err(|e| e.to_string());
    report("espeak-ng (local TTS)", true, espeak);
    if !settings.render.lipsync_model.is_empty() {
        report(
            "lip-sync model",
            true,
            file(
                PathBuf::from(&settings.render.lipsync_model),
                "set render.lipsync_model",
            ),
        );
    }
    if settings.livekit_enabled() {
        report(
            "rooms",
            true,
            Ok(format!("LiveKit at {}", settings.livekit.url)),
        );
        if settings.livekit.avatar_participant {
            report(
                "LiveKit FFI library",
                true,
                file(
                    settings.livekit.ffi_library_path(),
                    "run `make setup`, or set livekit.ffi_library",
                ),
            );
        }
        report(
            "livekit-client (page)",
            false,
            file(
                settings.web.livekit_client_path(),
                "room pages cannot play a LiveKit room; run `make setup`",
            ),
        );
    } else {
        report(
            "rooms",
            true,
            Ok(format!(
                "local (WebRTC media on {}, advertised as {})",
                settings.media.bind_ip,
                if settings.media.public_ip.is_empty() {
                    settings.media.bind_ip.to_string()
                } else {
                    settings.media.public_ip.clone()
                }
            )),
        );
    }
    let verdict = if ready {
        "the server can start"
    } else {
        "the server cannot start: fix what is MISSING"
    };
    lines.push(verdict.to_string());
    (lines.join("\n"), ready)
}
