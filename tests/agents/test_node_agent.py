"""A LiveKit Agents pipeline in Node (`@livekit/agents`, pinned in tests/agents/node/package.json,
installed by `make setup` into .setup/agents-node/) drives this server's avatar in a room on
LiveKit's own server, through the framework's own `DataStreamAudioOutput`: the avatar says the
agent's speech (heard by a subscriber, the mouth moving), publishes it on the agent's behalf (the
agent publishes no audio of its own), answers `lk.playback_finished` with `interrupted: true` when
the agent interrupts, and the agent leaving ends the session `room_closed`, billed.

The agent is `tests/agents/node/agent.mjs`; it prints what happens as JSON lines, which this test
stamps as they arrive. Speech is espeak-ng's, as WAV files (no TTS or LLM plugin is involved).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agents_support import (  # noqa: E402
    LOUD_RMS,
    QUIET_RMS,
    Subscriber,
    avatar_token,
    frames_between,
    mean_rms,
    mint_token,
    mouth_motion,
    session_field,
    short_id,
    wait_session_ended,
)
from conftest import LiveKit, Supervisor  # noqa: E402

HERE = Path(__file__).parent
NODE_DIR = HERE.parents[1] / ".setup" / "agents-node"
# Where the avatar's mouth is in its frames (the session's status has the exact box; this one holds
# it with room to spare for any portrait the generation centres).
MOUTH_BOX = (0.30, 0.35, 0.70, 0.75)

SHORT = "Hello there. I am an avatar, and a Node agent gives me my words."
LONG = (
    "This is a long sentence that the agent will interrupt before it ends, so that the avatar "
    "has to stop speaking at once and tell the agent how far it got, which it does with the "
    "playback finished message, marked as interrupted, while the rest is never heard at all."
)


def log(msg: str) -> None:
    print(f"[node-agent] {msg}", flush=True)


def espeak_wav(text: str, path: Path) -> None:
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), text], check=True, timeout=60)


@pytest.fixture
def node_agent_dir(tmp_path: Path) -> Path:
    """The agent script beside the pinned packages (ES modules resolve from the script's folder)."""
    if shutil.which("node") is None:
        pytest.fail("no node on PATH: `make setup` installs Node's packages with it")
    if not (NODE_DIR / "node_modules" / "@livekit" / "agents").exists():
        pytest.fail(".setup/agents-node/node_modules is missing: run `make setup`")
    script = NODE_DIR / "agent.mjs"
    shutil.copyfile(HERE / "node" / "agent.mjs", script)
    return NODE_DIR


def test_a_node_agent_drives_the_avatar(
    livekit: LiveKit, supervisor: Supervisor, node_agent_dir: Path
) -> None:
    room = f"node-{short_id()}"
    agent_identity = f"node-agent-{short_id()}"
    avatar_identity = f"avatar-{short_id()}"
    work = Path(tempfile.mkdtemp(prefix="avs-node-agent-"))
    short_wav, long_wav = work / "short.wav", work / "long.wav"
    espeak_wav(SHORT, short_wav)
    espeak_wav(LONG, long_wav)
    env = dict(
        os.environ,
        LIVEKIT_URL=livekit.url,
        AGENT_TOKEN=mint_token(
            livekit.api_key, livekit.api_secret, identity=agent_identity, room=room, kind="agent"
        ),
        AVATAR_TOKEN=avatar_token(
            livekit.api_key,
            livekit.api_secret,
            identity=avatar_identity,
            room=room,
            agent=agent_identity,
        ),
        AVATAR_IDENTITY=avatar_identity,
        AVS_URL=supervisor.base,
        AVS_KEY=supervisor.api_key,
        AVS_AGENT=supervisor.agent_id,
        SHORT_WAV=str(short_wav),
        LONG_WAV=str(long_wav),
    )

    async def body() -> None:
        sub = Subscriber(
            livekit.url,
            mint_token(livekit.api_key, livekit.api_secret, identity="viewer", room=room),
            avatar_identity,
        )
        await sub.connect()
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(node_agent_dir / "agent.mjs"),
            cwd=node_agent_dir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        events: list[tuple[float, dict[str, Any]]] = []

        async def read() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                events.append((time.monotonic(), event))
                log(f"{event}")

        reader = asyncio.create_task(read())
        try:
            code = await asyncio.wait_for(proc.wait(), 120)
        except asyncio.TimeoutError:
            proc.kill()
            raise AssertionError(f"the Node agent did not finish in 120 s: {events}") from None
        finally:
            await asyncio.wait_for(reader, 5)
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode(errors="replace")
        assert code == 0, f"the Node agent exited {code}: {events}\n{stderr[-3000:]}"

        def at(name: str, **match: Any) -> float:
            for t, e in events:
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items()):
                    return t
            raise AssertionError(f"no {name} {match} from the Node agent: {events}")

        def event(name: str, index: int = 0) -> dict[str, Any]:
            found = [e for _, e in events if e.get("event") == name]
            assert len(found) > index, f"no {name} #{index} from the Node agent: {events}"
            return found[index]

        session_id = event("avatar_started")["session_id"]
        # The short sentence: heard, and the mouth moves while it is.
        t0, t1 = at("saying", what="short"), at("said", what="short")
        speaking = mean_rms(sub.audio, t0 + 0.5, t1)
        motion, _, n = mouth_motion(sub.video, t0 + 0.5, t1, MOUTH_BOX)
        log(f"short: {t1 - t0:.2f} s, rms {speaking:.0f}, mouth motion {motion:.2f} over {n} frames")
        assert speaking > LOUD_RMS, f"the agent's speech was not heard (rms {speaking:.0f})"
        assert n >= 10, f"frames kept coming while it spoke: {n}"
        quiet_motion, _, _ = mouth_motion(sub.video, t1 + 0.5, at("saying", what="long"), MOUTH_BOX)
        assert motion > quiet_motion, f"the mouth moves more speaking ({motion:.2f}) than not ({quiet_motion:.2f})"
        first = event("playback_finished", 0)
        assert first["interrupted"] is False, first

        # The long one, interrupted: silence follows, and the agent hears how far it got.
        t_int = at("interrupted")
        after = mean_rms(sub.audio, t_int + 1.0, t_int + 2.0)
        log(f"after the interrupt: rms {after:.0f}")
        assert after < QUIET_RMS, f"the avatar kept speaking after the interrupt (rms {after:.0f})"
        second = event("playback_finished", 1)
        assert second["interrupted"] is True, second
        long_seconds = event("saying", 1)["seconds"]
        assert 0 < second["position"] < long_seconds - 1, (second, long_seconds)

        # The agent published nothing of its own while it was there; the avatar left after it.
        assert agent_identity not in {
            who for _, what, who in sub.events if what.startswith("subscribed:")
        }, sub.describe_events()
        frames = frames_between(sub.video, t0, t1)
        assert {(f.width, f.height) for f in frames}, "video frames"

        status = await wait_session_ended(supervisor, session_id, 15)
        log(f"session after the agent left: {json.dumps(status)}")
        assert session_field(status, "status") == "stopped", status
        assert session_field(status, "end_reason") == "room_closed", status
        billed = session_field(status, "billed_seconds")
        assert isinstance(billed, (int, float)) and billed > 0, status
        await sub.aclose()

    asyncio.run(body())
