//! A fake LiveKit server, and a sender of LiveKit-signed webhooks. (One file past 600 lines: the
//! RoomService methods, their Twirp errors and the faults tests inject share one room table.)
//!
//! `FakeLiveKit` speaks RoomService the way `livekit-server` does, as seen by the `livekit-api`
//! client: Twirp over HTTP, `POST /twirp/livekit.RoomService/<Method>`, protobuf bodies
//! (`Content-Type: application/protobuf`), `Authorization: Bearer <jwt>` signed with the API
//! secret. Errors are Twirp JSON `{"code","msg"}` with Twirp's HTTP status for the code, except
//! where LiveKit itself answers otherwise (see `authenticate`).
//!
//! `LiveKitWebhookSender` posts webhooks as `livekit-server` does: the event as protobuf JSON, with
//! `Authorization: <jwt>` (no `Bearer`) whose `sha256` claim is the base64 SHA-256 of the body.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use livekit_api::access_token::{AccessToken, Claims, TokenVerifier, VideoGrants};
use livekit_protocol as proto;
use prost::Message;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// livekit-server's defaults (`room.empty_timeout`, `room.departure_timeout`) for a CreateRoom
/// that leaves them 0.
const DEFAULT_EMPTY_TIMEOUT: u32 = 300;
const DEFAULT_DEPARTURE_TIMEOUT: u32 = 20;

/// livekit-server signs webhook tokens for five minutes.
const WEBHOOK_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

// ---------------------------------------------------------------------------------------------
// FakeLiveKit
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct State {
    unavailable: bool,
    /// Room name → room, as ListRooms reports it.
    rooms: BTreeMap<String, proto::Room>,
    /// Room name → participants, as ListParticipants reports them.
    participants: BTreeMap<String, Vec<proto::ParticipantInfo>>,
    created: Vec<String>,
    deleted: Vec<String>,
    /// RoomService method names, in arrival order (including refused calls).
    calls: Vec<String>,
    requests: usize,
}

struct Shared {
    api_key: String,
    api_secret: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("fake LiveKit state lock poisoned by a panicking test")
    }
}

