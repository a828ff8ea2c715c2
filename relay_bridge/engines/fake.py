"""Deterministic engines for tests and pipeline benchmarks: same input, same output, no models.

``FakeTranscriber`` reports how much voiced audio it was given ("one second of speech" style), or,
when given a script, returns the scripted transcripts in turn. Text recognised in a language other
than English starts with that language ("(es) 1.0 seconds of speech"), so a test sees a switch of
language in the prompts; asked to detect the language (""), it "detects" ``detects``.
``FakeSynthesizer`` renders text as a tone, ``ms_per_char`` long, at a rate unlike 8 kHz so the
resampling path is exercised; give each language's fake voice its own ``frequency_hz`` to tell them
apart by ear, or look at ``texts``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from relay_bridge.engines.base import Transcript


@dataclass
class FakeTranscriber:
    script: Sequence[str] = ()
    sample_rate: int = 16000
    detects: str = "en"  # the language "detected" when asked for ""
    calls: list[int] = field(default_factory=list)  # lengths of the audio it was asked about
    languages: list[str] = field(default_factory=list)  # the language of each request
    hints: list[str] = field(default_factory=list)  # the hints of each request

    def transcribe(self, audio: NDArray[np.float32], language: str, *, hints: str = "") -> Transcript:
        self.calls.append(len(audio))
        self.languages.append(language)
        self.hints.append(hints)
        lang = language or self.detects
        if self.script:
            text = self.script[min(len(self.calls), len(self.script)) - 1]
        else:
            voiced = int(np.count_nonzero(np.abs(audio) > 0.01))
            tenths = round(voiced / self.sample_rate * 10)
            text = f"{tenths / 10:.1f} seconds of speech"
        return Transcript(text if lang == "en" or not text else f"({lang}) {text}", lang)


@dataclass
class FakeSynthesizer:
    ms_per_char: float = 40.0
    sample_rate: int = 16000
    frequency_hz: float = 440.0
    texts: list[str] = field(default_factory=list)  # what it was asked to say

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        self.texts.append(text)
        n = int(len(text.strip()) * self.ms_per_char * self.sample_rate / 1000)
        if n == 0:
            return
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        tone = 0.3 * np.sin(2 * math.pi * self.frequency_hz * t)
        yield (tone * 32767).astype(np.int16)


@dataclass
class FakeTurnModel:
    """Says every turn is complete with ``probability``; counts its decisions."""

    probability: float = 0.9
    decisions: int = 0

    def complete(self, audio: NDArray[np.float32]) -> float:
        self.decisions += 1
        return self.probability
