"""What a ConversationRelay ``setup`` tells the app about the call, as each provider's stream says it.

Each provider's ``start`` event builds its own (``Start.call_details``), so the runtime never needs to
know which provider it serves; the relay codec turns it into the ``setup`` frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CallDetails:
    call_sid: str
    account_sid: str
    from_: str = ""
    to: str = ""
    direction: str = "inbound"
    caller_name: str = ""
    forwarded_from: str = ""
    parent_call_sid: str = ""
    call_type: str = "PSTN"
    call_status: str = "RINGING"
    custom_parameters: dict[str, Any] = field(default_factory=dict)
    # Telnyx only (protocols.md 3.1); None leaves the field out of the setup
    call_control_id: str | None = None
    call_session_id: str | None = None
    call_leg_id: str | None = None
