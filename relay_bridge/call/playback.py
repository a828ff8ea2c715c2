"""Outbound playback: paced 20 ms mu-law frames, marks, and ``clear``.

Theory of operation. Twilio buffers whatever it is sent and plays it in order (protocols.md 4.4),
so sending fast would bury seconds of audio out of reach of a barge-in and make mark echoes late.
The pacer therefore keeps an estimate of when the provider's buffer runs dry (``_play_end``: each
frame sent adds 20 ms) and sends the next frame only when doing so keeps the buffered audio within
``lead`` of real time. A provider plays out on its own 20 ms clock, so a frame reaching an empty
buffer may wait up to one tick before it starts; the estimate assumes that worst case. Frames are
always exactly 160 bytes (a chunk's last frame is padded with mu-law silence): fixed-size frames
avoid playout jitter.

The conversation queues audio and marks (it names the marks and keeps the ledger); the pacer sends
them in order and tells it what went out (``MarkSent``, and ``FirstAudio`` for a cycle's first
frame). Audio queued with ``repeat`` (a ``play`` loop) is framed as it is sent, so ``loop: 1000``
never holds a thousand copies. ``clear`` drops everything not yet sent and, if the caller may still
be hearing agent audio, the pacer sends ``clear`` before anything else. The pacer is the only task
that sends to the provider, so no frame of the old audio can follow a ``clear`` on the wire.

``hold`` stops the agent at once without losing its words (the caller started speaking and it is not
yet known whether that is a barge-in): the frames and marks sent within the lead that the caller has
not started hearing are taken back to the head of the queue, ``clear`` goes out, and nothing is
sent until ``release``, which resumes from where the caller stopped hearing. The marks taken back go
out again as ``resent_name`` (the pacer tells the conversation with ``Rewound``, before the
``clear``, so the ledger ignores the provider's answer to it for the old names).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from relay_bridge.audio.g711 import SILENCE_BYTE
from relay_bridge.audio.telephony import FRAME_BYTES, FRAME_MS, FRAME_S
from relay_bridge.call.inbox import Inbox
from relay_bridge.conversation.events import Event, FirstAudio, MarkSent, Rewound
from relay_bridge.protocols.marks import resent_name
from relay_bridge.protocols.provider import OutboundCodec

if TYPE_CHECKING:
    from prometheus_client import Counter


@dataclass
class _Audio:
    cycle: int
    data: bytes
    repeat: int
    offset: int = 0
    queued_at: float = 0.0

    @property
    def frames(self) -> int:
        """Frames still to send."""
        per_copy = -(-len(self.data) // FRAME_BYTES)
        return per_copy * self.repeat - self.offset // FRAME_BYTES

    def pop_frame(self) -> bytes:
        frame = self.data[self.offset : self.offset + FRAME_BYTES]
        self.offset += FRAME_BYTES
        if self.offset >= len(self.data):
            self.offset, self.repeat = 0, self.repeat - 1
        return frame + bytes([SILENCE_BYTE]) * (FRAME_BYTES - len(frame))


@dataclass(frozen=True)
class _Mark:
    name: str


@dataclass(frozen=True)
class _Sent:
    """A frame or mark sent, and when the caller reaches it (the frame starts playing, the mark is echoed)."""

    at: float
    cycle: int = 0
    frame: bytes = b""
    mark: str = ""


class Playback:
    def __init__(self, send: Callable[[str], Awaitable[None]], codec: OutboundCodec, events: Inbox[Event],
                 *, lead_ms: int, late: Counter | None = None) -> None:
        """``late`` counts frames of a reply sent after the frame before them had finished playing, though
        they were queued in time: a gap the caller hears that the pacer, not synthesis, caused."""
        self._send = send
        self._codec = codec
        self._events = events
        self._lead = lead_ms / 1000
        self._late = late
        self._continuous = False  # the next frame follows the last one sent (no clear or hold between)
        self._queue: deque[_Audio | _Mark] = deque()
        self._queued_frames = 0
        self._clear_due = False
        self._changed = trio.Event()
        self._play_end = 0.0
        self._last_cycle = 0  # the cycle of the last frame sent
        self._sent: deque[_Sent] = deque()  # sent lately: what the caller may not have reached yet
        self._held = False
        self.frames_sent = 0
        self.max_lead_s = 0.0

    # -- the conversation's side --------------------------------------------------------------

    def enqueue_audio(self, cycle: int, ulaw: bytes, repeat: int = 1) -> None:
        if ulaw and repeat > 0:
            item = _Audio(cycle, ulaw, repeat, queued_at=trio.current_time())
            self._queue.append(item)
            self._queued_frames += item.frames
            self._notify()

    def enqueue_mark(self, name: str) -> None:
        self._queue.append(_Mark(name))
        self._notify()

    def clear(self, *, unheard: bool) -> None:
        """Drop unsent audio and marks; send ``clear`` if the caller may still hear agent audio (a mark
        out and not echoed, ``unheard``, or audio sent lately)."""
        now = trio.current_time()
        self._queue.clear()
        self._sent.clear()
        self._queued_frames = 0
        self._clear_due = self._clear_due or unheard or self._play_end > now
        self._play_end = min(self._play_end, now)
        self._continuous = False
        self._notify()

    def hold(self) -> None:
        """Stop the agent now and take back what the caller has not heard; ``release`` resumes it."""
        now = trio.current_time()
        self._held = True
        back = [s for s in self._sent if s.at > now]
        self._sent.clear()
        items: list[_Audio | _Mark] = []
        frames: list[bytes] = []
        for i, sent in enumerate(back):
            if sent.mark:
                items.append(_Mark(resent_name(sent.mark)))
                continue
            frames.append(sent.frame)
            if i + 1 == len(back) or back[i + 1].mark or back[i + 1].cycle != sent.cycle:
                items.append(_Audio(sent.cycle, b"".join(frames), 1))
                self._queued_frames += len(frames)
                frames = []
        self._queue.extendleft(reversed(items))
        marks = [sent.mark for sent in back if sent.mark]
        if marks:
            self._events.put_nowait(Rewound(tuple(marks)))
        self._clear_due = self._clear_due or self._play_end > now
        self._play_end = min(self._play_end, now)
        self._continuous = False
        self._notify()

    def release(self) -> None:
        """Go on from where ``hold`` stopped."""
        self._held = False
        self._notify()

    @property
    def held(self) -> bool:
        return self._held

    # -- the speaker's side -------------------------------------------------------------------

    @property
    def queued_ms(self) -> int:
        return self._queued_frames * FRAME_MS

    def ahead_ms(self) -> float:
        """Audio the caller has still to hear: queued here, and sent but not yet played."""
        return self.queued_ms + max(0.0, self._play_end - trio.current_time()) * 1000

    async def wait_queued_below(self, ms: int) -> None:
        while self.queued_ms > ms:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the pacer ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if self._clear_due:
                self._clear_due = False
                await self._send(self._codec.clear())
                continue
            if not self._queue or self._held:
                await self._changed.wait()
                continue
            head = self._queue[0]
            if isinstance(head, _Mark):
                self._queue.popleft()
                self._remember(_Sent(max(self._play_end, trio.current_time()), mark=head.name))
                self._events.put_nowait(MarkSent(head.name))
                await self._send(self._codec.mark(head.name))
                self._notify()
                continue
            now = trio.current_time()
            send_at = self._play_start(now) + FRAME_S - self._lead
            if send_at > now:
                with trio.move_on_at(send_at):
                    await self._changed.wait()  # woken early by a clear or new audio: look again
                continue
            if (self._late is not None and self._continuous and head.cycle == self._last_cycle
                    and head.queued_at < self._play_end < now):
                self._late.inc()
            frame = head.pop_frame()
            if not head.repeat:
                self._queue.popleft()
            await self._send_frame(head.cycle, frame)
            self._notify()

    def _remember(self, sent: _Sent) -> None:
        now = trio.current_time()
        while self._sent and self._sent[0].at <= now:
            self._sent.popleft()
        self._sent.append(sent)

    def _play_start(self, now: float) -> float:
        """When a frame sent now would start playing, at the latest."""
        return max(self._play_end, now + FRAME_S)

    async def _send_frame(self, cycle: int, frame: bytes) -> None:
        self._queued_frames -= 1
        now = trio.current_time()
        start = self._play_start(now)
        self._remember(_Sent(start, cycle, frame))
        self._play_end = start + FRAME_S
        self._continuous = True
        self.max_lead_s = max(self.max_lead_s, self._play_end - now)
        if cycle != self._last_cycle:
            self._last_cycle = cycle
            self._events.put_nowait(FirstAudio(cycle))
        await self._send(self._codec.media(frame))
        self.frames_sent += 1
