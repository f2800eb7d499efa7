"""A fake LiveKit server that does real WebRTC, for tests of the avatar's LiveKit client.

One process, one port: LiveKit's signal protocol at /rtc (v0, two peer connections), the
RoomService Twirp API the server calls, and a JSON control API for tests under /control/.
Media is terminated with aiortc (ICE, DTLS, SRTP, VP8 and Opus decoding), so what the avatar
publishes is decoded here and measured.

    .setup/venv/bin/python tests/support/fake_livekit.py --host 10.99.0.1 --port 0 \
        --api-key devkey --api-secret <secret>

The first line on stdout is the bound port (a test reads it; --port 0 picks a free one).

Control API (JSON):
  GET  /control/state   {"gone", "rooms": [{"name", "sid", "deleted", "participants": [{"identity",
         "sid", "kind", "state": joined|active|left|disconnected, "joined_at", "left_at",
         "leave_reason": CLIENT_INITIATED|ROOM_DELETED|DUPLICATE_IDENTITY|null,
         "tracks": [{"sid", "name", "kind", "source"}]}]}]}
  GET  /control/observations?identity=I[&room=R]
         {"video": [{"t", "w", "h", "mouth"}], "audio": [{"t", "rms"}]}: one entry per decoded
         frame (t: arrival, unix seconds; mouth: mean luma of the mouth rectangle, or null) and
         per 20 ms of decoded audio (rms of the s16 samples)
  POST /control/mouth   {"x", "y", "w", "h"}   the rectangle measured in every video frame
  POST /control/users   {"room", "identity", "wav"}   a user joins and publishes its microphone
                                               playing the WAV (16-bit; once, then silence)
                                               -> {"identity", "sid", "track_sid"}
  POST /control/users/leave {"room", "identity"}
  POST /control/rooms/delete {"room"}          as RoomService.DeleteRoom
  POST /control/drop_signal                    close every signal connection (the client reconnects)
  POST /control/go_away                        drop every connection, answer nothing but /control/
Every POST answers {"ok": true} unless said otherwise; an unknown identity or room is a 404.

Not a LiveKit: one node, no SFU logic beyond forwarding the fake users' microphones, no simulcast,
no resume (a reconnecting client is told to rejoin), no data packets.
"""

import argparse
import array
import asyncio
import base64
import hashlib
import hmac
import json
import math
import secrets
import string
import sys
import time
import wave
from fractions import Fraction

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import models, room as room_pb, rtc

SERVER_VERSION = "1.9.0"
PING_INTERVAL, PING_TIMEOUT = 5, 15  # seconds; the client's ping timer panics on an interval of 0


def sid(prefix):
    """LiveKit ids: the client parses `PA_`/`TR_` prefixes (and panics on a bad participant sid)."""
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


# ---------------------------------------------------------------------------------------------
# Tokens: HS256 JWTs signed with the API secret, `iss` = API key, grants under `video`.
# ---------------------------------------------------------------------------------------------

class Unauthorized(Exception):
    pass


def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_token(token, api_key, api_secret):
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(payload_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, json.JSONDecodeError) as e:
        raise Unauthorized(f"invalid token: {e}")
    if header.get("alg") != "HS256":
        raise Unauthorized("invalid token: unsupported algorithm")
    expected = hmac.new(api_secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("invalid token: signature is invalid")
    if claims.get("iss") != api_key:
        raise Unauthorized("invalid token: unknown API key")
    now = time.time()
    if "exp" in claims and now > claims["exp"]:
        raise Unauthorized("invalid token: token is expired")
    if "nbf" in claims and now < claims["nbf"] - 5:
        raise Unauthorized("invalid token: token is not valid yet")
    return claims


def bearer(request):
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):]
    return request.query.get("access_token")


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------

