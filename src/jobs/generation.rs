//! Agent generation: a background job with persisted progress. It fetches or decodes the image,
//! checks its format and size, stores it (`image_fetched`), finds exactly one face with CenterFace
//! (`face_detected`), frames it at the agent's aspect ratio (`avatar_cropped`), and stores the
//! renderer's model of it: landmarks and mouth region (`lip_created`). A failure marks the agent
//! `failed` with a sentence saying why, and refunds its credits. Decoding and inference run on
//! the blocking pool, never on an actor or an HTTP worker.

use std::io::Cursor;
use std::time::Duration;

use url::Url;

use crate::actors::webhooks::EmitAgent;
use crate::domain::agent::AgentStatus;
use crate::domain::agent::ModelAsset;
use crate::domain::ids;
use crate::media::avatar;
use crate::net::read_limited;
use crate::state::AppState;
use crate::store::agents::Progress;
use crate::store::entities::{agent, asset};
use crate::store::now_ms;

/// A failure of this server rather than of the request: the detail goes to the log, the agent's
/// `error_message` gets a stable sentence.
fn internal(what: &str, detail: impl std::fmt::Display) -> String {
    tracing::error!(%detail, "generation: internal error while {what}");
    format!("internal error while {what}")
}

pub const MIN_SIDE: u32 = 256;
const MAX_SIDE: u32 = 8192;

