"""Conversion between a stream's wire format and the 8 kHz mu-law the call runtime works in.

The runtime (hearing, pacer, marks) counts 160-byte mu-law frames at 8 kHz. A provider that
streams another G.711 law, linear L16, or 16 kHz audio is converted at the edge, once per direction:
``to_ulaw`` for what arrives and ``from_ulaw`` for what is sent. Each direction owns its filter
state (the 16 kHz paths keep a half-band filter across frames), so one ``EdgeTranscoder`` lives as
long as its stream. 8 kHz mu-law passes through untouched, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from relay_bridge.audio.g711 import alaw_decode, alaw_encode, l16_decode, l16_encode, ulaw_decode, ulaw_encode
from relay_bridge.audio.halfband import Decimator, Interpolator
from relay_bridge.audio.telephony import SAMPLE_RATE_HZ

ENCODINGS = ("PCMU", "PCMA", "L16")
SAMPLE_RATES = (8000, 16000)


def bytes_per_ms(encoding: str, sample_rate: int) -> int:
    """Wire bytes per millisecond of audio."""
    return sample_rate // 1000 * (2 if encoding == "L16" else 1)


def decode(encoding: str, data: bytes) -> NDArray[np.int16]:
    if encoding == "PCMU":
        return ulaw_decode(data)
    if encoding == "PCMA":
        return alaw_decode(data)
    return l16_decode(data)


def encode(encoding: str, samples: NDArray[np.int16]) -> bytes:
    if encoding == "PCMU":
        return ulaw_encode(samples)
    if encoding == "PCMA":
        return alaw_encode(samples)
    return l16_encode(samples)


@dataclass
class EdgeTranscoder:
    """One stream's format (``encoding`` at ``sample_rate``) to and from 8 kHz mu-law."""

    encoding: str
    sample_rate: int
    _decimator: Decimator = field(default_factory=Decimator, init=False, repr=False)
    _interpolator: Interpolator = field(default_factory=Interpolator, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample rate must be 8000 or 16000, got {self.sample_rate}")

    @property
    def passthrough(self) -> bool:
        return self.encoding == "PCMU" and self.sample_rate == SAMPLE_RATE_HZ

    def to_ulaw(self, payload: bytes) -> bytes:
        """Wire audio to 8 kHz mu-law (L16 payloads must have an even length)."""
        if self.passthrough:
            return payload
        samples = decode(self.encoding, payload)
        if self.sample_rate != SAMPLE_RATE_HZ:
            samples = self._decimator.process(samples)
        return ulaw_encode(samples)

    def from_ulaw(self, ulaw: bytes) -> bytes:
        """8 kHz mu-law to wire audio."""
        if self.passthrough:
            return ulaw
        samples = ulaw_decode(ulaw)
        if self.sample_rate != SAMPLE_RATE_HZ:
            samples = self._interpolator.process(samples)
        return encode(self.encoding, samples)
