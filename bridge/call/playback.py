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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from bridge.audio.g711 import SILENCE_BYTE
from bridge.audio.telephony import FRAME_BYTES, FRAME_MS, FRAME_S
from bridge.call.inbox import Inbox
from bridge.conversation.events import Event, FirstAudio, MarkSent
from bridge.protocols.provider import OutboundCodec


@dataclass
class _Audio:
    cycle: int
    data: bytes
    repeat: int
    offset: int = 0

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


class Playback:
    def __init__(self, send: Callable[[str], Awaitable[None]], codec: OutboundCodec, events: Inbox[Event],
                 *, lead_ms: int) -> None:
        self._send = send
        self._codec = codec
        self._events = events
        self._lead = lead_ms / 1000
        self._queue: deque[_Audio | _Mark] = deque()
        self._queued_frames = 0
        self._clear_due = False
        self._changed = trio.Event()
        self._play_end = 0.0
        self._last_cycle = 0  # the cycle of the last frame sent
        self.frames_sent = 0
        self.max_lead_s = 0.0

    # -- the conversation's side --------------------------------------------------------------

    def enqueue_audio(self, cycle: int, ulaw: bytes, repeat: int = 1) -> None:
        if ulaw and repeat > 0:
            item = _Audio(cycle, ulaw, repeat)
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
        self._queued_frames = 0
        self._clear_due = self._clear_due or unheard or self._play_end > now
        self._play_end = min(self._play_end, now)
        self._notify()

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
            if not self._queue:
                await self._changed.wait()
                continue
            head = self._queue[0]
            if isinstance(head, _Mark):
                self._queue.popleft()
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
            frame = head.pop_frame()
            if not head.repeat:
                self._queue.popleft()
            await self._send_frame(head.cycle, frame)
            self._notify()

    def _play_start(self, now: float) -> float:
        """When a frame sent now would start playing, at the latest."""
        return max(self._play_end, now + FRAME_S)

    async def _send_frame(self, cycle: int, frame: bytes) -> None:
        self._queued_frames -= 1
        now = trio.current_time()
        self._play_end = self._play_start(now) + FRAME_S
        self.max_lead_s = max(self.max_lead_s, self._play_end - now)
        if cycle != self._last_cycle:
            self._last_cycle = cycle
            self._events.put_nowait(FirstAudio(cycle))
        await self._send(self._codec.media(frame))
        self.frames_sent += 1
