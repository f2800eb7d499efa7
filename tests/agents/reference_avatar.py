"""LiveKit Agents' own avatar side, as a separate process: the `reference` avatar of the tests.

    python reference_avatar.py --url ws://10.99.0.1:PORT --token <kind agent, lk.publish_on_behalf>

It joins the room with its token, takes the audio its agent streams to it (`DataStreamAudioReceiver`:
byte streams on `lk.audio_stream`, RPC `lk.clear_buffer`, and back `lk.playback_started` /
`lk.playback_finished`), and publishes, through `AvatarRunner` (an `AVSynchronizer` over an
`AudioSource` and a `VideoSource`), the audio and a 512x512 picture at 25 fps whose "mouth" (a
rectangle in the lower middle, `MOUTH_BOX`) is as bright as the audio it plays is loud; it is dark
when nothing plays. It ends when its agent leaves the room.

It prints one JSON line per event on stdout (`connected`, `clear_buffer`, `exit`) for the test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import json
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from livekit import rtc
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    DataStreamAudioReceiver,
    VideoGenerator,
)
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

# Where the mouth is, in fractions of the frame: x0, y0, x1, y1.
MOUTH_BOX = (0.38, 0.62, 0.62, 0.74)
# Luma of the mouth at rest and at full loudness.
MOUTH_REST, MOUTH_LOUD = 40, 235


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


class MouthVideo(VideoGenerator):
    """One video frame per 1/fps, and while audio plays 1/fps of it after each frame."""

    def __init__(self, *, width: int, height: int, fps: int, sample_rate: int, channels: int):
        self._w, self._h, self._fps = width, height, fps
        self._rate, self._channels = sample_rate, channels
        self._tick_samples = sample_rate // fps
        # items: bytes (int16 PCM at our rate) or AudioSegmentEnd
        self._queue: deque[bytes | AudioSegmentEnd] = deque()
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_rate = 0
        self._av_sync: rtc.AVSynchronizer | None = None
        self.frames = 0
        self._loud = False

        # A face: grey background, a lighter oval, two eyes; the mouth box is drawn per frame.
        y = np.full((height, width), 60, np.uint8)
        yy, xx = np.mgrid[0:height, 0:width]
        face = ((xx - width / 2) / (width * 0.32)) ** 2 + ((yy - height * 0.5) / (height * 0.4)) ** 2
        y[face <= 1.0] = 150
        for ex in (0.38, 0.62):
            eye = ((xx - width * ex) ** 2 + (yy - height * 0.4) ** 2) <= (width * 0.04) ** 2
            y[eye] = 30
        self._y = y
        self._uv = np.full((height // 2) * (width // 2) * 2, 128, np.uint8).tobytes()
        x0, y0, x1, y1 = MOUTH_BOX
        self._box = (int(width * x0), int(height * y0), int(width * x1), int(height * y1))

    def attach(self, av_sync: rtc.AVSynchronizer) -> None:
        self._av_sync = av_sync

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            if self._resampler is not None:
                for f in self._resampler.flush():
                    self._queue.append(bytes(f.data))
                self._resampler = None
            self._queue.append(frame)
            return
        if frame.sample_rate == self._rate and frame.num_channels == self._channels:
            self._queue.append(bytes(frame.data))
            return
        if self._resampler is None or self._resampler_rate != frame.sample_rate:
            self._resampler = rtc.AudioResampler(
                input_rate=frame.sample_rate, output_rate=self._rate, num_channels=self._channels
            )
            self._resampler_rate = frame.sample_rate
        for f in self._resampler.push(frame):
            self._queue.append(bytes(f.data))

    async def clear_buffer(self) -> None:
        self._queue.clear()
        self._resampler = None
        if self._av_sync is not None:
            # what the AudioSource has queued (up to its queue size) goes too
            await self._av_sync.clear_queue()
        emit("clear_buffer")

    def _take(self) -> tuple[bytes, bool]:
        """Up to one tick of audio, and whether the segment ended right after it."""
        want = self._tick_samples * self._channels * 2
        out = bytearray()
        while self._queue and len(out) < want:
            item = self._queue[0]
            if isinstance(item, AudioSegmentEnd):
                self._queue.popleft()
                return bytes(out), True
            need = want - len(out)
            if len(item) <= need:
                out += item
                self._queue.popleft()
            else:
                out += item[:need]
                self._queue[0] = item[need:]
        return bytes(out), False

    def _frame(self, level: float) -> rtc.VideoFrame:
        self.frames += 1
        y = self._y.copy()
        x0, y0, x1, y1 = self._box
        y[y0:y1, x0:x1] = int(MOUTH_REST + (MOUTH_LOUD - MOUTH_REST) * min(1.0, level))
        return rtc.VideoFrame(self._w, self._h, rtc.VideoBufferType.I420, y.tobytes() + self._uv)

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._run()

    async def _run(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        while True:
            chunk, ended = self._take()
            if chunk:
                pcm = np.frombuffer(chunk, np.int16).astype(np.float32)
                rms = float(np.sqrt(np.mean(pcm * pcm)))
                if not self._loud and rms >= 500:
                    self._loud = True
                    emit("first_loud_pushed")
                level = rms / 32768.0 * 6.0
                yield self._frame(level)
                yield rtc.AudioFrame(
                    chunk, self._rate, self._channels, len(chunk) // (2 * self._channels)
                )
            else:
                yield self._frame(0.0)
            if ended:
                self._loud = False
                yield AudioSegmentEnd()


class Runner(AvatarRunner):
    """AvatarRunner, publishing video with an explicit frame rate.

    Without `video_encoding` the LiveKit SDK picks its preset for the resolution, which for
    512x512 caps the encoder at 20 fps (measured: 25 fps captured, 20 fps received). The
    tracks, sources and order are AvatarRunner's own (audio first, then video).
    """

    def __init__(self, *args: object, fps: float, max_bitrate: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._fps = fps
        self._max_bitrate = max_bitrate

    async def _publish_track(self) -> None:
        async with self._lock:
            await self._room_connected_fut
            audio_track = rtc.LocalAudioTrack.create_audio_track("avatar_audio", self._audio_source)
            self._audio_publication = await self._room.local_participant.publish_track(
                audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            await self._audio_publication.wait_for_subscription()
            video_track = rtc.LocalVideoTrack.create_video_track("avatar_video", self._video_source)
            self._video_publication = await self._room.local_participant.publish_track(
                video_track,
                rtc.TrackPublishOptions(
                    source=rtc.TrackSource.SOURCE_CAMERA,
                    video_encoding=rtc.VideoEncoding(
                        max_framerate=self._fps, max_bitrate=self._max_bitrate
                    ),
                ),
            )


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--max-bitrate", type=int, default=1_000_000)
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    room = rtc.Room()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)

    await room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=False))
    agent_identity = room.local_participant.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) or None
    emit("connected", identity=room.local_participant.identity, agent=agent_identity)

    @room.on("participant_disconnected")
    def _on_left(p: rtc.RemoteParticipant) -> None:
        if agent_identity is not None and p.identity == agent_identity:
            emit("agent_left", identity=p.identity)
            done.set()

    @room.on("disconnected")
    def _on_disconnected(*_: object) -> None:
        done.set()

    video = MouthVideo(
        width=args.width, height=args.height, fps=args.fps, sample_rate=args.sample_rate, channels=1
    )
    runner = Runner(
        room,
        fps=float(args.fps),
        max_bitrate=args.max_bitrate,
        # only its agent's streams: the identity its token names (else the first agent)
        audio_recv=DataStreamAudioReceiver(room, sender_identity=agent_identity),
        video_gen=video,
        options=AvatarOptions(
            video_width=args.width,
            video_height=args.height,
            video_fps=args.fps,
            audio_sample_rate=args.sample_rate,
            audio_channels=1,
        ),
        # publish at once (not at the first frame): the agent waits for the video track
        _lazy_publish=False,
    )
    video.attach(runner.av_sync)
    await runner.start()
    emit("started")

    async def stats() -> None:
        while True:
            await asyncio.sleep(1.0)
            emit("stats", fps=round(runner.av_sync.actual_fps, 2), frames=video.frames)

    stats_task = asyncio.create_task(stats())
    await done.wait()
    stats_task.cancel()
    await runner.aclose()
    await room.disconnect()
    emit("exit")
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # Out at once: the LiveKit SDK's library, torn down with the interpreter after a room it was
    # subscribed in, sometimes aborts ("panic in a function that cannot unwind"; tests/support/
    # lk_peer.py does the same). Everything of the room was closed above.
    os._exit(code)
