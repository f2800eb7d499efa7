//! A room the caller brings (`POST /v1/sessions` with `room: {livekit_url, livekit_token}`): the
//! avatar joins someone else's LiveKit room with the token they minted with their own keys, as the
//! hosted avatars of LiveKit Agents do. This server holds no key of that room, so the token is
//! read, not verified (LiveKit verifies it at the join), to refuse at once what could never join:
//! an expired token, one that is not a token, one for no room, one that may not publish.

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The participant attribute LiveKit Agents reads: the avatar publishes on behalf of this agent.
pub const PUBLISH_ON_BEHALF: &str = "lk.publish_on_behalf";

/// What the token says, and where to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BorrowedRoom {
    /// `ws(s)://`, as the FFI library connects.
    pub url: String,
    pub token: String,
    /// The room the token grants.
    pub room: String,
    /// The avatar's identity (the token's `sub`).
    pub identity: String,
    /// The agent the avatar speaks for: the token's `lk.publish_on_behalf` attribute. `None`: the
    /// first participant of kind `agent` in the room.
    pub agent: Option<String>,
    /// When the token expires (ms since the epoch).
    pub expires_at_ms: i64,
}

/// Why a token cannot be used; each names what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("room.livekit_url must be a ws://, wss://, http:// or https:// URL")]
    BadUrl,
    #[error("room.livekit_token is malformed: {0}")]
    Malformed(&'static str),
    #[error("room.livekit_token has expired")]
    Expired,
    #[error("room.livekit_token grants no room (its video grant needs roomJoin and a room)")]
    NoRoom,
    #[error("room.livekit_token does not allow publishing (video.canPublish is false)")]
    NoPublish,
}

#[derive(Deserialize)]
struct TokenClaims {
    exp: Option<i64>,
    #[serde(default)]
    sub: String,
    video: Option<VideoClaims>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VideoClaims {
    #[serde(default)]
    room_join: bool,
    #[serde(default)]
    room: String,
    can_publish: Option<bool>,
}

impl BorrowedRoom {
    /// Reads `token` for `url` at `now_ms`.
    pub fn parse(url: &str, token: &str, now_ms: i64) -> Result<Self, TokenProblem> {
        let url = url.trim();
        let ws = if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if url.starts_with("ws://") || url.starts_with("wss://") {
            url.to_string()
        } else {
            return Err(TokenProblem::BadUrl);
        };
        let host = ws
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || url.chars().any(char::is_whitespace) {
            return Err(TokenProblem::BadUrl);
        }

        let mut parts = token.split('.');
        let (Some(_header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenProblem::Malformed(
                "not a JWT (three dot-separated parts)",
            ));
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| TokenProblem::Malformed("its payload is not base64url"))?;
        let claims: TokenClaims = serde_json::from_slice(&json)
            .map_err(|_| TokenProblem::Malformed("its payload is not LiveKit's claims"))?;
        if claims.sub.is_empty() {
            return Err(TokenProblem::Malformed("it names no identity (sub)"));
        }
        let Some(exp) = claims.exp else {
            return Err(TokenProblem::Malformed("it has no expiry (exp)"));
        };
        let expires_at_ms = exp.saturating_mul(1000);
        if expires_at_ms <= now_ms {
            return Err(TokenProblem::Expired);
        }
        let video = claims.video.ok_or(TokenProblem::NoRoom)?;
        if !video.room_join || video.room.is_empty() {
            return Err(TokenProblem::NoRoom);
        }
        // LiveKit's default for an absent canPublish is true.
        if video.can_publish == Some(false) {
            return Err(TokenProblem::NoPublish);
        }
        let agent = claims
            .attributes
            .get(PUBLISH_ON_BEHALF)
            .filter(|a| !a.is_empty())
            .cloned();
        Ok(Self {
            url: ws,
            token: token.to_string(),
            room: video.room,
            identity: claims.sub,
            agent,
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::{AccessToken, VideoGrants};
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000_000;

    fn token(grants: VideoGrants, ttl: Duration, agent: Option<&str>) -> String {
        let mut t = AccessToken::with_api_key("devkey", "a-secret-of-at-least-thirty-two-chars")
            .with_identity("avatar")
            .with_kind("agent")
            .with_ttl(ttl)
            .with_grants(grants);
        if let Some(agent) = agent {
            t = t.with_attributes(HashMap::from([(
                PUBLISH_ON_BEHALF.to_string(),
                agent.to_string(),
            )]));
        }
        t.to_jwt().unwrap()
    }

    fn join(room: &str) -> VideoGrants {
        VideoGrants {
            room_join: true,
            room: room.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_names_its_room_identity_and_agent() {
        let now = chrono::Utc::now().timestamp_millis();
        let t = token(join("demo"), Duration::from_secs(600), Some("agent-1"));
        let room = BorrowedRoom::parse("https://lk.example", &t, now).unwrap();
        assert_eq!(room.url, "wss://lk.example");
        assert_eq!(
            (room.room.as_str(), room.identity.as_str()),
            ("demo", "avatar")
        );
        assert_eq!(room.agent.as_deref(), Some("agent-1"));
        let plain = token(join("demo"), Duration::from_secs(600), None);
        assert_eq!(
            BorrowedRoom::parse("ws://10.0.0.1:7880", &plain, now)
                .unwrap()
                .agent,
            None
        );
    }

    #[test]
    fn what_could_never_join_is_refused_saying_why() {
        let now = chrono::Utc::now().timestamp_millis();
        let good = token(join("demo"), Duration::from_secs(600), None);
        assert_eq!(
            BorrowedRoom::parse("ftp://x", &good, now),
            Err(TokenProblem::BadUrl)
        );
        assert_eq!(
            BorrowedRoom::parse("wss://", &good, now),
            Err(TokenProblem::BadUrl)
        );
        for bad in ["", "abc", "a.b", "a.!!!.c", "a.e30.c.d"] {
            assert!(
                matches!(
                    BorrowedRoom::parse("wss://lk", bad, now),
                    Err(TokenProblem::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            BorrowedRoom::parse("wss://lk", &good, NOW * 10),
            Err(TokenProblem::Expired)
        );
        let no_room = token(VideoGrants::default(), Duration::from_secs(600), None);
        assert_eq!(
            BorrowedRoom::parse("wss://lk", &no_room, now),
            Err(TokenProblem::NoRoom)
        );
        let no_publish = token(
            VideoGrants {
                can_publish: Some(false),
                ..join("demo")
            },
            Duration::from_secs(600),
            None,
        );
        assert_eq!(
            BorrowedRoom::parse("wss://lk", &no_publish, now),
            Err(TokenProblem::NoPublish)
        );
    }
}