pub struct FakeLiveKit {
    url: String,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl FakeLiveKit {
    /// Starts the fake on a free loopback port, accepting tokens signed with `api_key`/`api_secret`.
    /// Call from inside an actix (or tokio) runtime.
    pub async fn start(api_key: &str, api_secret: &str) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            state: Mutex::new(State::default()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/twirp/livekit.RoomService/{method}",
                    web::post().to(room_service),
                )
                .default_service(web::to(unrouted))
        })
        .workers(1)
        // The test process owns signals; a fake must not react to Ctrl-C on its own.
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen on the bound port")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            handle,
        }
    }

    /// `http://127.0.0.1:PORT`: what `RoomClient::with_api_key` takes (it would also turn a
    /// `ws://` URL into this).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    pub fn api_secret(&self) -> &str {
        &self.shared.api_secret
    }

    /// While true, every call answers 503 Twirp `unavailable`, like a LiveKit behind a load
    /// balancer with no healthy node.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.lock().unavailable = unavailable;
    }

    /// Names of the rooms that exist now, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.shared.lock().rooms.keys().cloned().collect()
    }

    /// The room as ListRooms would report it (sid, creation time, timeouts, metadata).
    pub fn room(&self, name: &str) -> Option<proto::Room> {
        self.shared.lock().rooms.get(name).cloned()
    }

    /// Room names of every successful CreateRoom, in order. CreateRoom of an existing room is
    /// idempotent in LiveKit (same sid) but still listed here.
    pub fn created(&self) -> Vec<String> {
        self.shared.lock().created.clone()
    }

    /// Room names of every successful DeleteRoom, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.shared.lock().deleted.clone()
    }

    /// RoomService method names of every call that reached the service, in order, refused ones
    /// included (e.g. `["CreateRoom", "ListRooms"]`).
    pub fn calls(&self) -> Vec<String> {
        self.shared.lock().calls.clone()
    }

    /// Every HTTP request the fake received, refused ones included.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests
    }

    /// Closes a room as LiveKit does on its own (empty timeout, last participant left): it
    /// disappears from ListRooms without a DeleteRoom. Returns whether it existed.
    pub fn close_room(&self, name: &str) -> bool {
        let mut state = self.shared.lock();
        state.participants.remove(name);
        state.rooms.remove(name).is_some()
    }

    /// Puts an active participant in an existing room, for ListParticipants.
    pub fn add_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        let mut state = self.shared.lock();
        assert!(
            state.rooms.contains_key(room),
            "add_participant: no room {room:?} in the fake LiveKit"
        );
        let participant = participant_info(&new_sid("PA_"), identity, "participant_joined");
        let participants = state.participants.entry(room.to_string()).or_default();
        participants.retain(|p| p.identity != identity);
        participants.push(participant.clone());
        let count = participants.len() as u32;
        if let Some(r) = state.rooms.get_mut(room) {
            r.num_participants = count;
        }
        participant
    }

    /// Takes a participant out of a room again. Returns whether it was there.
    pub fn remove_participant(&self, room: &str, identity: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(participants) = state.participants.get_mut(room) else {
            return false;
        };
        let before = participants.len();
        participants.retain(|p| p.identity != identity);
        let (removed, count) = (participants.len() < before, participants.len() as u32);
        if let Some(r) = state.rooms.get_mut(room) {
            r.num_participants = count;
        }
        removed
    }

    /// A webhook sender signing with this fake's credentials.
    pub fn webhook_sender(&self, target_url: impl Into<String>) -> LiveKitWebhookSender {
        LiveKitWebhookSender {
            target_url: target_url.into(),
            api_key: self.shared.api_key.clone(),
            api_secret: self.shared.api_secret.clone(),
        }
    }

    /// Stops the server and waits until it has let go of its port.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Drop for FakeLiveKit {
    fn drop(&mut self) {
        // `stop` sends its command immediately; the returned future only waits for completion,
        // which a synchronous drop cannot do. A second stop after `stop().await` is a no-op.
        drop(self.handle.stop(false));
    }
}

/// One RoomService call, in the order livekit-server handles it: the node must be up, the auth
/// middleware vets the token, Twirp routes and decodes, then the service checks the grant.
async fn room_service(
    req: HttpRequest,
    method: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let method = method.into_inner();
    {
        let mut state = shared.lock();
        state.requests += 1;
        state.calls.push(method.clone());
    }
    match handle_call(&req, &method, &body, &shared) {
        Ok(encoded) => HttpResponse::Ok()
            .content_type("application/protobuf")
            .body(encoded),
        Err(refusal) => refusal.into_response(),
    }
}

/// A RoomService handler: decodes its request, checks the grant, answers the encoded response.
type Handler = fn(&Shared, Option<&Claims>, &[u8]) -> Result<Vec<u8>, Refusal>;

fn handle_call(
    req: &HttpRequest,
    method: &str,
    body: &[u8],
    shared: &Shared,
) -> Result<Vec<u8>, Refusal> {
    if shared.lock().unavailable {
        return Err(Refusal::twirp(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "fake LiveKit set unavailable",
        ));
    }
    let claims = authenticate(req, shared)?;
    let handler: Handler = match method {
        "CreateRoom" => create_room,
        "DeleteRoom" => delete_room,
        "ListRooms" => list_rooms,
        "ListParticipants" => list_participants,
        "GetParticipant"
        | "RemoveParticipant"
        | "MutePublishedTrack"
        | "UpdateParticipant"
        | "UpdateSubscriptions"
        | "SendData"
        | "UpdateRoomMetadata"
        | "ForwardParticipant"
        | "MoveParticipant"
        | "PerformRpc" => {
            return Err(Refusal::twirp(
                StatusCode::NOT_IMPLEMENTED,
                "unimplemented",
                format!("the fake LiveKit does not implement RoomService.{method}"),
            ))
        }
        _ => return Err(Refusal::bad_route(req)),
    };
    check_content_type(req)?;
    handler(shared, claims.as_ref(), body)
}

/// Twirp answers anything it cannot route (wrong verb, service or path) with `bad_route`.
async fn unrouted(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().requests += 1;
    Refusal::bad_route(&req).into_response()
}

