import logging

logger = logging.getLogger("livekit.plugins.avatar_supervisor")
