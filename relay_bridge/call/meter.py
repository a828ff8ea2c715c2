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
from dataclasses import dataclass
from typing import Any

from relay_bridge.conversation import events as ev
from relay_bridge.metrics import Metrics, reason_label
from relay_bridge.protocols import relay

MAX_SAMPLES = 10_000  # latencies of each kind kept per call for its summary


@dataclass
class _Turn:
    number: int
    prompt_at: float
    speech_end_at: float  # 0: not known
    cycle: int = 0  # the reply's, once its first token came
    first_token_at: float = 0.0
    first_audio_at: float = 0.0


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


class CallMeter:
    def __init__(self, metrics: Metrics, log: logging.LoggerAdapter[logging.Logger], started_at: float) -> None:
        self._metrics = metrics
        self._log = log
        self.started_at = started_at
        self.turns = 0
        self.barge_ins = 0
        self._turn: _Turn | None = None
        self.latencies: dict[str, list[float]] = {"end_of_speech_to_prompt": [], "app_first_token": [],
                                                  "first_token_to_audio": []}

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
        match note.name:
            case "prompt":
                self._end_turn()
                self.turns += 1
                self._turn = _Turn(self.turns, now, note.data.get("speech_end_at", 0.0))
                if self._turn.speech_end_at:
                    self._observe("end_of_speech_to_prompt", now - self._turn.speech_end_at)
            case "interrupt":
                self.barge_ins += 1
            case "first_token" if self._turn is not None and not self._turn.first_token_at:
                self._turn.first_token_at, self._turn.cycle = now, note.data["cycle"]
                self._observe("app_first_token", now - self._turn.prompt_at)
            case "first_audio" if self._turn is not None and self._turn.first_token_at and \
                    self._turn.cycle == note.data["cycle"]:
                self._turn.first_audio_at = now
                self._observe("first_token_to_audio", now - self._turn.first_token_at)
                self._end_turn()

    def _observe(self, kind: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        getattr(self._metrics, kind).observe(seconds)
        samples = self.latencies[kind]
        if len(samples) < MAX_SAMPLES:
            samples.append(seconds)

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        parts = {
            "end_of_speech_to_prompt_ms": _ms(turn.prompt_at - turn.speech_end_at if turn.speech_end_at else None),
            "app_first_token_ms": _ms(turn.first_token_at - turn.prompt_at if turn.first_token_at else None),
            "first_token_to_audio_ms": _ms(turn.first_audio_at - turn.first_token_at if turn.first_audio_at
                                           else None)}
        said = ", ".join(f"{label} {'-' if parts[key] is None else f'{parts[key]} ms'}" for key, label in (
            ("end_of_speech_to_prompt_ms", "end of speech to prompt"), ("app_first_token_ms", "app's first token"),
            ("first_token_to_audio_ms", "first token to first audio")))
        self._log.info("turn %d: %s", turn.number, said, extra={"data": {"turn": turn.number, **parts}})

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
