"""Sounds a caller makes that are not words: a cough, a knock on the handset, a burst of line crackle.

Synthetic (seeded), 8 kHz, loud enough for the bridge's VAD to take most of them for speech, which
is what makes them false barge-ins.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from relay_bridge.audio.telephony import SAMPLE_RATE_HZ
from relay_bridge.sim.clips import Clip

KINDS = ("cough", "knock", "crackle", "hum")


def _envelope(n: int, attack_s: float, decay_s: float) -> NDArray[np.float64]:
    t = np.arange(n) / SAMPLE_RATE_HZ
    return np.minimum(1.0, t / attack_s) * np.exp(-t / decay_s)


def noise_burst(kind: str, seed: int = 0) -> Clip:
    """One ``kind`` of burst (see ``KINDS``), varied by ``seed``, with 200 ms of silence after it."""
    rng = np.random.default_rng(seed)
    match kind:
        case "cough":  # a voiced, noisy burst with a fast attack
            n = int(rng.uniform(0.25, 0.45) * SAMPLE_RATE_HZ)
            t = np.arange(n) / SAMPLE_RATE_HZ
            pitch = rng.uniform(120, 220)
            voiced = np.sign(np.sin(2 * np.pi * pitch * t)) * 0.5
            sound = (voiced + rng.normal(0, 1.0, n)) * _envelope(n, 0.01, 0.15)
            level = 12000
        case "knock":  # three damped thuds
            n = int(0.5 * SAMPLE_RATE_HZ)
            sound = np.zeros(n)
            thud = int(0.08 * SAMPLE_RATE_HZ)
            t = np.arange(thud) / SAMPLE_RATE_HZ
            ring = np.sin(2 * np.pi * rng.uniform(300, 600) * t) * np.exp(-t / 0.02)
            for k in range(3):
                at = int((0.02 + 0.15 * k + rng.uniform(0, 0.03)) * SAMPLE_RATE_HZ)
                sound[at : at + thud] += ring[: n - at]
            level = 16000
        case "crackle":  # clicks and hiss on a bad line
            n = int(rng.uniform(0.4, 0.8) * SAMPLE_RATE_HZ)
            sound = rng.normal(0, 0.3, n)
            clicks = rng.integers(0, n, size=40)
            sound[clicks] += rng.choice([-1.0, 1.0], size=40) * 3
            level = 6000
        case "hum":  # a burst of mains hum with harmonics
            n = int(rng.uniform(0.4, 0.7) * SAMPLE_RATE_HZ)
            t = np.arange(n) / SAMPLE_RATE_HZ
            base = rng.choice([50.0, 60.0])
            sound = sum(np.sin(2 * np.pi * base * h * t) / h for h in (1, 2, 3, 5, 7))
            sound = sound * _envelope(n, 0.02, 1.0)
            level = 9000
        case _:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    peak = float(np.max(np.abs(sound))) or 1.0
    samples = np.concatenate((sound / peak * level, np.zeros(int(0.2 * SAMPLE_RATE_HZ)))).astype(np.int16)
    return Clip(f"{kind}-{seed}", "", samples, 0, n, "en")
