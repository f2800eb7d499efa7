from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp

from livekit import api, rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    NotGivenOr,
    get_job_context,
    utils,
)
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession, DataStreamAudioOutput
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

from .log import logger

_DEFAULT_API_URL = "http://127.0.0.1:8080"
_AVATAR_IDENTITY = "avatar-supervisor-avatar"
_AVATAR_NAME = "avatar"

# Session states after which the avatar is gone; stopping those is not an error.
_ENDED_STATES = ("stopping", "stopped", "failed")


class AvatarSupervisorException(Exception):
    """A misconfiguration of the plugin (missing URL, key, agent id or LiveKit credentials)."""


class AvatarSupervisorError(APIStatusError):
    """The server refused a request: carries its `error_code` and `message` (API.md's error body)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: str | None,
        body: object | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(
            f"avatar-supervisor answered {status_code} {error_code or 'error'}: {message}",
            status_code=status_code,
            body=body,
            retryable=status_code in (429, 503),
        )
        self.error_code = error_code
        self.server_message = message
        self.retry_after_seconds = retry_after_seconds


class AvatarSession(BaseAvatarSession):
    """An avatar of a self-hosted avatar-supervisor server in the agent's LiveKit room.

    The avatar joins the room with a token minted here with the worker's LiveKit credentials
    (participant kind `agent`, attribute `lk.publish_on_behalf` = the agent's identity), speaks
    the AgentSession's audio (streamed to it over LiveKit data streams) and publishes video and
    audio on the agent's behalf.
    """

    def __init__(
        self,
        *,
        api_url: NotGivenOr[str] = NOT_GIVEN,
        api_key: NotGivenOr[str] = NOT_GIVEN,
        agent_id: NotGivenOr[str] = NOT_GIVEN,
        avatar_participant_identity: NotGivenOr[str] = NOT_GIVEN,
        avatar_participant_name: NotGivenOr[str] = NOT_GIVEN,
        aspect_ratio: NotGivenOr[str] = NOT_GIVEN,
        max_duration_seconds: NotGivenOr[int] = NOT_GIVEN,
        metadata: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
        http_session: aiohttp.ClientSession | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> None:
        super().__init__()
        self._api_url = (
            api_url or os.getenv("AVATAR_SUPERVISOR_URL") or _DEFAULT_API_URL
        ).rstrip("/")
        key = api_key or os.getenv("AVATAR_SUPERVISOR_API_KEY")
        if not key:
            raise AvatarSupervisorException(
                "the api_key must be set either by passing api_key to AvatarSession or by "
                "setting the AVATAR_SUPERVISOR_API_KEY environment variable"
            )
        self._api_key: str = key
        agent = agent_id or os.getenv("AVATAR_SUPERVISOR_AGENT_ID")
        if not agent:
            raise AvatarSupervisorException(
                "the agent_id must be set either by passing agent_id to AvatarSession or by "
                "setting the AVATAR_SUPERVISOR_AGENT_ID environment variable"
            )
        self._agent_id: str = agent
        self._avatar_participant_identity = avatar_participant_identity or _AVATAR_IDENTITY
        self._avatar_participant_name = avatar_participant_name or _AVATAR_NAME
        self._aspect_ratio = aspect_ratio
        self._max_duration_seconds = max_duration_seconds
        self._metadata = metadata
        self._conn_options = conn_options

        self._http_session = http_session
        self._owns_http_session = False
        self._session_id: str | None = None
        self._session_info: dict[str, Any] = {}
        self._audio_output: DataStreamAudioOutput | None = None
        self._closed = False

    @property
    def avatar_identity(self) -> str:
        return self._avatar_participant_identity

    @property
    def provider(self) -> str:
        return "avatar-supervisor"

    @property
    def session_id(self) -> str | None:
        """The server's session id (`sess_…`), once `start` has returned."""
        return self._session_id

    @property
    def session_info(self) -> dict[str, Any]:
        """The body of the server's answer to `POST /v1/sessions`."""
        return dict(self._session_info)

    @property
    def audio_output(self) -> DataStreamAudioOutput | None:
        """The audio output that streams the AgentSession's speech to the avatar."""
        return self._audio_output

    def _ensure_http_session(self) -> aiohttp.ClientSession:
        if self._http_session is None or self._http_session.closed:
            try:
                self._http_session = utils.http_context.http_session()
                self._owns_http_session = False
            except RuntimeError:
                # outside a job (scripts, tests): a session of our own, closed by aclose()
                self._http_session = aiohttp.ClientSession()
                self._owns_http_session = True
        return self._http_session

    async def start(
        self,
        agent_session: AgentSession,
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_key: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_secret: NotGivenOr[str] = NOT_GIVEN,
    ) -> None:
        livekit_url = livekit_url or (os.getenv("LIVEKIT_URL") or NOT_GIVEN)
        livekit_api_key = livekit_api_key or (os.getenv("LIVEKIT_API_KEY") or NOT_GIVEN)
        livekit_api_secret = livekit_api_secret or (os.getenv("LIVEKIT_API_SECRET") or NOT_GIVEN)
        if not livekit_url or not livekit_api_key or not livekit_api_secret:
            raise AvatarSupervisorException(
                "livekit_url, livekit_api_key and livekit_api_secret must be set "
                "by arguments or environment variables (LIVEKIT_URL, LIVEKIT_API_KEY, "
                "LIVEKIT_API_SECRET)"
            )

        job_ctx = get_job_context(required=False)
        if job_ctx is not None:
            local_identity = job_ctx.local_participant_identity
            room_name = room.name or job_ctx.job.room.name
        else:
            # outside a worker: the room must already be connected to know who we are
            local_identity = room.local_participant.identity if room.isconnected() else ""
            room_name = room.name
        if not local_identity or not room_name:
            raise AvatarSupervisorException(
                "the agent's identity and room name are unknown: connect the room before "
                "calling AvatarSession.start() outside a job"
            )

        await super().start(agent_session, room)

        livekit_token = (
            api.AccessToken(api_key=livekit_api_key, api_secret=livekit_api_secret)
            .with_kind("agent")
            .with_identity(self._avatar_participant_identity)
            .with_name(self._avatar_participant_name)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=room_name,
                    can_publish=True,
                    can_subscribe=True,
                    can_publish_data=True,
                )
            )
            # the avatar publishes audio and video on behalf of the agent
            .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: local_identity})
            .to_jwt()
        )

        logger.debug(
            "starting avatar-supervisor session",
            extra={"agent_id": self._agent_id, "room": room_name},
        )
        await self._start_session(livekit_url, livekit_token)

        self._audio_output = DataStreamAudioOutput(
            room=room,
            destination_identity=self._avatar_participant_identity,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        )
        agent_session.output.replace_audio_tail(self._audio_output)

    async def _start_session(self, livekit_url: str, livekit_token: str) -> None:
        body: dict[str, Any] = {
            "agent_id": self._agent_id,
            "room": {"livekit_url": livekit_url, "livekit_token": livekit_token},
            "voice": "room",
        }
        if utils.is_given(self._aspect_ratio):
            body["aspect_ratio"] = self._aspect_ratio
        if utils.is_given(self._max_duration_seconds):
            body["max_duration_seconds"] = self._max_duration_seconds
        if utils.is_given(self._metadata):
            body["metadata"] = self._metadata

        url = f"{self._api_url}/v1/sessions"
        last_error: Exception | None = None
        for attempt in range(self._conn_options.max_retry + 1):
            try:
                async with self._ensure_http_session().post(
                    url,
                    headers={"x-api-key": self._api_key},
                    json=body,
                    timeout=aiohttp.ClientTimeout(
                        total=max(self._conn_options.timeout, 30.0),
                        sock_connect=self._conn_options.timeout,
                    ),
                ) as response:
                    answer = await _json_or_text(response)
                    if not 200 <= response.status < 300:
                        raise _error_from(response.status, answer)
                    if not isinstance(answer, dict) or not answer.get("session_id"):
                        raise AvatarSupervisorError(
                            f"no session_id in the answer: {answer!r}",
                            status_code=response.status,
                            error_code=None,
                            body=answer,
                        )
                    self._session_info = answer
                    self._session_id = str(answer["session_id"])
                    logger.info(
                        "avatar-supervisor session started",
                        extra={"session_id": self._session_id},
                    )
                    return
            except aiohttp.ClientConnectorError as e:
                # the request never reached the server: retrying cannot start a second session
                last_error = e
                logger.warning(
                    "could not reach avatar-supervisor", extra={"url": url, "error": str(e)}
                )
                if attempt < self._conn_options.max_retry:
                    await asyncio.sleep(self._conn_options.retry_interval)
        raise APIConnectionError(
            f"could not reach avatar-supervisor at {self._api_url}: {last_error}"
        )

    async def stop(self) -> None:
        """Ends the server's session (`POST /v1/sessions/{id}/stop`).

        An already ended session (stopped, failed, or unknown to the server) is not an error.
        """
        if self._session_id is None:
            return
        url = f"{self._api_url}/v1/sessions/{self._session_id}/stop"
        try:
            async with self._ensure_http_session().post(
                url,
                headers={"x-api-key": self._api_key},
                timeout=aiohttp.ClientTimeout(total=10.0),
            ) as response:
                answer = await _json_or_text(response)
                if 200 <= response.status < 300:
                    return
                err = _error_from(response.status, answer)
                if response.status in (404, 409, 410) or _ended(answer):
                    logger.debug(
                        "avatar-supervisor session already ended",
                        extra={"session_id": self._session_id, "error_code": err.error_code},
                    )
                    return
                logger.warning(
                    "failed to stop the avatar-supervisor session",
                    extra={"session_id": self._session_id, "error": str(err)},
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            logger.warning(
                "failed to stop the avatar-supervisor session",
                extra={"session_id": self._session_id, "error": str(e)},
            )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.stop()
        finally:
            await super().aclose()
            if self._owns_http_session and self._http_session is not None:
                await self._http_session.close()
                self._http_session = None


async def _json_or_text(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ended(answer: Any) -> bool:
    if not isinstance(answer, dict):
        return False
    state = answer.get("status") or answer.get("state")
    return isinstance(state, str) and state in _ENDED_STATES


def _error_from(status: int, answer: Any) -> AvatarSupervisorError:
    if isinstance(answer, dict):
        code = answer.get("error_code") or answer.get("code")
        message = answer.get("message") or answer.get("error") or str(answer)
        retry = answer.get("retry_after_seconds")
    else:
        code, message, retry = None, (str(answer)[:500] or "no body"), None
    return AvatarSupervisorError(
        str(message),
        status_code=status,
        error_code=str(code) if code is not None else None,
        body=answer,
        retry_after_seconds=float(retry) if isinstance(retry, (int, float)) else None,
    )
