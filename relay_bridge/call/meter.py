"""A call's timing, as an operator reads it: one log line per turn with its latency breakdown, one
line when the call ends with its totals, and the process's metrics (``relay_bridge.metrics``).

A turn is a final prompt sent to the app. Its breakdown:

- end of speech to prompt: from the end of the caller's last voiced audio (the hearing stage's
  estimate, on the clock, of when that audio arrived) to the prompt sent;
- app's first token: from the prompt to the app's first text token after it that opens a reply
  (the app's latency; a reply the app left open before the prompt and goes on with has none);
- first token to first audio: from that token to the first audio frame of the same reply sent.

The turn's line is written once its reply's first audio frame is sent, or, with parts missing, when
the next prompt or the call's end comes first. Onset to clear is timed from the notes of the cut
that stopped the agent (a hold, or a barge-in by speech that was not held first): the conversation
says which speech caused it. The meter reads the conversation's notes and the
actions the call carries out; it decides nothing. It keeps at most ``MAX_SAMPLES`` latencies of each
kind per call for the summary's medians (a four-hour call has a few thousand turns).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from typing import Any

from relay_bridge.conversation import events as ev
from relay_bridge.metrics import Metrics, reason_label
from relay_bridge.protocols import relay

MAX_SAMPLES = 10_000  # latencies of each kind kept per call for its summary


# The parts of a turn, as metrics, log fields (``<kind>_ms``) and the turn line says them.
PARTS = (("end_of_speech_to_prompt", "end of speech to prompt"), ("app_first_token", "app's first token"),
         ("first_token_to_audio", "first token to first audio"))


@dataclass
class _Turn:
    number: int
    prompt_at: float
    cycle: int = 0  # the reply's, once its first token came (cycles start at 1)
    seconds: dict[str, float] = field(default_factory=dict)  # the parts measured so far


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class CallMeter:
    def __init__(self, metrics: Metrics, log: logging.LoggerAdapter[logging.Logger], started_at: float) -> None:
        self._metrics = metrics
        self._log = log
        self.started_at = started_at
        self.turns = 0
        self.barge_ins = 0
        self._turn: _Turn | None = None
        self.latencies: dict[str, list[float]] = {kind: [] for kind, _ in PARTS}

    # -- what the call carries out -------------------------------------------------------------

    def action(self, action: ev.Action, now: float) -> None:
        match action:
            case ev.Note():
                self._note(action, now)
            case ev.SendToApp():
                self.sent(action.message)

    def sent(self, message: relay.RelayMessage) -> None:
        """A message to the app (whoever queued it)."""
        match message:
            case relay.Prompt(last=False):
                self._metrics.partials.inc()
            case relay.Error():
                self.error(message.code)

    def error(self, code: int) -> None:
        self._metrics.errors.labels(str(code)).inc()

    def _note(self, note: ev.Note, now: float) -> None:
        onset_at = note.data.get("onset_at", 0.0)
        if note.name in ("hold", "interrupt") and onset_at:
            self._metrics.onset_to_clear.observe(max(0.0, now - onset_at))
        turn = self._turn
        match note.name:
            case "prompt":
                self._end_turn()
                self.turns += 1
                self._turn = _Turn(self.turns, now)
                if note.data.get("speech_end_at"):
                    self._observe("end_of_speech_to_prompt", now - note.data["speech_end_at"])
            case "interrupt":
                self.barge_ins += 1
            case "first_token" if turn is not None and not turn.cycle:
                turn.cycle = note.data["cycle"]
                self._observe("app_first_token", now - turn.prompt_at)
            case "first_audio" if turn is not None and turn.cycle == note.data["cycle"]:
                self._observe("first_token_to_audio", note.data["after_first_token_ms"] / 1000)
                self._end_turn()

    def _observe(self, kind: str, seconds: float) -> None:
        """A part of the turn in progress, measured."""
        assert self._turn is not None
        seconds = self._turn.seconds[kind] = max(0.0, seconds)
        getattr(self._metrics, kind).observe(seconds)
        samples = self.latencies[kind]
        if len(samples) < MAX_SAMPLES:
            samples.append(seconds)

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        ms = {kind: _ms(turn.seconds[kind]) if kind in turn.seconds else None for kind, _ in PARTS}
        said = ", ".join(f"{label} {'-' if ms[kind] is None else f'{ms[kind]} ms'}" for kind, label in PARTS)
        self._log.info("turn %d: %s", turn.number, said,
                       extra={"data": {"turn": turn.number, **{f"{kind}_ms": v for kind, v in ms.items()}}})

    # -- the end --------------------------------------------------------------------------------

    def finish(self, now: float, reason: ev.EndReason | None, ended_because: str, detail: str) -> None:
        """The call is over: its last turn's line, the summary line, and the end reason counted."""
        self._end_turn()
        self._metrics.calls.labels(reason_label(reason)).inc()
        data: dict[str, Any] = {"duration_s": round(now - self.started_at, 1), "turns": self.turns,
                                "barge_ins": self.barge_ins, "end_reason": reason_label(reason)}
        said = []
        for kind, samples in self.latencies.items():
            if samples:
                p50, top = _ms(statistics.median(samples)), _ms(max(samples))
                data[f"{kind}_p50_ms"], data[f"{kind}_max_ms"] = p50, top
                said.append(f"{kind.replace('_', ' ')} p50 {p50} ms / max {top} ms")
        self._log.info("call ended: %s after %.1f s, %d turn(s), %d barge-in(s)%s; %s", ended_because or "unknown",
                       now - self.started_at, self.turns, self.barge_ins, "".join(f"; {s}" for s in said), detail,
                       extra={"data": data})
