//! Shapes several handlers answer with: the `data` envelope, a started session's access, and raw
//! bytes, as serde and OpenAPI (utoipa) types.

use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// `{"success": true, "data": …}`: the envelope of this server's and bitHuman's reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub success: bool,
    pub data: T,
}

impl<T> Data<T> {
    pub fn new(data: T) -> Self {
        Self {
            success: true,
            data,
        }
    }
}

/// Bytes of a file (an image, a model): what `/v1/assets/{id}` and the portrait answer.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}

/// What a client needs to join a started session's room.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionAccess {
    pub success: bool,
    pub session_id: String,
    /// LiveKit's URL, or this server's for the local room.
    pub livekit_url: String,
    /// The user's token for the room (and this session's control channel); absent in a room
    /// the caller brought.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub participant_token: String,
    /// The avatar's identity in the room.
    pub agent_identity: String,
}