/// Why a call was refused; becomes the HTTP response LiveKit would give.
#[derive(Debug)]
enum Refusal {
    /// Twirp error JSON `{"code","msg"}`, with the HTTP status Twirp uses for that code.
    Twirp {
        status: StatusCode,
        code: &'static str,
        msg: String,
    },
    /// LiveKit's auth middleware, which answers before Twirp: a bare 401 with a plain-text body.
    Unauthorized(String),
}

impl Refusal {
    fn twirp(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        Refusal::Twirp {
            status,
            code,
            msg: msg.into(),
        }
    }

    fn bad_route(req: &HttpRequest) -> Self {
        Refusal::twirp(
            StatusCode::NOT_FOUND,
            "bad_route",
            format!("no handler for path {:?}", req.path()),
        )
    }

    fn into_response(self) -> HttpResponse {
        match self {
            Refusal::Twirp { status, code, msg } => HttpResponse::build(status)
                .content_type("application/json")
                .body(serde_json::json!({ "code": code, "msg": msg }).to_string()),
            Refusal::Unauthorized(text) => HttpResponse::Unauthorized()
                .content_type("text/plain; charset=utf-8")
                .body(text),
        }
    }
}

/// LiveKit's API-key middleware. Unlike everything behind it, it does not speak Twirp: a malformed
/// header or a token that fails verification gets a plain-text 401, which the `livekit-api`
/// client then fails to parse as a Twirp error. A request with no token passes through without
/// claims and is refused later by the grant check, as Twirp `unauthenticated`.
fn authenticate(req: &HttpRequest, shared: &Shared) -> Result<Option<Claims>, Refusal> {
    let Some(header) = req.headers().get("authorization") else {
        return Ok(None);
    };
    let header = header.to_str().unwrap_or_default();
    let Some(token) = header.strip_prefix("Bearer ") else {
        return Err(Refusal::Unauthorized(
            "invalid authorization header. Must start with Bearer ".into(),
        ));
    };
    TokenVerifier::with_api_key(&shared.api_key, &shared.api_secret)
        .verify(token)
        .map(Some)
        .map_err(|e| Refusal::Unauthorized(format!("invalid token: {token}, error: {e}")))
}

/// Twirp's own content negotiation: protobuf and JSON are both Twirp, anything else is a bad route.
fn check_content_type(req: &HttpRequest) -> Result<(), Refusal> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/protobuf" => Ok(()),
        // Real LiveKit accepts Twirp JSON too; `livekit-api` never sends it, so the fake need not.
        "application/json" => Err(Refusal::twirp(
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
            "the fake LiveKit speaks protobuf Twirp only",
        )),
        _ => Err(Refusal::twirp(
            StatusCode::NOT_FOUND,
            "bad_route",
            format!("unexpected Content-Type: {content_type:?}"),
        )),
    }
}

fn create_room(shared: &Shared, claims: Option<&Claims>, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let request: proto::CreateRoomRequest = decode(body)?;
    require(claims, |video| video.room_create)?;

    let mut state = shared.lock();
    let (secs, millis) = now();
    // LiveKit's allocator loads an existing room and updates it (same sid), or starts a new one
    // from the server defaults; only non-zero request fields override.
    let room = state
        .rooms
        .entry(request.name.clone())
        .or_insert_with(|| proto::Room {
            sid: new_sid("RM_"),
            name: request.name.clone(),
            empty_timeout: DEFAULT_EMPTY_TIMEOUT,
            departure_timeout: DEFAULT_DEPARTURE_TIMEOUT,
            creation_time: secs,
            creation_time_ms: millis,
            ..Default::default()
        });
    if request.empty_timeout > 0 {
        room.empty_timeout = request.empty_timeout;
    }
    if request.departure_timeout > 0 {
        room.departure_timeout = request.departure_timeout;
    }
    if request.max_participants > 0 {
        room.max_participants = request.max_participants;
    }
    if !request.metadata.is_empty() {
        room.metadata = request.metadata.clone();
    }
    let encoded = room.encode_to_vec();
    state.created.push(request.name);
    Ok(encoded)
}

