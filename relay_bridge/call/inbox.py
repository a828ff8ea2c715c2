"""The call's bounded queues: events for the conversation, and inbound audio for the hearing stage.

``Inbox`` carries every event to the one task that runs the conversation, in the order they came:
app text that arrived before a barge-in is cut with the rest, and a mark the pacer sent is known
before the provider's echo of it. Events from the call's own stages (the hearing stage, the speaker,
the pacer) are few per second and never wait (``put_nowait``); a peer's (app messages, the
provider's keys and mark echoes) wait while ``PEER_EVENTS_MAX`` of that peer's are unhandled
(``put``), so a peer that floods is held back at its own socket and cannot bury the others' events.

``FrameQueue`` holds inbound audio frames: when the hearing stage falls behind, the oldest frame is
dropped and counted, so the provider's reader never waits.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

OWN_EVENTS_MAX = 4096  # far beyond what the call's stages emit between two turns of the event loop
PEER_EVENTS_MAX = 32  # per peer: messages read from its socket and not yet handled


class InboxOverflow(RuntimeError):
    pass


class Inbox(Generic[T]):
    def __init__(self, *, peer_max: int = PEER_EVENTS_MAX) -> None:
        self._queue: deque[tuple[str, T]] = deque()  # (peer, event); "" for the call's own
        self._waiting: Counter[str] = Counter()
        self._peer_max = peer_max
        self._arrived = trio.Event()
        self._taken = trio.Event()

    def put_nowait(self, event: T) -> None:
        """An event from one of the call's own stages."""
        if self._waiting[""] >= OWN_EVENTS_MAX:
            raise InboxOverflow(f"more than {OWN_EVENTS_MAX} of the call's own events unhandled")
        self._append("", event)

    async def put(self, peer: str, event: T) -> None:
        """An event read from ``peer``'s socket ("provider" or "app"); waits while too many are unhandled."""
        while self._waiting[peer] >= self._peer_max:
            await self._taken.wait()
        self._append(peer, event)

    def _append(self, source: str, event: T) -> None:
        self._queue.append((source, event))
        self._waiting[source] += 1
        self._arrived.set()

    def waiting(self, peer: str) -> int:
        return self._waiting[peer]

    async def get(self) -> T:
        while not self._queue:
            self._arrived = trio.Event()
            await self._arrived.wait()
        source, event = self._queue.popleft()
        self._waiting[source] -= 1
        if source:
            self._taken.set()
            self._taken = trio.Event()
        return event


class FrameQueue:
    """Inbound audio frames; full, it drops the oldest (``dropped`` counts them). ``arrived_at`` is when
    the frame ``get`` returned last was put (the clock), so a stage that lags still knows when audio came."""

    def __init__(self, max_frames: int) -> None:
        self._frames: deque[tuple[bytes, float]] = deque(maxlen=max_frames)
        self._arrived = trio.Event()
        self.dropped = 0
        self.arrived_at = 0.0

    def put_nowait(self, frame: bytes) -> bool:
        """Queue ``frame``; whether the oldest frame was dropped for it."""
        full = len(self._frames) == self._frames.maxlen
        self.dropped += full
        self._frames.append((frame, trio.current_time()))
        self._arrived.set()
        return full

    async def get(self) -> bytes:
        while not self._frames:
            self._arrived = trio.Event()
            await self._arrived.wait()
        frame, self.arrived_at = self._frames.popleft()
        return frame
