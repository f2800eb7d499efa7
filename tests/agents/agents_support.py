"""Helpers of the LiveKit Agents end-to-end tests: tokens, the TTS and LLM stand-ins, the room's
subscriber that measures what the avatar publishes, and the analysis of those measurements."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livekit import api, rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, llm, tts
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

# The subscriber keeps every DOWNSCALE-th pixel of each frame's luma (a 512x512 frame: 128x128).
DOWNSCALE = 4
# Audio at the subscriber: 10 ms frames; louder than this RMS (int16 full scale 32768) is speech.
LOUD_RMS = 500.0
QUIET_RMS = 150.0


def short_id() -> str:
    return uuid.uuid4().hex[:10]


def free_tcp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mint_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    room: str,
    name: str | None = None,
    kind: str | None = None,
    attributes: dict[str, str] | None = None,
) -> str:
    t = (
        api.AccessToken(api_key=api_key, api_secret=api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
    )
    if kind:
        t = t.with_kind(kind)  # type: ignore[arg-type]
    if attributes:
        t = t.with_attributes(attributes)
    return t.to_jwt()


def avatar_token(api_key: str, api_secret: str, *, identity: str, room: str, agent: str) -> str:
    """What an avatar plugin mints: kind agent, publishing on behalf of `agent`."""
    return mint_token(
        api_key,
        api_secret,
        identity=identity,
        room=room,
        kind="agent",
        attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: agent},
    )


# ---------------------------------------------------------------------------------------------
# The TTS stand-in: espeak-ng, locally
# ---------------------------------------------------------------------------------------------


def parse_wav(data: bytes) -> tuple[bytes, int, int]:
    """PCM, sample rate and channels of espeak-ng's `--stdout` WAV (its size fields may be
    placeholders, so the chunks are walked by hand and `data` runs to the end)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"not a WAV: {data[:16]!r}")
    pos, rate, channels = 12, 0, 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            bits = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if fmt != 1 or bits != 16:
                raise ValueError(f"espeak-ng wrote format {fmt} with {bits} bits")
        elif cid == b"data":
            pcm = data[body:]
            return pcm[: len(pcm) // 2 * 2], rate, channels
        pos = body + size + (size & 1)
    raise ValueError("no data chunk in espeak-ng's WAV")


ESPEAK_RATE = 22050


class EspeakTTS(tts.TTS):
    """`espeak-ng --stdout` on the text; its PCM at espeak's own 22050 Hz, mono."""

    def __init__(self, *, voice: str = "en", words_per_minute: int = 175) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=ESPEAK_RATE,
            num_channels=1,
        )
        self.voice = voice
        self.wpm = words_per_minute
        # (text, seconds of audio, monotonic time when synthesized)
        self.synthesized: list[tuple[str, float, float]] = []

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)

    async def pcm(self, text: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng",
            "--stdout",
            "-v",
            self.voice,
            "-s",
            str(self.wpm),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(text.encode())
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {err.decode()[-300:]}")
        pcm, rate, channels = parse_wav(out)
        if rate != ESPEAK_RATE or channels != 1:
            raise RuntimeError(f"espeak-ng wrote {rate} Hz x {channels}, expected {ESPEAK_RATE} x 1")
        return pcm


class _EspeakStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        tts_ = self._tts
        assert isinstance(tts_, EspeakTTS)
        pcm = await tts_.pcm(self.input_text)
        tts_.synthesized.append((self.input_text, len(pcm) / 2 / ESPEAK_RATE, time.monotonic()))
        output_emitter.initialize(
            request_id=short_id(),
            sample_rate=ESPEAK_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm)
        output_emitter.flush()


# ---------------------------------------------------------------------------------------------
# The LLM stand-in: a fixed answer
# ---------------------------------------------------------------------------------------------


class ScriptedLLM(llm.LLM):
    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer
        self.calls = 0

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[Any] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: Any = NOT_GIVEN,
        tool_choice: Any = NOT_GIVEN,
        extra_kwargs: Any = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.calls += 1
        return _ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        assert isinstance(self._llm, ScriptedLLM)
        rid = short_id()
        for i, word in enumerate(self._llm.answer.split(" ")):
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=rid,
                    delta=llm.ChoiceDelta(role="assistant", content=word if i == 0 else " " + word),
                )
            )


# ---------------------------------------------------------------------------------------------
# The subscriber: a plain participant that records what the avatar publishes
# ---------------------------------------------------------------------------------------------


@dataclass
class VideoSample:
    t: float
    width: int
    height: int
    luma: np.ndarray  # every DOWNSCALE-th pixel of the Y plane


@dataclass
class AudioSample:
    t: float
    rms: float
    duration: float