class Participant:
    def __init__(self, identity, name, kind, ws=None):
        self.identity, self.name, self.kind, self.ws = identity, name, kind, ws
        self.sid = sid("PA_")
        self.state = "joined"  # joined → active → left | disconnected
        self.joined_at, self.left_at, self.leave_reason = time.time(), None, None
        self.tracks = {}  # track sid → models.TrackInfo
        self.publisher = self.subscriber = None  # RTCPeerConnection
        self.auto_subscribe = True
        self.subscribed = set()  # sids of other participants' tracks sent to this one
        self.wav = None  # fake users: the file their microphone plays
        self.video, self.audio = [], []  # observations of what this participant publishes
        self.tasks = set()
        self.negotiating = asyncio.Lock()  # one server offer at a time, each until its answer
        self.answered = asyncio.Event()
        self.offer_id = 0

    def info(self):
        state = {"joined": models.ParticipantInfo.JOINED, "active": models.ParticipantInfo.ACTIVE}.get(
            self.state, models.ParticipantInfo.DISCONNECTED)
        return models.ParticipantInfo(
            sid=self.sid, identity=self.identity, name=self.name, state=state, kind=self.kind,
            tracks=list(self.tracks.values()), joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000), version=1, is_publisher=bool(self.tracks),
            permission=models.ParticipantPermission(can_subscribe=True, can_publish=True, can_publish_data=True))

    async def send(self, **message):
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_bytes(rtc.SignalResponse(**message).SerializeToString())

    async def close(self):
        for task in self.tasks:
            task.cancel()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()


class Room:
    def __init__(self, name, empty_timeout=300, max_participants=0, metadata=""):
        self.name, self.sid, self.created = name, sid("RM_"), time.time()
        self.empty_timeout, self.max_participants, self.metadata = empty_timeout, max_participants, metadata
        self.participants = {}  # identity → Participant (those that left stay, for observations)

    def info(self):
        active = self.present()
        return models.Room(
            sid=self.sid, name=self.name, empty_timeout=self.empty_timeout, departure_timeout=20,
            max_participants=self.max_participants, creation_time=int(self.created),
            creation_time_ms=int(self.created * 1000), metadata=self.metadata,
            num_participants=len(active), num_publishers=sum(1 for p in active if p.tracks))

    def present(self):
        return [p for p in self.participants.values() if p.state in ("joined", "active")]


