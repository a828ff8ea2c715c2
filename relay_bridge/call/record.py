"""What a call leaves behind: its record (``CallStats``, for logs, the demo timeline and benchmarks) and
its log lines, each carrying the call's ids as the record's fields (``call_sid``, ``stream_sid``,
``session_id``): a text log writes them before the message, a JSON log as fields of their own."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from relay_bridge.conversation.events import EndReason

MAX_RECORDED_EVENTS = 10_000  # events kept per call for the timeline; counts are kept regardless
MAX_RECORDED_CHARS = 200  # of each text in a recorded event (a play URL may be 8 K characters)
WARNINGS_PER_KIND = 10  # per call: more warnings about the same kind of bad input are only counted


MAX_ID_CHARS = 64  # of each id on a log record: ids are a peer's values (Twilio's are 34 characters)


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """A call's logger: its ids go on every record as fields, with the caller's own ``extra`` fields."""

    def __init__(self, logger: logging.Logger, ids: dict[str, str]) -> None:
        super().__init__(logger, ids)
        self.ids = ids  # session_id is added once the session has one

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        ids = {k: str(v)[:MAX_ID_CHARS] for k, v in self.ids.items()}
        kwargs["extra"] = {**ids, **kwargs.get("extra", {})}
        return msg, kwargs


@dataclass
class CallStats:
    """What happened on a call, for logs, the demo timeline and benchmarks."""

    call_sid: str = ""
    stream_sid: str = ""
    session_id: str = ""
    end_reason: EndReason | None = None
    end_detail: str = ""  # e.g. the close code of a socket that closed
    invalid_provider_frames: int = 0
    invalid_app_frames: int = 0
    frames_sent: int = 0
    max_lead_ms: float = 0.0
    speculations_used: int = 0
    speculations_wasted: int = 0
    inbound_dropped: int = 0  # inbound media frames dropped: faster than real time, or not heard in time
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)  # the first MAX_RECORDED_EVENTS
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, name: str, **data: Any) -> None:
        self.counts[name] += 1
        if len(self.events) < MAX_RECORDED_EVENTS:
            data = {k: v[:MAX_RECORDED_CHARS] if isinstance(v, str) else v for k, v in data.items()}
            self.events.append((trio.current_time(), name, data))

    def count(self, name: str) -> int:
        return self.counts[name]

    def summary(self) -> str:
        return (f"{self.count('prompt')} prompt(s), {self.count('interrupt')} interrupt(s), "
                f"{self.frames_sent} frames sent (lead up to {self.max_lead_ms:.0f} ms), speculative "
                f"recognitions {self.speculations_used} used / {self.speculations_wasted} discarded, "
                f"{self.invalid_provider_frames + self.invalid_app_frames} invalid frame(s), "
                f"{self.inbound_dropped} inbound frame(s) dropped")

    @property
    def ended_because(self) -> str:
        """The end reason as a log line says it."""
        if self.end_reason is None:
            return ""
        return f"{self.end_reason.value} ({self.end_detail})" if self.end_detail else self.end_reason.value
