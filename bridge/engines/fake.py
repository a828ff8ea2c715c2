"""Deterministic engines for tests and pipeline benchmarks: same input, same output, no models.

``FakeTranscriber`` reports how much voiced audio it was given ("one second of speech" style), or,
when given a script, returns the scripted transcripts in turn. ``FakeSynthesizer`` renders text as a
tone, ``ms_per_char`` long, at a rate unlike 8 kHz so the resampling path is exercised.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass
class FakeTranscriber:
    script: Sequence[str] = ()
    sample_rate: int = 16000
    calls: list[int] = field(default_factory=list)  # lengths of the audio it was asked about

    def transcribe(self, audio: NDArray[np.float32], language: str) -> str:
        self.calls.append(len(audio))
        if self.script:
            return self.script[min(len(self.calls), len(self.script)) - 1]
        voiced = int(np.count_nonzero(np.abs(audio) > 0.01))
        tenths = round(voiced / self.sample_rate * 10)
        return f"{tenths / 10:.1f} seconds of speech"


@dataclass
class FakeSynthesizer:
    ms_per_char: float = 40.0
    sample_rate: int = 16000
    frequency_hz: float = 440.0

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        n = int(len(text.strip()) * self.ms_per_char * self.sample_rate / 1000)
        if n == 0:
            return
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        tone = 0.3 * np.sin(2 * math.pi * self.frequency_hz * t)
        yield (tone * 32767).astype(np.int16)