class Fake:
    def __init__(self, api_key, api_secret, auto_create):
        self.api_key, self.api_secret, self.auto_create = api_key, api_secret, auto_create
        self.rooms = {}  # name → Room
        self.deleted = []  # rooms deleted, kept for their participants' observations
        self.mouth = None  # (x, y, w, h)
        self.gone = False

    # --- signal: /rtc -------------------------------------------------------------------------

    async def rtc(self, request):
        try:
            claims = verify_token(bearer(request) or "", self.api_key, self.api_secret)
        except Unauthorized as e:
            return web.Response(status=401, text=str(e))
        video = claims.get("video") or {}
        if not video.get("roomJoin") or not video.get("room"):
            return web.Response(status=401, text="permissions denied: the token grants no room to join")
        name = video["room"]
        if name not in self.rooms and not self.auto_create:
            return web.Response(status=404, text="requested room does not exist")
        if request.path.endswith("/validate"):  # the client asks why a connection failed
            return web.Response(text="success")
        room = self.rooms.setdefault(name, Room(name))
        if request.query.get("reconnect") == "1":
            # No resume here (aiortc cannot restart ICE): tell the client to rejoin from scratch.
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_bytes(rtc.SignalResponse(leave=rtc.LeaveRequest(
                can_reconnect=True, reason=models.STATE_MISMATCH,
                action=rtc.LeaveRequest.RECONNECT)).SerializeToString())
            await ws.close()
            return ws

        identity = claims.get("sub", "")
        previous = room.participants.get(identity)
        if previous is not None and previous.state in ("joined", "active"):
            await previous.send(leave=rtc.LeaveRequest(reason=models.DUPLICATE_IDENTITY, action=rtc.LeaveRequest.DISCONNECT))
            await self.depart(room, previous, "DUPLICATE_IDENTITY")
        kind = models.ParticipantInfo.AGENT if claims.get("kind") == "agent" else models.ParticipantInfo.STANDARD
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        me = Participant(identity, claims.get("name") or identity, kind, ws)
        me.auto_subscribe = request.query.get("auto_subscribe", "1") != "0"
        room.participants[identity] = me
        config = RTCConfiguration(iceServers=[])  # no STUN: aiortc would default to Google's
        me.publisher, me.subscriber = RTCPeerConnection(config), RTCPeerConnection(config)
        me.publisher.on("track", lambda track: self.on_published(room, me, track))
        await me.send(join=rtc.JoinResponse(
            room=room.info(), participant=me.info(),
            other_participants=[p.info() for p in room.present() if p is not me],
            server_version=SERVER_VERSION, subscriber_primary=False,
            ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
            server_info=models.ServerInfo(edition=models.ServerInfo.Standard, version=SERVER_VERSION, protocol=16)))
        me.state = "active"
        await self.broadcast(room, me)
        if me.auto_subscribe:
            for other in room.present():
                for track in other.tracks.values():
                    if other is not me and other.wav:
                        self.spawn(me, self.forward(room, me, other, track.sid))
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.BINARY:
                    await self.on_signal(room, me, rtc.SignalRequest.FromString(msg.data))
        finally:
            if me.state in ("joined", "active"):
                await self.depart(room, me, None)  # gone without a leave
        return ws

    async def on_signal(self, room, me, req):
        which = req.WhichOneof("message")
        if which == "offer":  # publisher PC: the client offers, we answer
            await me.publisher.setRemoteDescription(RTCSessionDescription(req.offer.sdp, "offer"))
            await me.publisher.setLocalDescription(await me.publisher.createAnswer())
            local = me.publisher.localDescription  # aiortc puts all its candidates in the SDP
            await me.send(answer=rtc.SessionDescription(type="answer", sdp=local.sdp, id=req.offer.id))
        elif which == "answer":  # subscriber PC: our offer answered
            await me.subscriber.setRemoteDescription(RTCSessionDescription(req.answer.sdp, "answer"))
            me.answered.set()
        elif which == "trickle":
            init = json.loads(req.trickle.candidateInit or "{}")
            line = init.get("candidate") or ""
            if line:  # an empty candidate only marks the end of gathering
                candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
                candidate.sdpMid, candidate.sdpMLineIndex = init.get("sdpMid"), init.get("sdpMLineIndex")
                pc = me.subscriber if req.trickle.target == rtc.SUBSCRIBER else me.publisher
                await pc.addIceCandidate(candidate)
        elif which == "add_track":
            a = req.add_track
            info = models.TrackInfo(
                sid=sid("TR_"), type=a.type, name=a.name, source=a.source, width=a.width, height=a.height,
                muted=a.muted, mime_type="video/vp8" if a.type == models.VIDEO else "audio/opus")
            me.tracks[info.sid] = info
            await me.send(track_published=rtc.TrackPublishedResponse(cid=a.cid, track=info))
            await self.broadcast(room, me)
        elif which == "subscription":
            if req.subscription.subscribe:
                for other in room.present():
                    for track_sid in req.subscription.track_sids:
                        if track_sid in other.tracks and other.wav:
                            self.spawn(me, self.forward(room, me, other, track_sid))
        elif which == "ping":
            await me.send(pong=req.ping)
        elif which == "ping_req":
            await me.send(pong_resp=rtc.Pong(last_ping_timestamp=req.ping_req.timestamp, timestamp=int(time.time() * 1000)))
        elif which == "leave":
            await self.depart(room, me, "CLIENT_INITIATED")
        # mute, track_setting, update_layers, sync_state, ...: nothing to do for a fake

    async def depart(self, room, p, reason):
        """A participant leaves: `reason` is LiveKit's DisconnectReason name, None if it vanished."""
        p.state = "left" if reason else "disconnected"
        p.left_at, p.leave_reason = time.time(), reason
        await p.close()
        await self.broadcast(room, p)

    async def broadcast(self, room, changed):
        """ParticipantUpdate to everyone else connected: how a client learns who joins and leaves."""
        for p in room.present():
            if p is not changed and p.ws is not None:
                await p.send(update=rtc.ParticipantUpdate(participants=[changed.info()]))

    # --- media --------------------------------------------------------------------------------

    def spawn(self, owner, coro):
        task = asyncio.ensure_future(coro)
        owner.tasks.add(task)
        task.add_done_callback(owner.tasks.discard)

    async def forward(self, room, me, user, track_sid):
        """Sends a fake user's microphone to `me` on its subscriber PC: a server offer."""
        if track_sid in me.subscribed:
            return
        me.subscribed.add(track_sid)
        async with me.negotiating:
            sender = me.subscriber.addTrack(WavTrack(user.wav))
            # The client maps a track to its publication by the stream id "PA_…|TR_…".
            sender._stream_id, sender._track_id = f"{user.sid}|{track_sid}", track_sid
            await me.subscriber.setLocalDescription(await me.subscriber.createOffer())
            me.offer_id += 1
            me.answered.clear()
            await me.send(offer=rtc.SessionDescription(type="offer", sdp=me.subscriber.localDescription.sdp, id=me.offer_id))
            await asyncio.wait_for(me.answered.wait(), 10)

    def on_published(self, room, p, track):
        self.spawn(p, self.observe(p, track))

    async def observe(self, p, track):
        """Decoded frames of what `p` publishes, measured as they arrive."""
        pcm, window = array.array("h"), None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.time()
            if isinstance(frame, av.VideoFrame):
                p.video.append({"t": now, "w": frame.width, "h": frame.height, "mouth": self.mouth_mean(frame)})
                del p.video[:-20000]
            else:
                channels = len(frame.layout.channels)
                # Packed s16; the plane's buffer is padded beyond the samples.
                samples = array.array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])
                window = window or frame.sample_rate * channels // 50  # 20 ms, interleaved
                pcm.extend(samples)
                while len(pcm) >= window:
                    chunk, pcm = pcm[:window], pcm[window:]
                    p.audio.append({"t": now, "rms": math.sqrt(sum(s * s for s in chunk) / window)})
                del p.audio[:-50000]

    def mouth_mean(self, frame):
        if self.mouth is None:
            return None
        x, y, w, h = self.mouth
        x, y = max(0, min(x, frame.width - 1)), max(0, min(y, frame.height - 1))
        w, h = max(1, min(w, frame.width - x)), max(1, min(h, frame.height - y))
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        plane = frame.planes[0]
        luma, stride = memoryview(bytes(plane)), plane.line_size
        return sum(sum(luma[row * stride + x: row * stride + x + w]) for row in range(y, y + h)) / (w * h)

    # --- RoomService (Twirp, protobuf), as livekit-api 0.10 calls it ---------------------------

    async def twirp(self, request):
        method = request.match_info["method"]
        calls = {"CreateRoom": (room_pb.CreateRoomRequest, "roomCreate", self.create_room),
                 "DeleteRoom": (room_pb.DeleteRoomRequest, "roomCreate", self.delete_room_call),
                 "ListRooms": (room_pb.ListRoomsRequest, "roomList", self.list_rooms),
                 "ListParticipants": (room_pb.ListParticipantsRequest, "roomAdmin", self.list_participants)}
        claims = None
        if "Authorization" in request.headers:  # LiveKit's auth middleware: plain-text 401s
            token = bearer(request)
            if token is None:
                return web.Response(status=401, text="invalid authorization header. Must start with Bearer ")
            try:
                claims = verify_token(token, self.api_key, self.api_secret)
            except Unauthorized as e:
                return web.Response(status=401, text=str(e))
        if method not in calls:
            return twirp_error(404, "bad_route", f"no handler for path {request.path!r}")
        if request.content_type != "application/protobuf":
            return twirp_error(404, "bad_route", f"unexpected Content-Type: {request.content_type!r}")
        message_type, grant, handler = calls[method]
        try:
            body = message_type.FromString(await request.read())
        except Exception:
            return twirp_error(400, "malformed", "the protobuf request could not be decoded")
        video = (claims or {}).get("video") or {}
        allowed = video.get(grant) and (grant != "roomAdmin" or video.get("room") == body.room)
        if not allowed:
            return twirp_error(401, "unauthenticated", "permissions denied")
        return await handler(body)

    async def create_room(self, req):
        room = self.rooms.setdefault(req.name, Room(req.name))
        room.empty_timeout = req.empty_timeout or room.empty_timeout
        room.max_participants = req.max_participants or room.max_participants
        room.metadata = req.metadata or room.metadata
        return protobuf(room.info())

    async def delete_room_call(self, req):
        if not await self.delete_room(req.room):
            return twirp_error(404, "not_found", "room not found")
        return protobuf(room_pb.DeleteRoomResponse())

    async def list_rooms(self, req):
        rooms = [r.info() for r in self.rooms.values() if not req.names or r.name in req.names]
        return protobuf(room_pb.ListRoomsResponse(rooms=rooms))

    async def list_participants(self, req):
        room = self.rooms.get(req.room)
        infos = [p.info() for p in room.present()] if room else []
        return protobuf(room_pb.ListParticipantsResponse(participants=infos))

    async def delete_room(self, name):
        """Everyone in the room is told to leave for good (reason ROOM_DELETED), then the room goes."""
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        for p in room.present():
            await p.send(leave=rtc.LeaveRequest(can_reconnect=False, reason=models.ROOM_DELETED,
                                                 action=rtc.LeaveRequest.DISCONNECT))
            p.state, p.left_at, p.leave_reason = "left", time.time(), "ROOM_DELETED"
            await p.close()
        self.deleted.append(room)
        return True

    # --- control API --------------------------------------------------------------------------

    def find(self, identity, room_name=None):
        for room in list(self.rooms.values()) + self.deleted[::-1]:
            if room_name in (None, room.name) and identity in room.participants:
                return room, room.participants[identity]
        raise web.HTTPNotFound(text=json.dumps({"error": f"no participant {identity!r}"}), content_type="application/json")

    async def control(self, request):
        action = request.match_info["action"]
        body = await request.json() if request.can_read_body else {}
        if action == "state":
            return web.json_response({"gone": self.gone, "rooms": [{
                "name": room.name, "sid": room.sid, "deleted": room in self.deleted, "participants": [{
                    "identity": p.identity, "sid": p.sid, "kind": models.ParticipantInfo.Kind.Name(p.kind),
                    "state": p.state, "joined_at": p.joined_at, "left_at": p.left_at,
                    "leave_reason": p.leave_reason, "tracks": [{
                        "sid": t.sid, "name": t.name, "kind": models.TrackType.Name(t.type),
                        "source": models.TrackSource.Name(t.source)} for t in p.tracks.values()]}
                    for p in room.participants.values()]} for room in list(self.rooms.values()) + self.deleted]})
        if action == "observations":
            _, p = self.find(request.query["identity"], request.query.get("room"))
            return web.json_response({"identity": p.identity, "video": p.video, "audio": p.audio})
        if action == "mouth":
            self.mouth = (int(body["x"]), int(body["y"]), int(body["w"]), int(body["h"]))
        elif action == "users":
            room = self.rooms.setdefault(body["room"], Room(body["room"]))
            with wave.open(body["wav"], "rb"):
                pass  # fails now, with the request, if the file is not a WAV
            user = Participant(body["identity"], body["identity"], models.ParticipantInfo.STANDARD)
            user.wav, user.state = body["wav"], "active"
            track = models.TrackInfo(sid=sid("TR_"), type=models.AUDIO, name="microphone",
                                     source=models.TrackSource.MICROPHONE, mime_type="audio/opus")
            user.tracks[track.sid] = track
            room.participants[user.identity] = user
            await self.broadcast(room, user)
            for p in room.present():
                if p.ws is not None and p.auto_subscribe:
                    self.spawn(p, self.forward(room, p, user, track.sid))
            return web.json_response({"identity": user.identity, "sid": user.sid, "track_sid": track.sid})
        elif action == "users/leave":
            room, user = self.find(body["identity"], body["room"])
            await self.depart(room, user, "CLIENT_INITIATED")
        elif action == "rooms/delete":
            if not await self.delete_room(body["room"]):
                raise web.HTTPNotFound(text='{"error": "no such room"}', content_type="application/json")
        elif action == "drop_signal":
            for room in self.rooms.values():
                for p in room.present():
                    if p.ws is not None:
                        await p.ws.close()  # the client resumes, is told to rejoin, and rejoins
        elif action == "go_away":
            self.gone = True
            for room in self.rooms.values():
                for p in room.present():
                    await p.close()  # no leave: the connection just drops
        else:
            raise web.HTTPNotFound()
        return web.json_response({"ok": True})


