"""In-band DTMF: ITU-T Q.23 tone pairs, generated for ``sendDigits`` and detected for tests.

Media Streams cannot send DTMF events, so digits are sent as audio, as a telephone would. Each
digit is its row and column tones together for ``TONE_MS``, followed by ``GAP_MS`` of silence;
both are well above the 40 ms minimum of ITU-T Q.24, so exchanges and IVRs accept them. ``w`` is a
0.5 s pause, as in TwiML ``<Play digits>``. Each tone is at about -10 dBFS, the pair below clipping
through G.711.

The detector is the textbook Goertzel filter bank over 205-sample windows at 8 kHz: a digit is
reported when one row and one column tone dominate the window's energy for two windows running.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from relay_bridge.audio.telephony import SAMPLE_RATE_HZ

TONE_MS = 100
GAP_MS = 100
PAUSE_MS = 500
TONE_AMPLITUDE = 0.3  # of full scale, per tone
ROWS = (697, 770, 852, 941)
COLUMNS = (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")
FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (ROWS[r], COLUMNS[c]) for r, row in enumerate(KEYS) for c, key in enumerate(row)
}
PAUSE = "wW"


def dtmf_tones(digits: str, rate: int = SAMPLE_RATE_HZ) -> NDArray[np.int16]:
    """Audio for ``digits`` (0-9, A-D, * and #; w or W pauses half a second)."""
    tone_n, gap_n, pause_n = (rate * ms // 1000 for ms in (TONE_MS, GAP_MS, PAUSE_MS))
    t = np.arange(tone_n) / rate
    ramp = np.minimum(1.0, np.minimum(np.arange(tone_n), np.arange(tone_n)[::-1]) / (0.004 * rate))  # no clicks
    parts = []
    for d in digits:
        if d in PAUSE:
            parts.append(np.zeros(pause_n))
            continue
        if d not in FREQUENCIES:
            raise ValueError(f"not a DTMF digit: {d!r}")
        low, high = FREQUENCIES[d]
        tone = TONE_AMPLITUDE * (np.sin(2 * math.pi * low * t) + np.sin(2 * math.pi * high * t)) * ramp
        parts += [tone, np.zeros(gap_n)]
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return (np.concatenate(parts) * 32767).astype(np.int16)


def _goertzel_power(block: NDArray[np.float64], freq: float, rate: int) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    return s2 * s2 + s1 * s1 - coeff * s1 * s2


def detect_dtmf(samples: NDArray[np.int16], rate: int = SAMPLE_RATE_HZ, window: int = 205) -> str:
    """The digits present in ``samples``, each once per key press."""
    x = samples.astype(np.float64) / 32768
    digits, last, run = [], "", 0
    for start in range(0, len(x) - window + 1, window):
        block = x[start : start + window]
        energy = float(np.dot(block, block)) * window / 2
        key = ""
        if energy > 1e-3 * window:
            rows = [_goertzel_power(block, f, rate) for f in ROWS]
            cols = [_goertzel_power(block, f, rate) for f in COLUMNS]
            r, c = int(np.argmax(rows)), int(np.argmax(cols))
            if rows[r] + cols[c] > 0.6 * energy and min(rows[r], cols[c]) > 0.1 * max(rows[r], cols[c]):
                key = KEYS[r][c]
        run = run + 1 if key == last else 1
        if key and run == 2:
            digits.append(key)
        last = key
    return "".join(digits)
