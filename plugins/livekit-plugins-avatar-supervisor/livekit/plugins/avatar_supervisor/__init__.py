"""Self-hosted avatars for LiveKit Agents, served by avatar-supervisor.

`AvatarSession(...).start(agent_session, room=ctx.room)` starts an avatar of this server in the
agent's room and routes the AgentSession's audio to it (LiveKit Agents' own avatar protocol:
byte streams on `lk.audio_stream`, RPCs `lk.clear_buffer` / `lk.playback_finished`).
"""

from .avatar import AvatarSession, AvatarSupervisorError, AvatarSupervisorException
from .version import __version__

__all__ = [
    "AvatarSession",
    "AvatarSupervisorError",
    "AvatarSupervisorException",
    "__version__",
]

from livekit.agents import Plugin

from .log import logger


class AvatarSupervisorPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(AvatarSupervisorPlugin())

# Cleanup docs of unexported modules
_module = dir()
NOT_IN_ALL = [m for m in _module if m not in __all__]

__pdoc__ = {}

for n in NOT_IN_ALL:
    __pdoc__[n] = False
