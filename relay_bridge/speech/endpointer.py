"""Voice-activity endpointer: turns a stream of 8 kHz samples into utterance events.

Theory of operation. webrtcvad classifies each 20 ms frame as voiced or not. Voicing flickers inside
words and between them, so the endpointer is a small state machine over frames:

    quiet --voiced--> starting --enough voiced--> speaking --unvoiced--> stopping
      ^                   |  gap > hangover            ^                     |
      +-------------------+                            +------voiced run-----+
      ^                                                                      |
      +----------------------- silence >= end_of_speech_silence -------------+

* ``speech_start_ms`` of voiced frames (gaps up to ``hangover_ms`` tolerated) confirm a start; the
  start is dated back to the first voiced frame, and ``pre_roll_ms`` before it go to the recogniser.
* In ``stopping``, ``speculate_ms`` of silence emits ``SpeechPaused``: the utterance is probably over,
  so the runtime may start recognising it while the end-of-speech wait runs (recognition costs a few
  hundred ms; overlapping it with the wait is the main latency lever). A return of speech emits
  ``SpeechResumed`` and the speculative result is discarded.
* ``end_of_speech_silence_ms`` of silence emits ``SpeechEnded``; ``hangover_ms`` of trailing audio is
  kept after the last voiced frame. An utterance longer than ``max_utterance_ms`` is ended there.
  ``end_turn`` ends a paused utterance at once (an end-of-turn model's decision, made by the runtime).

All positions are absolute sample indices at 8 kHz from the start of the stream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import webrtcvad
from numpy.typing import NDArray

from relay_bridge.audio.telephony import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE_HZ

TURN_DETECTION = ("smart", "silence")


@dataclass(frozen=True)
class EndpointerSettings:
    aggressiveness: int = 3
    speech_start_ms: int = 60
    hangover_ms: int = 100
    end_of_speech_silence_ms: int = 600
    speculate_ms: int = 100
    pre_roll_ms: int = 240
    max_utterance_ms: int = 28_000
    # "smart": once speech pauses the runtime asks an end-of-turn model whether the caller has
    # finished (``end_turn``); if not, the turn ends after max_turn_silence_ms of silence at most.
    # "silence": the turn ends after end_of_speech_silence_ms of silence.
    turn_detection: str = "smart"
    max_turn_silence_ms: int = 1500

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0..3")
        if self.turn_detection not in TURN_DETECTION:
            raise ValueError(f"turn_detection must be one of {', '.join(TURN_DETECTION)}, got {self.turn_detection!r}")
        if self.max_turn_silence_ms < FRAME_MS:
            raise ValueError(f"max_turn_silence_ms must be at least {FRAME_MS}")
        for name in ("speech_start_ms", "hangover_ms", "end_of_speech_silence_ms", "speculate_ms",
                     "pre_roll_ms", "max_utterance_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.speech_start_ms < FRAME_MS:
            raise ValueError(f"speech_start_ms must be at least {FRAME_MS}")
        if self.end_of_speech_silence_ms < FRAME_MS:
            raise ValueError(f"end_of_speech_silence_ms must be at least {FRAME_MS}")
        if self.hangover_ms >= self.end_of_speech_silence_ms:
            raise ValueError("hangover_ms must be shorter than end_of_speech_silence_ms")


class State(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True)
class SpeechStarted:
    start: int  # first voiced sample
    detected_at: int  # sample index at which the start was confirmed


@dataclass(frozen=True)
class SpeechPaused:
    start: int  # utterance start including pre-roll
    end: int  # end including hangover


@dataclass(frozen=True)
class SpeechResumed:
    at: int


@dataclass(frozen=True)
class SpeechEnded:
    start: int
    end: int
    speech_end: int  # end of the last voiced frame, without hangover


EndpointerEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded


def _frames(ms: int) -> int:
    return max(1, -(-ms // FRAME_MS))


class Endpointer:
    def __init__(self, settings: EndpointerSettings | None = None) -> None:
        self.settings = s = settings or EndpointerSettings()
        self._vad = webrtcvad.Vad(s.aggressiveness)
        self._start_frames = _frames(s.speech_start_ms)
        self._gap_frames = s.hangover_ms // FRAME_MS
        self._eos_frames = _frames(s.end_of_speech_silence_ms)
        # The speculative utterance ends ``hangover_ms`` after the last voiced frame: that audio must have
        # arrived when recognition starts, so speculation waits for at least that much silence.
        self._speculate_frames = min(_frames(max(s.speculate_ms, s.hangover_ms)), self._eos_frames)
        self._max_frames = _frames(s.max_utterance_ms)
        self._pending = np.zeros(0, dtype=np.int16)
        self.position = 0  # samples consumed into whole frames
        self.state = State.QUIET
        self._reset_turn()

    def _reset_turn(self) -> None:
        self._first_voiced = 0
        self._last_voiced_end = 0
        self._voiced = 0
        self._gap = 0
        self._paused = False
        self.turn_voiced_frames = 0  # voiced frames since the turn's first one (for barge-in sensitivity)

    @property
    def in_speech(self) -> bool:
        return self.state in (State.SPEAKING, State.STOPPING)

    @property
    def paused(self) -> bool:
        """The utterance in progress has had its ``SpeechPaused`` and speech has not resumed."""
        return self.state is State.STOPPING and self._paused

    @property
    def silence_ms(self) -> int:
        """Silence since the last voiced frame of the utterance in progress (0 while it is voiced)."""
        return self._gap * FRAME_MS if self.state is State.STOPPING else 0

    def end_turn(self) -> SpeechEnded | None:
        """End the utterance now, as if its end-of-speech silence had passed (an end-of-turn model said
        the caller has finished); None unless its ``SpeechPaused`` has come and speech has not resumed."""
        if not self.paused:
            return None
        events: list[EndpointerEvent] = []
        self._end(events)
        ended = events[0]
        assert isinstance(ended, SpeechEnded)
        return ended

    def open_utterance(self) -> tuple[int, int] | None:
        """Bounds of the utterance in progress (pre-roll included, up to the audio consumed), if any."""
        if not self.in_speech:
            return None
        return self._utterance_bounds()[0], self.position

    def feed(self, samples: NDArray[np.int16]) -> list[EndpointerEvent]:
        """Consume samples; return the events they complete, in order."""
        data = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        n_frames = len(data) // FRAME_SAMPLES
        events: list[EndpointerEvent] = []
        for i in range(n_frames):
            frame = data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            voiced = self._vad.is_speech(frame.tobytes(), SAMPLE_RATE_HZ)
            self._step(voiced, events)
            if voiced and self.state is not State.QUIET:
                self.turn_voiced_frames += 1
            self.position += FRAME_SAMPLES
        self._pending = data[n_frames * FRAME_SAMPLES :].copy()
        return events

    def _utterance_bounds(self) -> tuple[int, int]:
        pre = self.settings.pre_roll_ms * SAMPLE_RATE_HZ // 1000
        hang = self.settings.hangover_ms * SAMPLE_RATE_HZ // 1000
        return max(0, self._first_voiced - pre), self._last_voiced_end + hang

    def _step(self, voiced: bool, events: list[EndpointerEvent]) -> None:
        frame_start = self.position
        frame_end = frame_start + FRAME_SAMPLES
        match self.state:
            case State.QUIET:
                if voiced:
                    self._reset_turn()
                    self._first_voiced = frame_start
                    self._last_voiced_end = frame_end
                    self._voiced = 1
                    self.state = State.STARTING
                    self._confirm_start(events, frame_end)
            case State.STARTING:
                if voiced:
                    self._voiced += 1
                    self._gap = 0
                    self._last_voiced_end = frame_end
                    self._confirm_start(events, frame_end)
                else:
                    self._gap += 1
                    if self._gap > self._gap_frames:
                        self.state = State.QUIET
            case State.SPEAKING:
                if voiced:
                    self._last_voiced_end = frame_end
                else:
                    self.state = State.STOPPING
                    self._gap = 1
                    self._voiced = 0
                self._check_max(events, frame_end)
            case State.STOPPING:
                if voiced:
                    self._voiced += 1
                    if self._voiced >= self._start_frames:
                        self.state = State.SPEAKING
                        self._last_voiced_end = frame_end
                        if self._paused:
                            self._paused = False
                            events.append(SpeechResumed(at=frame_end))
                        self._check_max(events, frame_end)
                        return
                else:
                    self._voiced = 0
                self._gap += 1
                if self._gap == self._speculate_frames and not self._paused:
                    self._paused = True
                    start, end = self._utterance_bounds()
                    events.append(SpeechPaused(start=start, end=end))
                if self._gap >= self._eos_frames:
                    self._end(events)
                else:
                    self._check_max(events, frame_end)

    def _confirm_start(self, events: list[EndpointerEvent], frame_end: int) -> None:
        if self._voiced >= self._start_frames:
            self.state = State.SPEAKING
            events.append(SpeechStarted(start=self._first_voiced, detected_at=frame_end))

    def _check_max(self, events: list[EndpointerEvent], frame_end: int) -> None:
        if frame_end - self._first_voiced >= self._max_frames * FRAME_SAMPLES:
            self._last_voiced_end = frame_end
            self._end(events)

    def _end(self, events: list[EndpointerEvent]) -> None:
        start, end = self._utterance_bounds()
        events.append(SpeechEnded(start=start, end=end, speech_end=self._last_voiced_end))
        self.state = State.QUIET
        self._reset_turn()
