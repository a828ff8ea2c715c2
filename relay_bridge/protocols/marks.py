"""The mark ledger: what the caller has actually heard, from Media Streams ``mark`` echoes.

Theory of operation (protocols.md 4.4, 4.6). Audio sent to Twilio is buffered there and played in
order, so "sent" is not "heard". The bridge places a ``mark`` at the start of every talk cycle and
after every spoken chunk; Twilio echoes a mark when the audio before it has played. The echo is the
only clock of what the caller heard.

A mark is placed when it is queued for sending, behind the audio queued before it (``note_queued``),
so its position in the cycle's audio is known then; ``mark_sent`` records that it went out. Only a
sent mark can be echoed: an echo of any other name is ``UNKNOWN``.

On ``clear`` Twilio drops its buffer and then echoes *every* pending mark at once, and those echoes
look exactly like "played" ones. So ``clear()`` moves the sent pending marks to a cleared set and
their later echoes are reported as ``CLEARED``, never as playback. Marks still queued are dropped
with the queue; one that turns out to have been on its way out already (``mark_sent`` after the
``clear``) joins the cleared set.

When the conversation holds playback (the caller started speaking over the agent and it is not yet
known whether that is a barge-in), the pacer takes back the audio the caller has not heard yet,
marks included, sends ``clear``, and sends them again if the agent resumes. Those marks are
``rewound``: the old name of each is cleared (its echo, if any, is ignored) and the mark goes out
again under ``resent_name``, keeping its place. The ledger's clock stops while playback is held
(``pause`` and ``resume``), so what was heard does not grow while nothing plays.

``heard(now)``, read just before the ``clear`` (which forgets the playback), answers the
``interrupt`` fields: the text of the current cycle through its last played mark, and the cycle's
audio duration through that mark plus the time since its echo, bounded by the audio of the cycle
queued (the pacer sends queued audio a fixed lead ahead of real time, so the caller cannot be
further than that). ``fragment`` estimates how much of the chunk being heard got through, in whole
words, from how far into that chunk's audio the caller is (speech runs at a roughly even rate of
words, so this is an estimate at word granularity, not a timing of words). Positions are in samples
at 8 kHz; ``now`` (seconds) is passed in by the runtime.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from relay_bridge.audio.telephony import SAMPLE_RATE_HZ

MAX_CLEARED = 1024  # cleared marks whose echo may still come; a provider that never echoes them forgets


def resent_name(name: str) -> str:
    """The name a mark goes out under when it is sent again after a hold: c3-7, c3-7r1, c3-7r2..."""
    base, _, count = name.rpartition("r")
    if base and count.isdigit() and "-" in base:
        return f"{base}r{int(count) + 1}"
    return f"{name}r1"


class EchoKind(enum.Enum):
    PLAYED = "played"
    CLEARED = "cleared"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class MarkInfo:
    name: str
    cycle: int
    text: str  # the cycle's text through this mark
    chunk: str  # the text of the chunk this mark closes ("" for a cycle-start mark)
    position: int  # samples of the cycle's audio before this mark
    final: bool  # this mark closes the cycle
    interruptible: str = "any"  # what caller input may cut the chunk this mark closes
    start: int = 0  # where the chunk this mark closes begins (the previous mark of the cycle)


@dataclass(frozen=True)
class Echo:
    kind: EchoKind
    mark: MarkInfo | None


@dataclass(frozen=True)
class Heard:
    cycle: int | None
    text: str
    duration_ms: float


@dataclass
class MarkLedger:
    queued: int = 0  # samples queued for sending, all cycles
    _cycle_queued: dict[int, int] = field(default_factory=dict)
    _pending: OrderedDict[str, MarkInfo] = field(default_factory=OrderedDict)  # placed, not yet echoed
    _sent: set[str] = field(default_factory=set)  # of the pending marks, those sent
    _dropped: set[str] = field(default_factory=set)  # queued at the last clear, perhaps already on their way
    _cleared: dict[str, MarkInfo] = field(default_factory=dict)
    _last_played: MarkInfo | None = None
    _last_played_at: float = 0.0
    _last_placed: MarkInfo | None = None
    _serial: int = 0
    _paused_at: float | None = None  # playback held since then: the clock of what was heard stops

    def note_queued(self, cycle: int, samples: int) -> None:
        self.queued += samples
        self._cycle_queued[cycle] = self._cycle_queued.get(cycle, 0) + samples

    def cycle_queued(self, cycle: int) -> int:
        return self._cycle_queued.get(cycle, 0)

    def place(self, cycle: int, text: str, chunk: str, *, final: bool = False,
              interruptible: str = "any") -> MarkInfo:
        """Record a mark queued for sending after the audio queued so far."""
        self._serial += 1
        mark = MarkInfo(name=f"c{cycle}-{self._serial}", cycle=cycle, text=text, chunk=chunk,
                        position=self.cycle_queued(cycle), start=self.chunk_start(cycle), final=final,
                        interruptible=interruptible)
        self._pending[mark.name] = mark
        self._last_placed = mark
        return mark

    def mark_sent(self, name: str) -> None:
        """The mark ``name`` went out to the provider."""
        if name in self._pending:
            self._sent.add(name)
        elif name in self._dropped:  # sent just before a clear that had already dropped it: echoed as cleared
            self._dropped.discard(name)
            self._forget(name)

    def chunk_start(self, cycle: int) -> int:
        """Where the next chunk of ``cycle`` begins: at the cycle's last placed mark."""
        last = self._last_placed
        return last.position if last is not None and last.cycle == cycle else 0

    def rewound(self, names: list[str]) -> None:
        """The pacer took back these sent marks (unheard) and will send them as ``resent_name``."""
        taken = set(names)
        for name in names:
            self._sent.discard(name)
            self._forget(name, self._pending.get(name))
            if name not in self._pending:  # echoed as played already (it played sooner than the pacer reckoned)
                self._dropped.add(resent_name(name))  # so its resend is ignored
        self._pending = OrderedDict(
            (resent_name(k), dataclasses.replace(v, name=resent_name(k))) if k in taken else (k, v)
            for k, v in self._pending.items())

    def _forget(self, name: str, mark: MarkInfo | None = None) -> None:
        """``name`` will never be played: an echo of it is the provider's answer to a ``clear``."""
        self._cleared[name] = mark or MarkInfo(name=name, cycle=0, text="", chunk="", position=0, final=False)
        while len(self._cleared) > MAX_CLEARED:
            self._cleared.pop(next(iter(self._cleared)))

    def pause(self, now: float) -> None:
        """Playback is held: nothing plays until ``resume``."""
        if self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        if self._paused_at is not None:
            self._last_played_at += max(0.0, now - max(self._paused_at, self._last_played_at))
            self._paused_at = None

    def echo(self, name: str, now: float) -> Echo:
        if name in self._cleared:
            return Echo(EchoKind.CLEARED, self._cleared.pop(name))
        if name not in self._sent:
            return Echo(EchoKind.UNKNOWN, None)
        # Marks play in the order they were sent, so every mark before this one has played too.
        while True:
            popped, mark = self._pending.popitem(last=False)
            self._sent.discard(popped)
            if popped == name:
                break
        self._last_played = mark
        self._last_played_at = now if self._paused_at is None else min(now, self._paused_at)
        return Echo(EchoKind.PLAYED, mark)

    def first_pending(self) -> MarkInfo | None:
        """The next mark to come back: it closes the audio the caller is hearing now."""
        return next(iter(self._pending.values()), None)

    def chunks_around(self) -> list[str]:
        """The text of the chunk last heard in full and of every chunk still to be heard: what the agent
        is saying about now."""
        last = [self._last_played.chunk] if self._last_played is not None else []
        return last + [mark.chunk for mark in self._pending.values() if mark.chunk]

    @property
    def pending(self) -> bool:
        """Marks placed and not yet echoed: the caller still has agent audio to hear."""
        return bool(self._pending)

    @property
    def unheard_sent(self) -> bool:
        """Marks sent and not yet echoed: the provider still holds agent audio for the caller."""
        return bool(self._sent)

    def clear(self) -> list[MarkInfo]:
        """Playback is being cleared: every sent pending mark will come back as cleared; the marks
        still queued are dropped with the queue."""
        cleared = [mark for name, mark in self._pending.items() if name in self._sent]
        for mark in cleared:
            self._forget(mark.name, mark)
        self._dropped = {name for name in self._pending if name not in self._sent}
        self._pending.clear()
        self._sent.clear()
        self._last_played = None  # the caller's playback is empty: nothing from before is playing
        self._paused_at = None
        return cleared

    def position(self, now: float) -> tuple[int | None, float]:
        """The cycle being heard and how far into its audio the caller is (samples), from the last echo."""
        mark = self._last_played
        if mark is None or mark.final:
            return None, 0.0
        if self._paused_at is not None:
            now = min(now, self._paused_at)
        elapsed = max(0.0, now - self._last_played_at) * SAMPLE_RATE_HZ
        return mark.cycle, min(mark.position + elapsed, float(self.cycle_queued(mark.cycle)))

    def heard(self, now: float) -> Heard:
        cycle, position = self.position(now)
        if cycle is None or self._last_played is None:
            return Heard(cycle=None, text="", duration_ms=0.0)
        return Heard(cycle=cycle, text=self._last_played.text, duration_ms=round(position * 1000 / SAMPLE_RATE_HZ, 1))


def fragment(chunk: str, start: int, end: int, position: float) -> str:
    """The words of ``chunk`` (audio ``start``..``end``) heard by ``position``: those whose middle, spread
    evenly over the chunk's audio by character count, has been reached."""
    if end <= start or position <= start:
        return ""
    reached = (position - start) / (end - start) * len(chunk)
    words, offset = [], 0
    for word in chunk.split(" "):
        if word and offset + len(word) / 2 <= reached:
            words.append(word)
        offset += len(word) + 1
    return " ".join(words)
