"""relay-bridge: a self-hosted ConversationRelay over Twilio Media Streams."""

from __future__ import annotations

__version__ = "0.1.0"
