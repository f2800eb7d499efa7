//! Rooms: LiveKit's RoomService (Twirp, through `livekit-api`) when LiveKit is configured, otherwise
//! the local room this server runs itself. Both mint LiveKit-format access tokens (HS256, `iss` = API
//! key, `sub` = identity, `video` grant), so a client treats them alike.

use std::time::Duration;

use livekit_api::access_token::{AccessToken, Claims, TokenVerifier, VideoGrants};
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use livekit_api::webhooks::WebhookReceiver;

use crate::config::Settings;
use crate::crypto::MasterKey;

mod borrowed;
pub use borrowed::{BorrowedRoom, TokenProblem, PUBLISH_ON_BEHALF};

/// Key id of tokens the local room signs.
const LOCAL_KEY: &str = "avs-local";

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("LiveKit request failed: {0}")]
    LiveKit(String),
    #[error("token could not be minted: {0}")]
    Token(String),
}

/// The tokens and address a client and the avatar join with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RoomAccess {
    pub url: String,
    pub user_token: String,
    pub agent_token: String,
}

pub enum RoomBackend {
    LiveKit {
        client: RoomClient,
        url: String,
        api_key: String,
        api_secret: String,
    },
    Local {
        url: String,
        api_secret: String,
    },
}

impl std::fmt::Debug for RoomBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomBackend::LiveKit { url, .. } => write!(f, "RoomBackend::LiveKit({url})"),
            RoomBackend::Local { url, .. } => write!(f, "RoomBackend::Local({url})"),
        }
    }
}

impl RoomBackend {
    pub fn from_settings(settings: &Settings, master: &MasterKey, public_base_url: &str) -> Self {
        if settings.livekit_enabled() {
            let lk = &settings.livekit;
            let client = RoomClient::with_api_key(&lk.url, &lk.api_key, lk.api_secret.expose())
                .with_failover(false)
                .with_request_timeout(Duration::from_secs(5));
            RoomBackend::LiveKit {
                client,
                url: to_ws(&lk.url),
                api_key: lk.api_key.clone(),
                api_secret: lk.api_secret.expose().to_string(),
            }
        } else {
            RoomBackend::Local {
                url: to_ws(public_base_url),
                api_secret: master.derive("local-room-tokens"),
            }
        }
    }

    pub fn is_livekit(&self) -> bool {
        matches!(self, RoomBackend::LiveKit { .. })
    }

    pub async fn create(&self, room: &str, max_duration: Duration) -> Result<(), RoomError> {
        match self {
            RoomBackend::LiveKit { client, .. } => {
                let options = CreateRoomOptions {
                    // LiveKit closes an empty room itself too; the session's own idle timer is the rule.
                    empty_timeout: max_duration.as_secs().min(u32::MAX as u64) as u32,
                    max_participants: 8,
                    ..Default::default()
                };
                client
                    .create_room(room, options)
                    .await
                    .map_err(|e| RoomError::LiveKit(e.to_string()))?;
                Ok(())
            }
            RoomBackend::Local { .. } => Ok(()),
        }
    }

    /// Whether the room still exists (the Room child's health check).
    pub async fn exists(&self, room: &str) -> Result<bool, RoomError> {
        match self {
            RoomBackend::LiveKit { client, .. } => client
                .list_rooms(vec![room.to_string()])
                .await
                .map(|rooms| rooms.iter().any(|r| r.name == room))
                .map_err(|e| RoomError::LiveKit(e.to_string())),
            RoomBackend::Local { .. } => Ok(true),
        }
    }

    pub async fn delete(&self, room: &str) -> Result<(), RoomError> {
        match self {
            RoomBackend::LiveKit { client, .. } => client
                .delete_room(room)
                .await
                .map_err(|e| RoomError::LiveKit(e.to_string())),
            RoomBackend::Local { .. } => Ok(()),
        }
    }