class WavTrack(MediaStreamTrack):
    """A microphone playing a WAV file once, in real time, then silence (20 ms frames, 48 kHz)."""

    kind = "audio"

    def __init__(self, path):
        super().__init__()
        with wave.open(path, "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            data = w.readframes(w.getnframes())
        if width != 2:
            raise ValueError(f"{path}: only 16-bit WAV files")
        src = av.AudioFrame(format="s16", layout="mono" if channels == 1 else "stereo", samples=len(data) // (2 * channels))
        src.planes[0].update(data)
        src.sample_rate = rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000, frame_size=960)
        self.frames = [f for f in resampler.resample(src)] + [f for f in resampler.resample(None)]
        self.sent, self.start = 0, None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
        else:
            await asyncio.sleep(max(0, self.start + self.sent * 0.02 - time.time()))
        if self.sent < len(self.frames):
            frame = self.frames[self.sent]
        else:
            frame = av.AudioFrame(format="s16", layout="mono", samples=960)
            frame.planes[0].update(bytes(frame.planes[0].buffer_size))
            frame.sample_rate = 48000
        frame.pts, frame.time_base = self.sent * 960, Fraction(1, 48000)
        self.sent += 1
        return frame


def twirp_error(status, code, msg):
    return web.json_response({"code": code, "msg": msg}, status=status)


def protobuf(message):
    return web.Response(body=message.SerializeToString(), content_type="application/protobuf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--no-auto-create", action="store_true", help="refuse joins to rooms not made by CreateRoom")
    args = parser.parse_args()
    fake = Fake(args.api_key, args.api_secret, not args.no_auto_create)

    @web.middleware
    async def gone(request, handler):
        # After go_away only the control API answers; everything else finds a dead server.
        if fake.gone and not request.path.startswith("/control/"):
            request.transport.close()
            raise asyncio.CancelledError()
        return await handler(request)

    app = web.Application(middlewares=[gone])
    app.router.add_get("/rtc/v1", lambda r: web.Response(status=404, text="not found"))  # client falls back to v0
    app.router.add_get("/rtc/v1/validate", lambda r: web.Response(status=404, text="not found"))
    app.router.add_get("/rtc/validate", fake.rtc)
    app.router.add_get("/rtc", fake.rtc)
    app.router.add_post("/twirp/livekit.RoomService/{method}", fake.twirp)
    app.router.add_route("*", "/control/{action:.+}", fake.control)

    async def serve():
        runner = web.AppRunner(app, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