fn delete_room(shared: &Shared, claims: Option<&Claims>, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let request: proto::DeleteRoomRequest = decode(body)?;
    require(claims, |video| video.room_create)?;

    let mut state = shared.lock();
    if state.rooms.remove(&request.room).is_none() {
        return Err(Refusal::twirp(
            StatusCode::NOT_FOUND,
            "not_found",
            "room not found",
        ));
    }
    state.participants.remove(&request.room);
    state.deleted.push(request.room);
    Ok(proto::DeleteRoomResponse {}.encode_to_vec())
}

fn list_rooms(shared: &Shared, claims: Option<&Claims>, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let request: proto::ListRoomsRequest = decode(body)?;
    require(claims, |video| video.room_list)?;

    let state = shared.lock();
    // An empty filter lists every room; names that match no room are simply absent.
    let rooms = state
        .rooms
        .values()
        .filter(|room| request.names.is_empty() || request.names.contains(&room.name))
        .cloned()
        .collect();
    Ok(proto::ListRoomsResponse { rooms }.encode_to_vec())
}

fn list_participants(
    shared: &Shared,
    claims: Option<&Claims>,
    body: &[u8],
) -> Result<Vec<u8>, Refusal> {
    let request: proto::ListParticipantsRequest = decode(body)?;
    // Admin grants are per room in LiveKit: `roomAdmin` only counts for the token's `room`.
    require(claims, |video| {
        video.room_admin && video.room == request.room
    })?;

    let state = shared.lock();
    // An unknown room is not an error here: livekit-server answers an empty list.
    let participants = state
        .participants
        .get(&request.room)
        .cloned()
        .unwrap_or_default();
    Ok(proto::ListParticipantsResponse { participants }.encode_to_vec())
}

/// The service-level permission check (`EnsureCreatePermission` and friends in livekit-server).
fn require(claims: Option<&Claims>, allowed: impl Fn(&VideoGrants) -> bool) -> Result<(), Refusal> {
    match claims {
        Some(claims) if allowed(&claims.video) => Ok(()),
        _ => Err(Refusal::twirp(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "permissions denied",
        )),
    }
}

