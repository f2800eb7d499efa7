"""The plugin's HTTP contract, against a stand-in for the server's two routes (no LiveKit, no
network namespace): the request `AvatarSession.start` sends, the avatar's token it mints, a
refusal surfacing as `AvatarSupervisorError`, and `aclose` stopping the session (or tolerating
one that has already ended)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt
import pytest
from aiohttp import web

from livekit.agents import AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.plugins.avatar_supervisor import (
    AvatarSession,
    AvatarSupervisorError,
    AvatarSupervisorException,
)

LK_KEY, LK_SECRET = "devkey", "plugin-test-secret-0123456789abcdefghij"


class FakeParticipant:
    identity = "agent-under-test"
    _rpc_handlers: dict[str, Any] = {}

    def register_rpc_method(self, name: str, handler: Any) -> None:
        self._rpc_handlers[name] = handler


class FakeRoom:
    """What the plugin and DataStreamAudioOutput touch of a connected rtc.Room."""

    name = "room-under-test"

    def __init__(self) -> None:
        self.local_participant = FakeParticipant()
        self.remote_participants: dict[str, Any] = {}

    def isconnected(self) -> bool:
        return True

    def on(self, *_: Any) -> None:
        pass

    def off(self, *_: Any) -> None:
        pass


class Server:
    def __init__(self, start_status: int = 200, stop_status: int = 200) -> None:
        self.start_status, self.stop_status = start_status, stop_status
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_post("/v1/sessions", self.start)
        app.router.add_post("/v1/sessions/{id}/stop", self.stop)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def start(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, dict(request.headers), body))
        if self.start_status != 200:
            return web.json_response(
                {"success": False, "error_code": "invalid_request",
                 "message": "livekit_token: the token grants no room"},
                status=self.start_status,
            )
        return web.json_response(
            {"success": True, "session_id": "sess_test", "status": "starting",
             "participant_identity": "avatar-x", "aspect_ratio": "1:1"}
        )

    async def stop(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), None))
        if self.stop_status != 200:
            return web.json_response(
                {"success": False, "error_code": "session_not_found", "message": "no such session"},
                status=self.stop_status,
            )
        return web.json_response({"success": True, "session_id": "sess_test", "status": "stopping"})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_start_sends_the_documented_request_and_routes_audio() -> None:
    async def body() -> None:
        async with Server() as server:
            session = AgentSession()
            room = FakeRoom()
            avatar = AvatarSession(
                api_url=server.base,
                api_key="the-key",
                agent_id="agnt_test",
                avatar_participant_identity="avatar-x",
                avatar_participant_name="Avatar X",
            )
            await avatar.start(
                session, room=room,  # type: ignore[arg-type]
                livekit_url="ws://10.99.0.1:7880",
                livekit_api_key=LK_KEY,
                livekit_api_secret=LK_SECRET,
            )
            assert avatar.session_id == "sess_test"
            assert avatar.session_info["aspect_ratio"] == "1:1"
            path, headers, sent = server.requests[0]
            assert path == "/v1/sessions"
            assert headers.get("x-api-key") == "the-key"
            assert set(sent) == {"agent_id", "room", "voice"}, sent
            assert sent["agent_id"] == "agnt_test" and sent["voice"] == "room"
            assert set(sent["room"]) == {"livekit_url", "livekit_token"}
            assert sent["room"]["livekit_url"] == "ws://10.99.0.1:7880"
            claims = jwt.decode(sent["room"]["livekit_token"], LK_SECRET, algorithms=["HS256"])
            assert claims["iss"] == LK_KEY and claims["sub"] == "avatar-x"
            assert claims["name"] == "Avatar X" and claims["kind"] == "agent"
            assert claims["attributes"] == {"lk.publish_on_behalf": "agent-under-test"}
            grants = claims["video"]
            assert grants["roomJoin"] is True and grants["room"] == "room-under-test"
            assert grants["canPublish"] and grants["canSubscribe"] and grants["canPublishData"]
            # the AgentSession's audio now goes to the avatar
            out = session.output.audio
            assert isinstance(out, DataStreamAudioOutput) and out is avatar.audio_output
            assert out._destination_identity == "avatar-x"
            await avatar.aclose()
            assert server.requests[-1][0] == "/v1/sessions/sess_test/stop"
            assert server.requests[-1][1].get("x-api-key") == "the-key"
            await avatar.aclose()  # twice is fine, and stops once
            assert sum(1 for p, _, _ in server.requests if p.endswith("/stop")) == 1

    run(body())


def test_a_refusal_carries_the_servers_error_code_and_message() -> None:
    async def body() -> None:
        async with Server(start_status=400) as server:
            avatar = AvatarSession(api_url=server.base, api_key="k", agent_id="agnt_test")
            with pytest.raises(AvatarSupervisorError) as e:
                await avatar.start(
                    AgentSession(), room=FakeRoom(),  # type: ignore[arg-type]
                    livekit_url="ws://x", livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET,
                )
            assert e.value.status_code == 400
            assert e.value.error_code == "invalid_request"
            assert "grants no room" in e.value.server_message and "invalid_request" in str(e.value)
            assert avatar.session_id is None
            await avatar.aclose()  # nothing to stop
            assert [p for p, _, _ in server.requests] == ["/v1/sessions"]

    run(body())


def test_aclose_tolerates_an_ended_session() -> None:
    async def body() -> None:
        async with Server(stop_status=404) as server:
            avatar = AvatarSession(api_url=server.base, api_key="k", agent_id="agnt_test")
            await avatar.start(
                AgentSession(), room=FakeRoom(),  # type: ignore[arg-type]
                livekit_url="ws://x", livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET,
            )
            await avatar.aclose()  # 404 session_not_found: already gone, no exception
            assert server.requests[-1][0] == "/v1/sessions/sess_test/stop"

    run(body())


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AVATAR_SUPERVISOR_URL", "AVATAR_SUPERVISOR_API_KEY", "AVATAR_SUPERVISOR_AGENT_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(AvatarSupervisorException, match="AVATAR_SUPERVISOR_API_KEY"):
        AvatarSession(agent_id="a")
    monkeypatch.setenv("AVATAR_SUPERVISOR_API_KEY", "k")
    with pytest.raises(AvatarSupervisorException, match="AVATAR_SUPERVISOR_AGENT_ID"):
        AvatarSession()
    monkeypatch.setenv("AVATAR_SUPERVISOR_AGENT_ID", "agnt_env")
    monkeypatch.setenv("AVATAR_SUPERVISOR_URL", "http://127.0.0.1:9/")
    a = AvatarSession()
    assert (a._api_url, a._api_key, a._agent_id) == ("http://127.0.0.1:9", "k", "agnt_env")
    assert json.dumps(a.session_info) == "{}"