@dataclass
class Subscriber:
    url: str
    token: str
    avatar_identity: str
    room: rtc.Room = field(default_factory=rtc.Room)
    video: list[VideoSample] = field(default_factory=list)
    audio: list[AudioSample] = field(default_factory=list)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _avatar_left: asyncio.Event = field(default_factory=asyncio.Event)
    _video_started: asyncio.Event = field(default_factory=asyncio.Event)
    _audio_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> None:
        r = self.room

        @r.on("participant_connected")
        def _joined(p: rtc.RemoteParticipant) -> None:
            self.events.append((time.monotonic(), "joined", p.identity))

        @r.on("participant_disconnected")
        def _left(p: rtc.RemoteParticipant) -> None:
            self.events.append((time.monotonic(), "left", p.identity))
            if p.identity == self.avatar_identity:
                self._avatar_left.set()

        @r.on("track_subscribed")
        def _subscribed(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            self.events.append((time.monotonic(), f"subscribed:{track.kind}", p.identity))
            if p.identity != self.avatar_identity:
                return
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                self._tasks.append(asyncio.create_task(self._read_video(track)))
            elif track.kind == rtc.TrackKind.KIND_AUDIO:
                self._tasks.append(asyncio.create_task(self._read_audio(track)))

        await r.connect(self.url, self.token, rtc.RoomOptions(auto_subscribe=True))

    async def _read_video(self, track: rtc.Track) -> None:
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
        try:
            async for ev in stream:
                f = ev.frame
                w, h = f.width, f.height
                y = np.frombuffer(f.data, np.uint8, count=w * h).reshape(h, w)
                self.video.append(
                    VideoSample(time.monotonic(), w, h, y[::DOWNSCALE, ::DOWNSCALE].copy())
                )
                self._video_started.set()
        finally:
            await stream.aclose()

    async def _read_audio(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        try:
            async for ev in stream:
                f = ev.frame
                pcm = np.frombuffer(f.data, np.int16).astype(np.float32)
                rms = float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0
                self.audio.append(AudioSample(time.monotonic(), rms, f.duration))
                self._audio_started.set()
        finally:
            await stream.aclose()

    async def wait_media(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(
                asyncio.gather(self._video_started.wait(), self._audio_started.wait()), timeout
            )
        except asyncio.TimeoutError:
            raise AssertionError(
                f"the avatar's video and audio did not reach the subscriber within {timeout} s "
                f"(video frames: {len(self.video)}, audio frames: {len(self.audio)}; "
                f"room events: {self.describe_events()})"
            ) from None

    async def wait_avatar_left(self, timeout: float) -> float:
        await asyncio.wait_for(self._avatar_left.wait(), timeout)
        return next(t for t, what, who in self.events if what == "left" and who == self.avatar_identity)

    def describe_events(self) -> str:
        t0 = self.events[0][0] if self.events else 0.0
        return ", ".join(f"+{t - t0:.2f}s {what} {who}" for t, what, who in self.events)

    def participant(self, identity: str) -> rtc.RemoteParticipant | None:
        return self.room.remote_participants.get(identity)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()


# ---------------------------------------------------------------------------------------------
# The server's answers
# ---------------------------------------------------------------------------------------------


def session_field(body: Any, name: str) -> Any:
    """A field of a session's view, whether the body holds it at the top, in `session` or in
    `data`."""
    if not isinstance(body, dict):
        return None
    for holder in (body, body.get("session"), body.get("data")):
        if isinstance(holder, dict) and name in holder:
            return holder[name]
    return None


async def wait_session_ended(sup: Any, session_id: str, timeout: float) -> Any:
    """`GET /v1/sessions/{id}` until the session is stopped or failed (at most `timeout` s); the
    last body."""
    body: Any = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = sup.request("GET", f"/v1/sessions/{session_id}")
        if session_field(body, "status") in ("stopped", "failed"):
            break
        await asyncio.sleep(0.2)
    return body


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


def frames_between(video: list[VideoSample], a: float, b: float) -> list[VideoSample]:
    return [v for v in video if a <= v.t <= b]


def fps_between(video: list[VideoSample], a: float, b: float) -> float:
    n = len(frames_between(video, a, b))
    return n / (b - a) if b > a else 0.0


def fps_per_second(video: list[VideoSample], a: float, b: float) -> list[int]:
    """Frames received in each whole second of [a, b]."""
    bins = [0] * max(0, int(b - a))
    for v in video:
        i = int(v.t - a)
        if a <= v.t and 0 <= i < len(bins):
            bins[i] += 1
    return bins


def loud_span(audio: list[AudioSample], a: float, b: float) -> tuple[float, float] | None:
    """First and last loud 10 ms frame (their arrival times) in [a, b]."""
    loud = [s.t for s in audio if a <= s.t <= b and s.rms >= LOUD_RMS]
    return (loud[0], loud[-1]) if loud else None


def mean_rms(audio: list[AudioSample], a: float, b: float) -> float:
    xs = [s.rms for s in audio if a <= s.t <= b]
    return float(np.mean(xs)) if xs else float("nan")


def mouth_motion(
    video: list[VideoSample], a: float, b: float, box: tuple[float, float, float, float]
) -> tuple[float, float, int]:
    """Mean absolute frame-to-frame change of the mouth box's luma, and the standard deviation of
    its mean luma, over the frames in [a, b]; and how many frames that was."""
    frames = frames_between(video, a, b)
    if len(frames) < 3:
        return float("nan"), float("nan"), len(frames)
    crops = []
    for f in frames:
        h, w = f.luma.shape
        x0, y0, x1, y1 = box
        crop = f.luma[int(h * y0) : max(int(h * y1), int(h * y0) + 1), int(w * x0) : max(int(w * x1), int(w * x0) + 1)]
        crops.append(crop.astype(np.float32))
    shapes = {c.shape for c in crops}
    if len(shapes) > 1:  # a resolution change mid-window: compare like with like
        common = max(shapes, key=lambda s: sum(1 for c in crops if c.shape == s))
        crops = [c for c in crops if c.shape == common]
    diffs = [float(np.mean(np.abs(c1 - c0))) for c0, c1 in zip(crops, crops[1:])]
    means = [float(np.mean(c)) for c in crops]
    return float(np.mean(diffs)), float(np.std(means)), len(crops)


def fmt(x: float) -> str:
    return f"{x:.3f}"


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=None, sort_keys=True, default=str)


def netns_addrs() -> tuple[str, str]:
    addrs = os.environ.get("AVS_NETNS_ADDRS", "10.99.0.1,10.99.0.2").split(",")
    return addrs[0], addrs[1] if len(addrs) > 1 else addrs[0]
