"""A LiveKit participant for tests against LiveKit's real server (livekit-server), built on LiveKit's
Python SDK (`livekit.rtc`, the pinned wheel `scripts/setup_livekit.sh` installs into .setup/venv).

It plays, against a real server, the roles the control API of tests/support/fake_livekit.py plays
against the fake: it subscribes to everything, decodes every remote video and audio track and
measures it; it can publish a microphone playing a WAV; it sends byte streams, calls RPC methods
and answers its own.

    .setup/venv/bin/python tests/support/lk_peer.py --url ws://10.99.0.1:7880 --token <JWT>

Protocol: JSON lines. Once connected it prints {"event": "ready", "identity", "participants":
[{"identity", "kind"}]} (or {"event": "error", "error"} and exits 1). Then each line on stdin is a
command {"id": N, "cmd": C, ...}; each is run in its own task (commands may overlap: a
perform_rpc waits while the test answers it) and answered with one line {"id": N, "ok": true, ...}
or {"id": N, "ok": false, "error": "..."}. stdin closed: it leaves the room and exits. Logs go to
stderr.

Commands:
  mouth {x, y, w, h}             the rectangle whose mean luma each decoded frame reports
  observations {identity}        -> {"video": [{"t", "w", "h", "mouth"}], "audio": [{"t", "rms"}]}:
                                    one entry per decoded frame (t: arrival, unix seconds) and per
                                    20 ms of decoded audio (48 kHz mono, rms of the s16 samples)
  state                          -> {"participants": [{"identity", "kind"}], "left": [{"identity",
                                    "reason", "t"}], "rpc_calls": [{"method", "caller", "payload",
                                    "t"}], "disconnected": reason name or null}
  publish_wav {path}             publishes a microphone playing the 16-bit WAV once, then silence
                                 -> {"track_sid"}
  stream_bytes {destination, topic, name?, attributes?, data_b64, chunk_size?}
                                 one byte stream to `destination`, written in pieces of chunk_size
                                 bytes (default 15000) -> {"stream_id", "bytes"}
  perform_rpc {destination, method, payload, timeout?}
                                 -> {"payload"} or {"rpc_error": {"code", "message"}}
  register_rpc {method, reply, error_code?, error_message?}
                                 answers calls of `method` with `reply` (or with the given error);
                                 calls are recorded in state.rpc_calls
  leave                          disconnects (the test sees the participant leave)
"""

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import wave

import numpy as np
from livekit import rtc

WAV_RATE = 48000


def log(*args):
    print("lk_peer:", *args, file=sys.stderr, flush=True)