#[derive(Debug)]
pub enum MediaSource {
    Url(Url),
    Inline(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct Sources {
    pub image: Option<MediaSource>,
    pub video: Option<MediaSource>,
    pub audio: Option<MediaSource>,
}

pub fn spawn(state: AppState, agent_id: String, sources: Sources) {
    actix_web::rt::spawn(async move {
        let outcome = run(&state, &agent_id, sources).await;
        let ready = outcome.is_ok();
        if let Err(message) = outcome {
            tracing::info!(agent = %agent_id, %message, "generation failed");
            if let Err(e) = state.store.fail_agent(&agent_id, &message).await {
                tracing::error!(agent = %agent_id, error = %e, "could not record failed generation");
            }
        }
        state
            .metrics
            .agent_generations
            .with_label_values(&[if ready { "ready" } else { "failed" }])
            .inc();
        state.webhooks.do_send(EmitAgent { agent_id, ready });
    });
}

async fn step(
    state: &AppState,
    id: &str,
    status: AgentStatus,
    progress: f64,
    message: &str,
    step: Option<&str>,
) -> Result<(), String> {
    state
        .store
        .set_agent_progress(
            id,
            Progress {
                status,
                progress,
                message,
                step,
            },
        )
        .await
        .map_err(|e| internal("saving progress", e))
}

async fn run(state: &AppState, id: &str, sources: Sources) -> Result<(), String> {
    let Some(agent) = state
        .store
        .agent(id)
        .await
        .map_err(|e| internal("reading the agent", e))?
    else {
        return Err("agent was deleted".into());
    };
    step(
        state,
        id,
        AgentStatus::Generating,
        0.05,
        "Fetching image",
        None,
    )
    .await?;
    let bytes = match sources.image {
        Some(source) => load(state, "image", source).await?,
        None => default_image(state).await?,
    };
    let checked = blocking("image check", move || inspect_image(bytes)).await?;
    let image_id = store_asset(
        state,
        &agent,
        "image",
        checked.content_type,
        Some((checked.width, checked.height)),
        checked.bytes,
    )
    .await?;
    set_asset(state, id, agent::Column::ImageAssetId, &image_id).await?;
    step(
        state,
        id,
        AgentStatus::Generating,
        0.3,
        "Image fetched",
        Some("image_fetched"),
    )
    .await?;

    let faces = state.media.faces.clone();
    let image = std::sync::Arc::new(checked.image);
    let found = {
        let image = image.clone();
        let histogram = state.metrics.face_detection_seconds.clone();
        blocking("face detection", move || {
            let _timer = histogram.start_timer();
            faces
                .detect(&image)
                .map_err(|e| internal("detecting faces", e))
        })
        .await?
    };
    let face = match found.as_slice() {
        [] => return Err("no face detected".into()),
        [face] => face.clone(),
        many => return Err(format!("{} faces detected", many.len())),
    };
    step(
        state,
        id,
        AgentStatus::Generating,
        0.5,
        "Face detected",
        Some("face_detected"),
    )
    .await?;

    let ratio = agent.aspect_ratio.clone();
    let max_side = state.settings.render.max_side;
    let mesher = state.media.mesher.clone();
    let (model, crop_png) = blocking("avatar crop", move || {
        let (mut model, crop) = avatar::build(&image, &face, &ratio, max_side);
        model.mesh = Some(mesher.mesh_or_why(&crop, &model.face));
        let mut png = Cursor::new(Vec::new());
        crop.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| format!("avatar crop could not be encoded: {e}"))?;
        Ok((model, png.into_inner()))
    })
    .await?;
    let avatar_id = store_asset(
        state,
        &agent,
        "avatar",
        "image/png",
        Some((model.width, model.height)),
        crop_png,
    )
    .await?;
    set_asset(state, id, agent::Column::AvatarAssetId, &avatar_id).await?;
    step(
        state,
        id,
        AgentStatus::Generating,
        0.7,
        "Avatar cropped",
        Some("avatar_cropped"),
    )
    .await?;

    let document = serde_json::to_vec(&ModelAsset {
        avatar_asset_id: &avatar_id,
        model: &model,
    })
    .map_err(|e| internal("describing the avatar", e))?;
    let model_id = store_asset(
        state,
        &agent,
        "model",
        "application/json",
        Some((model.width, model.height)),
        document,
    )
    .await?;
    set_asset(state, id, agent::Column::ModelAssetId, &model_id).await?;
    step(
        state,
        id,
        AgentStatus::Generating,
        0.85,
        "Lip region created",
        Some("lip_created"),
    )
    .await?;

    for (kind, source, column) in [
        ("video", sources.video, agent::Column::VideoAssetId),
        ("audio", sources.audio, agent::Column::AudioAssetId),
    ] {
        if let Some(source) = source {
            let bytes = load(state, kind, source).await?;
            let content_type = sniff(&bytes, kind);
            let asset_id = store_asset(state, &agent, kind, content_type, None, bytes).await?;
            set_asset(state, id, column, &asset_id).await?;
        }
    }
    step(
        state,
        id,
        AgentStatus::Completed,
        0.95,
        "Finishing",
        Some("lip_created"),
    )
    .await?;
    step(
        state,
        id,
        AgentStatus::Ready,
        1.0,
        "Done",
        Some("lip_created"),
    )
    .await?;
    Ok(())
}

async fn set_asset(
    state: &AppState,
    id: &str,
    column: agent::Column,
    asset_id: &str,
) -> Result<(), String> {
    state
        .store
        .set_agent_asset(id, column, asset_id)
        .await
        .map_err(|e| internal("saving the agent", e))
}

/// Runs `work` on the blocking pool; a panic there is a failed step, not a dead job.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| format!("{what} crashed"))?
}

async fn load(state: &AppState, kind: &str, source: MediaSource) -> Result<Vec<u8>, String> {
    match source {
        MediaSource::Inline(bytes) => Ok(bytes),
        MediaSource::Url(url) => {
            state
                .policy
                .check_resolved(&url)
                .await
                .map_err(|e| format!("{kind} URL refused: {e}"))?;
            let timeout = Duration::from_secs(state.settings.agents.fetch_timeout_seconds);
            let response = state
                .http
                .get(url.clone())
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("could not fetch {kind} from {url}: {}", e.without_url()))?;
            if !response.status().is_success() {
                return Err(format!(
                    "could not fetch {kind} from {url}: HTTP {}",
                    response.status().as_u16()
                ));
            }
            read_limited(response, state.settings.agents.max_image_bytes)
                .await
                .map_err(|e| format!("could not fetch {kind} from {url}: {e}"))
        }
    }
}

