//! What every handler gets through `web::Data`: actor addresses, the store, settings, metrics.
//! No globals, so a test process can run several apps side by side.

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::registry::Registry;
use crate::actors::render_pool::RenderPool;
use crate::actors::service::SessionService;
use crate::actors::webhooks::Webhooks;
use crate::config::Settings;
use crate::domain::views::Urls;
use crate::livekit::RoomBackend;
use crate::media::MediaRuntime;
use crate::metrics::Metrics;
use crate::net::UrlPolicy;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub registry: Addr<Registry>,
    pub webhooks: Addr<Webhooks>,
    pub rooms: Arc<RoomBackend>,
    /// The ONNX runtime and the face detector (generation).
    pub media: Arc<MediaRuntime>,
    pub render_pool: Addr<RenderPool>,
    /// Starts and stops sessions (admission and its compensation live there).
    pub sessions: SessionService,
    pub metrics: Metrics,
    pub limits: crate::api::limits::RateLimits,
    pub http: reqwest::Client,
    pub urls: Urls,
    pub policy: UrlPolicy,
    pub node_id: String,
}
