"""Outbound playback: paced 20 ms mu-law frames, marks, and ``clear``.

Theory of operation. Twilio buffers whatever it is sent and plays it in order (protocols.md 4.4),
so sending fast would bury seconds of audio out of reach of a barge-in and make mark echoes late.
The pacer therefore keeps an estimate of when the provider's buffer runs dry (``_play_end``: each
frame sent adds 20 ms) and sends the next frame only when doing so keeps the buffered audio within
``lead`` of real time. A provider plays out on its own 20 ms clock, so a frame reaching an empty
buffer may wait up to one tick before it starts; the estimate assumes that worst case. Frames are always exactly 160
bytes (a chunk's last frame is padded with mu-law silence): fixed-size frames avoid playout jitter.

Marks ride in the same queue as audio, so a mark goes out right after the audio it closes; the
ledger records it at send time, when its position in the outbound stream is known. ``clear``
drops everything not yet sent and, if the caller may still be hearing audio, sends ``clear`` and
tells the ledger that every pending mark is now cleared, not played.

One lock covers "pop and send" and "drop and clear", so no frame of the old audio can follow a
``clear`` on the wire.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from bridge.audio.g711 import SILENCE_BYTE
from bridge.protocols.marks import MarkLedger
from bridge.protocols.provider import OutboundCodec

FRAME_MS = 20
FRAME_BYTES = 160
FRAME_S = FRAME_MS / 1000


@dataclass(frozen=True)
class AudioFrame:
    cycle: int
    payload: bytes


@dataclass(frozen=True)
class MarkRequest:
    cycle: int
    text: str
    chunk: str
    final: bool
    interruptible: str = "any"
    samples: int = 0  # audio of the chunk this mark closes


QueueItem = AudioFrame | MarkRequest


class Playback:
    def __init__(self, send: Callable[[str], Awaitable[None]], codec: OutboundCodec, ledger: MarkLedger,
                 *, lead_ms: int) -> None:
        self._send = send
        self._codec = codec
        self.ledger = ledger
        self._lead = lead_ms / 1000
        self._queue: deque[QueueItem] = deque()
        self._queued_frames = 0
        self._changed = trio.Event()
        self._lock = trio.Lock()
        self._play_end = 0.0
        self.frames_sent = 0
        self.max_lead_s = 0.0
        self.on_first_audio: Callable[[int, float], None] | None = None
        self._cycles_started: set[int] = set()

    # -- producer side ------------------------------------------------------------------------

    def enqueue_audio(self, cycle: int, ulaw: bytes) -> None:
        for i in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[i : i + FRAME_BYTES]
            if len(frame) < FRAME_BYTES:
                frame += bytes([SILENCE_BYTE]) * (FRAME_BYTES - len(frame))
            self._queue.append(AudioFrame(cycle, frame))
            self._queued_frames += 1
        self.notify()

    def enqueue_mark(self, request: MarkRequest) -> None:
        self._queue.append(request)
        self.notify()

    @property
    def queued_ms(self) -> int:
        return self._queued_frames * FRAME_MS

    def ahead_ms(self) -> float:
        """Audio the caller has still to hear: queued here, and sent but not yet played."""
        return self.queued_ms + max(0.0, self._play_end - trio.current_time()) * 1000

    async def wait_queued_below(self, ms: int) -> None:
        while self.queued_ms > ms:
            await self._wait_change()

    def first_queued_mark(self) -> MarkRequest | None:
        """The first mark not yet sent: it closes the audio being sent now (or opens what comes next)."""
        return next((item for item in self._queue if isinstance(item, MarkRequest)), None)

    @property
    def active(self) -> bool:
        """Agent audio is queued here or still unheard at the provider."""
        return bool(self._queue) or self.ledger.pending

    def notify(self) -> None:
        """Something waiters depend on changed (the queue, or a mark echo for ``active``)."""
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    # -- barge-in -----------------------------------------------------------------------------

    async def clear(self) -> None:
        """Drop unsent audio; send ``clear`` if the caller may still hear agent audio. The ledger is
        cleared either way, so nothing from before the barge-in is reported as heard later."""
        async with self._lock:
            self._queue.clear()
            self._queued_frames = 0
            now = trio.current_time()
            needed = self.ledger.pending or self._play_end > now
            self.ledger.clear()
            self._play_end = now
            if needed:
                await self._send(self._codec.clear())
        self.notify()

    # -- the pacer ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self._queue:
                await self._wait_change()
                continue
            head = self._queue[0]
            if isinstance(head, AudioFrame):
                now = trio.current_time()
                send_at = self._play_start(now) + FRAME_S - self._lead
                if send_at > now:
                    await trio.sleep_until(send_at)
                    continue  # re-check: a clear may have emptied the queue meanwhile
            async with self._lock:
                if not self._queue or self._queue[0] is not head:
                    continue
                self._queue.popleft()
                if isinstance(head, AudioFrame):
                    await self._send_frame(head)
                else:
                    mark = self.ledger.place(head.cycle, head.text, head.chunk, final=head.final,
                                             interruptible=head.interruptible)
                    await self._send(self._codec.mark(mark.name))
            self.notify()

    def _play_start(self, now: float) -> float:
        """When a frame sent now would start playing, at the latest."""
        return max(self._play_end, now + FRAME_S)

    async def _send_frame(self, frame: AudioFrame) -> None:
        self._queued_frames -= 1
        now = trio.current_time()
        self._play_end = self._play_start(now) + FRAME_S
        self.max_lead_s = max(self.max_lead_s, self._play_end - now)
        await self._send(self._codec.media(frame.payload))
        self.ledger.note_sent(frame.cycle, FRAME_BYTES)
        self.frames_sent += 1
        if frame.cycle not in self._cycles_started:
            self._cycles_started.add(frame.cycle)
            if self.on_first_audio is not None:
                self.on_first_audio(frame.cycle, now)