class Peer:
    def __init__(self):
        self.room = rtc.Room()
        self.mouth = None
        self.video = {}  # identity -> list of observations
        self.audio = {}
        self.left = []
        self.rpc_calls = []
        self.disconnected = None
        self.tasks = set()
        self.out_lock = asyncio.Lock()
        self.mic = None  # (source, track, task)
        self.streams = []  # the VideoStream / AudioStream readers, closed before the process ends

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def emit(self, message):
        async with self.out_lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    # --- room events ------------------------------------------------------------------------

    def wire(self):
        room = self.room

        @room.on("track_subscribed")
        def on_track(track, publication, participant):
            identity = participant.identity
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                self.spawn(self.observe_video(identity, track))
            elif track.kind == rtc.TrackKind.KIND_AUDIO:
                self.spawn(self.observe_audio(identity, track))

        @room.on("participant_disconnected")
        def on_left(participant):
            try:
                reason = rtc.DisconnectReason.Name(participant.disconnect_reason or 0)
            except Exception:  # noqa: BLE001 - a reason this SDK does not name
                reason = str(participant.disconnect_reason)
            self.left.append({"identity": participant.identity, "reason": reason, "t": time.time()})

        @room.on("disconnected")
        def on_disconnected(reason):
            try:
                self.disconnected = rtc.DisconnectReason.Name(reason)
            except Exception:  # noqa: BLE001
                self.disconnected = str(reason)

    async def observe_video(self, identity, track):
        frames = self.video.setdefault(identity, [])
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
        self.streams.append(stream)
        async for event in stream:
            now = time.time()
            frame = event.frame
            frames.append({"t": now, "w": frame.width, "h": frame.height, "mouth": self.mouth_mean(frame)})
            del frames[:-20000]

    def mouth_mean(self, frame):
        if self.mouth is None:
            return None
        x, y, w, h = self.mouth
        fw, fh = frame.width, frame.height
        x, y = max(0, min(x, fw - 1)), max(0, min(y, fh - 1))
        w, h = max(1, min(w, fw - x)), max(1, min(h, fh - y))
        # I420 as the library converts it: the luma plane first, packed (stride = width).
        luma = np.frombuffer(frame.data, dtype=np.uint8, count=fw * fh).reshape(fh, fw)
        return float(luma[y:y + h, x:x + w].mean())

    async def observe_audio(self, identity, track):
        windows = self.audio.setdefault(identity, [])
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        self.streams.append(stream)
        pending = np.zeros(0, dtype=np.int16)
        window = 48000 // 50
        async for event in stream:
            now = time.time()
            samples = np.frombuffer(event.frame.data, dtype=np.int16)
            pending = np.concatenate([pending, samples])
            while len(pending) >= window:
                chunk, pending = pending[:window].astype(np.float64), pending[window:]
                windows.append({"t": now, "rms": float(np.sqrt(np.mean(chunk * chunk)))})
            del windows[:-50000]

    # --- commands ---------------------------------------------------------------------------

    async def handle(self, line):
        try:
            request = json.loads(line)
        except json.JSONDecodeError as e:
            await self.emit({"id": None, "ok": False, "error": f"not JSON: {e}"})
            return
        rid = request.get("id")
        try:
            result = await getattr(self, "cmd_" + request["cmd"])(request)
            await self.emit({"id": rid, "ok": True, **(result or {})})
        except Exception as e:  # noqa: BLE001 - every failure is the test's to see
            log(f"{request.get('cmd')} failed: {e!r}")
            await self.emit({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"})

    async def cmd_mouth(self, r):
        self.mouth = (int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]))

    async def cmd_observations(self, r):
        identity = r["identity"]
        return {"video": list(self.video.get(identity, [])), "audio": list(self.audio.get(identity, []))}

    async def cmd_state(self, _r):
        participants = [
            {"identity": p.identity, "kind": rtc.ParticipantKind.Name(p.kind)}
            for p in self.room.remote_participants.values()
        ]
        return {"participants": participants, "left": self.left, "rpc_calls": self.rpc_calls,
                "disconnected": self.disconnected}

    async def cmd_publish_wav(self, r):
        with wave.open(r["path"], "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            data = w.readframes(w.getnframes())
        if width != 2:
            raise ValueError(f"{r['path']}: only 16-bit WAV files")
        pcm = np.frombuffer(data, dtype=np.int16).reshape(-1, channels).mean(axis=1)
        n = int(len(pcm) * WAV_RATE / rate)
        pcm = np.interp(np.arange(n) * rate / WAV_RATE, np.arange(len(pcm)), pcm).astype(np.int16)
        source = rtc.AudioSource(WAV_RATE, 1, queue_size_ms=200)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await self.room.local_participant.publish_track(track, options)

        async def play():
            piece = WAV_RATE // 50
            silence = np.zeros(piece, dtype=np.int16)
            offset = 0
            while True:
                chunk = pcm[offset:offset + piece] if offset < len(pcm) else silence
                if len(chunk) < piece:
                    chunk = np.concatenate([chunk, silence[: piece - len(chunk)]])
                offset += piece
                frame = rtc.AudioFrame(chunk.tobytes(), WAV_RATE, 1, piece)
                await source.capture_frame(frame)  # paced by the source's queue

        self.mic = (source, track, self.spawn(play()))
        return {"track_sid": publication.sid}

    async def cmd_stream_bytes(self, r):
        data = base64.b64decode(r["data_b64"])
        size = int(r.get("chunk_size") or 15000)
        writer = await self.room.local_participant.stream_bytes(
            r.get("name") or "stream",
            topic=r["topic"],
            attributes=r.get("attributes") or {},
            destination_identities=[r["destination"]],
            total_size=len(data),
        )
        for offset in range(0, len(data), size):
            await writer.write(data[offset:offset + size])
        await writer.aclose()
        return {"stream_id": writer.info.stream_id, "bytes": len(data)}

    async def cmd_perform_rpc(self, r):
        try:
            payload = await self.room.local_participant.perform_rpc(
                destination_identity=r["destination"], method=r["method"], payload=r.get("payload", ""),
                response_timeout=float(r.get("timeout", 10)))
        except rtc.RpcError as e:
            return {"rpc_error": {"code": e.code, "message": e.message}}
        return {"payload": payload}

    async def cmd_register_rpc(self, r):
        method, reply = r["method"], r.get("reply", "")
        code, message = r.get("error_code"), r.get("error_message", "")

        async def handler(data: rtc.RpcInvocationData):
            self.rpc_calls.append({"method": data.method, "caller": data.caller_identity,
                                   "payload": data.payload, "t": time.time()})
            if code is not None:
                raise rtc.RpcError(int(code), message)
            return reply

        self.room.local_participant.register_rpc_method(method, handler)

    async def stop_mic(self):
        """Stops the WAV microphone first: a capture still queued when the library goes away
        makes it log an error."""
        if self.mic is not None:
            source, _track, task = self.mic
            self.mic = None
            task.cancel()
            source.clear_queue()
            await source.aclose()

    async def cmd_leave(self, _r):
        await self.stop_mic()
        await self.room.disconnect()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    peer = Peer()
    peer.wire()
    try:
        await asyncio.wait_for(peer.room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=True)), 30)
    except Exception as e:  # noqa: BLE001
        await peer.emit({"event": "error", "error": f"{type(e).__name__}: {e}"})
        return 1
    participants = [{"identity": p.identity, "kind": rtc.ParticipantKind.Name(p.kind)}
                    for p in peer.room.remote_participants.values()]
    await peer.emit({"event": "ready", "identity": peer.room.local_participant.identity,
                     "participants": participants})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.strip():
            peer.spawn(peer.handle(line))
    try:
        await asyncio.wait_for(peer.stop_mic(), 5)
    except Exception as e:  # noqa: BLE001
        log(f"stop the microphone: {e!r}")
    for stream in peer.streams:
        try:
            await asyncio.wait_for(stream.aclose(), 5)
        except Exception as e:  # noqa: BLE001
            log(f"close a stream: {e!r}")
    for task in list(peer.tasks):
        task.cancel()
    try:
        await asyncio.wait_for(peer.room.disconnect(), 10)
    except Exception as e:  # noqa: BLE001
        log(f"disconnect: {e!r}")
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    # Without this, the interpreter's finalization runs while the library's threads still deliver
    # events to a callback that is being torn down, and the library aborts ("panic in a function
    # that cannot unwind") now and then. Everything this process does is over by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