fn decode<M: Message + Default>(body: &[u8]) -> Result<M, Refusal> {
    M::decode(body).map_err(|_| {
        Refusal::twirp(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the protobuf request could not be decoded",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// LiveKitWebhookSender
// ---------------------------------------------------------------------------------------------

/// Posts LiveKit webhooks to the app under test (`target_url`, e.g. its `/livekit/webhook`).
#[derive(Debug, Clone)]
pub struct LiveKitWebhookSender {
    pub target_url: String,
    pub api_key: String,
    pub api_secret: String,
}

impl LiveKitWebhookSender {
    /// Builds, signs and posts `event` (`room_started`, `participant_joined`, ...) for a room and,
    /// for participant events, a participant. Panics if the app cannot be reached at all.
    pub async fn send(
        &self,
        event: &str,
        room_name: &str,
        participant_identity: Option<&str>,
    ) -> reqwest::Response {
        self.send_event(&self.event(event, room_name, participant_identity))
            .await
    }

    /// Signs and posts an event built by hand (or by [`Self::event`] and then adjusted, e.g. with
    /// `event.room = fake.room(name)` to carry the fake LiveKit's real sid).
    pub async fn send_event(&self, event: &proto::WebhookEvent) -> reqwest::Response {
        let body = webhook_body(event);
        let auth = self.sign(&body);
        self.send_raw(&body, Some(&auth)).await
    }

    /// Posts `body` as-is with the given `Authorization` value (none when `None`): for tampered
    /// bodies, foreign signatures and missing headers.
    pub async fn send_raw(&self, body: &str, auth: Option<&str>) -> reqwest::Response {
        let mut request = super::http_client()
            .post(&self.target_url)
            .header("content-type", "application/webhook+json")
            .body(body.to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request
            .send()
            .await
            .expect("the app under test accepts the webhook connection")
    }

    /// The `Authorization` value LiveKit sends with `body`: a bare JWT (no `Bearer `) whose
    /// `sha256` claim is the standard-base64 SHA-256 of the exact body bytes.
    pub fn sign(&self, body: &str) -> String {
        let digest = Sha256::digest(body.as_bytes());
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_ttl(WEBHOOK_TOKEN_TTL)
            .with_sha256(&base64::engine::general_purpose::STANDARD.encode(digest))
            .to_jwt()
            .expect("webhook API key and secret are non-empty")
    }

    /// The event LiveKit would send. The room's and participant's sids are derived from their
    /// names, so successive events about the same room or participant agree with each other (but
    /// not with `FakeLiveKit`'s random sids; patch `event.room` from `FakeLiveKit::room` when a
    /// test needs that).
    pub fn event(
        &self,
        event: &str,
        room_name: &str,
        participant_identity: Option<&str>,
    ) -> proto::WebhookEvent {
        let (secs, millis) = now();
        let room = proto::Room {
            sid: stable_sid("RM_", room_name),
            name: room_name.to_string(),
            empty_timeout: DEFAULT_EMPTY_TIMEOUT,
            departure_timeout: DEFAULT_DEPARTURE_TIMEOUT,
            creation_time: secs,
            creation_time_ms: millis,
            ..Default::default()
        };
        let participant = participant_identity.map(|identity| {
            participant_info(
                &stable_sid("PA_", &format!("{room_name}/{identity}")),
                identity,
                event,
            )
        });
        proto::WebhookEvent {
            event: event.to_string(),
            room: Some(room),
            participant,
            id: new_sid("EV_"),
            created_at: secs,
            ..Default::default()
        }
    }
}

/// The JSON body LiveKit sends: protobuf JSON (Go `protojson`), i.e. lowerCamelCase names, int64
/// as strings, enums by name, zero values left out; `pbjson`'s serde output matches that. Go's
/// single-line protojson also puts a space after every comma in some builds (it is deliberately
/// unstable); do the same, so a receiver that re-serialises the event before checking the hash
/// fails here as it would against a real server.
pub fn webhook_body(event: &proto::WebhookEvent) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoProtojsonFormatter);
    serde::Serialize::serialize(event, &mut serializer).expect("a WebhookEvent serialises to JSON");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json's compact formatter with `", "` between elements, like Go protojson's single-line
/// output when its random-whitespace coin lands on "space".
struct GoProtojsonFormatter;

impl serde_json::ser::Formatter for GoProtojsonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
}

/// A participant as webhooks and ListParticipants describe one; `event` decides its state.
fn participant_info(sid: &str, identity: &str, event: &str) -> proto::ParticipantInfo {
    use proto::participant_info::State;
    let (secs, millis) = now();
    let (state, disconnect_reason) = match event {
        "participant_left" => (
            State::Disconnected,
            proto::DisconnectReason::ClientInitiated,
        ),
        "participant_connection_aborted" => (
            State::Disconnected,
            proto::DisconnectReason::ConnectionTimeout,
        ),
        // participant_joined fires once the participant is ACTIVE (media connected).
        _ => (State::Active, proto::DisconnectReason::UnknownReason),
    };
    proto::ParticipantInfo {
        sid: sid.to_string(),
        identity: identity.to_string(),
        name: identity.to_string(),
        state: state as i32,
        joined_at: secs,
        joined_at_ms: millis,
        version: 1,
        permission: Some(proto::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            ..Default::default()
        }),
        disconnect_reason: disconnect_reason as i32,
        ..Default::default()
    }
}

/// A LiveKit-style id: prefix plus 12 random base62 characters (`RM_`, `PA_`, `EV_`...).
fn new_sid(prefix: &str) -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("{prefix}{suffix}")
}

/// A LiveKit-style id that is always the same for the same `seed`.
fn stable_sid(prefix: &str, seed: &str) -> String {
    let digest = hex::encode(Sha256::digest(seed.as_bytes()));
    format!("{prefix}{}", &digest[..12])
}

/// Now as (unix seconds, unix milliseconds).
fn now() -> (i64, i64) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    (since_epoch.as_secs() as i64, since_epoch.as_millis() as i64)
}