async fn default_image(state: &AppState) -> Result<Vec<u8>, String> {
    let path = state.settings.agents.default_avatar_path();
    tokio::fs::read(&path).await.map_err(|e| {
        // Where it was looked for is the operator's business, not the client's.
        tracing::warn!(path = %path.display(), error = %e, "default avatar image unreadable; run `make setup` or set agents.default_avatar_image");
        "no image given and this server has no default avatar image".to_string()
    })
}

struct CheckedImage {
    bytes: Vec<u8>,
    image: image::RgbImage,
    width: u32,
    height: u32,
    content_type: &'static str,
}

/// Decodes the whole image (a header alone can lie) within size limits, and checks its size.
fn inspect_image(bytes: Vec<u8>) -> Result<CheckedImage, String> {
    let mut reader = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("image could not be read: {e}"))?;
    let format = reader
        .format()
        .ok_or("not an image (supported: PNG, JPEG, WebP)")?;
    let content_type = match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::Jpeg => "image/jpeg",
        image::ImageFormat::WebP => "image/webp",
        _ => return Err("unsupported image format (supported: PNG, JPEG, WebP)".into()),
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| format!("image could not be decoded: {e}"))?;
    let (width, height) = (decoded.width(), decoded.height());
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(format!(
            "image too small: {width}x{height}, need at least {MIN_SIDE}x{MIN_SIDE}"
        ));
    }
    Ok(CheckedImage {
        bytes,
        image: decoded.to_rgb8(),
        width,
        height,
        content_type,
    })
}

fn sniff(bytes: &[u8], kind: &str) -> &'static str {
    match (kind, bytes) {
        (_, [0x1a, 0x45, 0xdf, 0xa3, ..]) => "video/webm",
        (_, [_, _, _, _, b'f', b't', b'y', b'p', ..]) => "video/mp4",
        (_, [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..]) => "audio/wav",
        (_, [b'I', b'D', b'3', ..]) | (_, [0xff, 0xfb, ..]) => "audio/mpeg",
        (_, [b'O', b'g', b'g', b'S', ..]) => "audio/ogg",
        _ => "application/octet-stream",
    }
}

async fn store_asset(
    state: &AppState,
    agent: &agent::Model,
    kind: &str,
    content_type: &str,
    size: Option<(u32, u32)>,
    data: Vec<u8>,
) -> Result<String, String> {
    let id = ids::asset_id();
    state
        .store
        .insert_asset(asset::Model {
            id: id.clone(),
            account_id: agent.account_id.clone(),
            agent_id: agent.id.clone(),
            kind: kind.to_string(),
            content_type: content_type.to_string(),
            width: size.map(|s| s.0 as i64),
            height: size.map(|s| s.1 as i64),
            data,
            created_at: now_ms(),
        })
        .await
        .map_err(|e| internal(&format!("storing the {kind}"), e))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([120, 90, 60]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn too_small_names_both_sizes() {
        let err = inspect_image(png(120, 90)).err().unwrap();
        assert_eq!(err, "image too small: 120x90, need at least 256x256");
    }

    #[test]
    fn accepts_a_real_png() {
        let ok = inspect_image(png(256, 300)).ok().unwrap();
        assert_eq!(
            (ok.width, ok.height, ok.content_type),
            (256, 300, "image/png")
        );
    }

    #[test]
    fn refuses_non_images_and_truncated_images() {
        assert!(inspect_image(b"hello world, not an image".to_vec()).is_err());
        let mut cut = png(300, 300);
        cut.truncate(cut.len() / 2);
        assert!(inspect_image(cut)
            .err()
            .unwrap()
            .contains("could not be decoded"));
    }
}