    pub fn access(
        &self,
        room: &str,
        user: &str,
        agent: &str,
        ttl: Duration,
    ) -> Result<RoomAccess, RoomError> {
        let (url, key, secret) = match self {
            RoomBackend::LiveKit {
                url,
                api_key,
                api_secret,
                ..
            } => (url, api_key.as_str(), api_secret),
            RoomBackend::Local { url, api_secret } => (url, LOCAL_KEY, api_secret),
        };
        let user_token = AccessToken::with_api_key(key, secret)
            .with_identity(user)
            .with_name(user)
            .with_ttl(ttl)
            .with_grants(VideoGrants {
                room_join: true,
                room: room.to_string(),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| RoomError::Token(e.to_string()))?;
        let agent_token = AccessToken::with_api_key(key, secret)
            .with_identity(agent)
            .with_name(agent)
            .with_kind("agent")
            .with_ttl(ttl)
            .with_grants(VideoGrants {
                room_join: true,
                room: room.to_string(),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                agent: true,
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| RoomError::Token(e.to_string()))?;
        Ok(RoomAccess {
            url: url.clone(),
            user_token,
            agent_token,
        })
    }

    /// A token that opens one session's control and preview channels (`?token=`), as the
    /// participant's does, for an operator's console: it names the session's user (which is what
    /// the channels check) but grants no room join, so LiveKit would refuse it as a way in.
    pub fn observer_token(
        &self,
        room: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<String, RoomError> {
        let (key, secret) = match self {
            RoomBackend::LiveKit {
                api_key,
                api_secret,
                ..
            } => (api_key.as_str(), api_secret),
            RoomBackend::Local { api_secret, .. } => (LOCAL_KEY, api_secret),
        };
        AccessToken::with_api_key(key, secret)
            .with_identity(user)
            .with_name("console")
            .with_ttl(ttl)
            .with_grants(VideoGrants {
                room_join: false,
                room: room.to_string(),
                can_publish: Some(false),
                can_subscribe: Some(false),
                can_publish_data: Some(false),
                hidden: true,
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| RoomError::Token(e.to_string()))
    }

    /// Verifies a participant token this backend minted; the room it grants is the session's scope.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (key, secret) = match self {
            RoomBackend::LiveKit {
                api_key,
                api_secret,
                ..
            } => (api_key.as_str(), api_secret),
            RoomBackend::Local { api_secret, .. } => (LOCAL_KEY, api_secret),
        };
        TokenVerifier::with_api_key(key, secret).verify(token).ok()
    }

    /// LiveKit's signed webhooks: `None` without LiveKit configured.
    pub fn webhook_receiver(&self) -> Option<WebhookReceiver> {
        match self {
            RoomBackend::LiveKit {
                api_key,
                api_secret,
                ..
            } => Some(WebhookReceiver::new(TokenVerifier::with_api_key(
                api_key, api_secret,
            ))),
            RoomBackend::Local { .. } => None,
        }
    }
}

fn to_ws(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> RoomBackend {
        RoomBackend::Local {
            url: "ws://127.0.0.1:1".into(),
            api_secret: "s".repeat(32),
        }
    }

    #[test]
    fn local_tokens_are_scoped_to_their_room() {
        let backend = local();
        let access = backend
            .access("room-a", "user-1", "avatar-agent", Duration::from_secs(60))
            .unwrap();
        let user = backend.verify(&access.user_token).unwrap();
        assert_eq!(user.sub, "user-1");
        assert_eq!(user.video.room, "room-a");
        assert!(user.video.room_join && !user.video.agent);
        let agent = backend.verify(&access.agent_token).unwrap();
        assert_eq!(agent.kind, "agent");
        assert!(agent.video.agent);
        assert!(backend.verify("not-a-token").is_none());
        let other = RoomBackend::Local {
            url: String::new(),
            api_secret: "t".repeat(32),
        };
        assert!(other.verify(&access.user_token).is_none());
    }

    #[test]
    fn observer_tokens_name_the_user_but_join_nothing() {
        let backend = local();
        let token = backend
            .observer_token("room-a", "user-1", Duration::from_secs(60))
            .unwrap();
        let claims = backend.verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.video.room.as_str()),
            ("user-1", "room-a")
        );
        assert!(!claims.video.room_join && !claims.video.can_publish());
        assert!(claims.video.hidden);
    }

    #[test]
    fn ws_scheme() {
        assert_eq!(to_ws("https://lk.example"), "wss://lk.example");
        assert_eq!(to_ws("http://127.0.0.1:7880"), "ws://127.0.0.1:7880");
    }
}
