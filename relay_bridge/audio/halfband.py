"""Exact 2:1 rate changes (16 kHz <-> 8 kHz) with a stateful half-band FIR in integer arithmetic.

A stream at 16 kHz must be low-passed below 4 kHz before every other sample is dropped, or
everything between 4 and 8 kHz folds back into the telephone band. Filtering each 20 ms frame on
its own would ring at every frame edge, so the filter keeps the last ``TAPS - 1`` samples of its
input between calls. The filter is a Kaiser-windowed half-band low-pass (cut-off at a quarter of
the high rate: -6 dB at 4 kHz, flat to 3.4 kHz, about 70 dB down from 4.6 kHz), which makes every
other tap zero and the centre tap exactly one half.

Taps are Q15 integers and the sums are int64, so results do not depend on how the stream is cut:
block-wise output equals one-shot output bit for bit, and no floating-point summation order can make
them differ. Each call returns exactly half (decimator) or twice (interpolator) as many samples as
it was given, so frame sizes stay fixed; the cost is a constant delay of ``DELAY_16K`` samples at
16 kHz (under 2 ms) for each direction.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

TAPS = 63
DELAY_16K = (TAPS - 1) // 2  # group delay of the linear-phase filter, in 16 kHz samples
_Q = 15
_KAISER_BETA = 7.0


def _design() -> NDArray[np.int64]:
    n = np.arange(TAPS) - DELAY_16K
    ideal = 0.5 * np.sinc(n / 2)  # half-band: zero at every even offset except the centre
    h = ideal * np.kaiser(TAPS, _KAISER_BETA)
    taps = np.rint(h * (1 << _Q)).astype(np.int64)
    taps[n % 2 == 0] = 0
    taps[DELAY_16K] = 1 << (_Q - 1)
    # The odd-offset taps must sum to exactly one half too: then both polyphase branches of the
    # interpolator have unity DC gain (no 8 kHz image of a DC offset) and the decimator's gain is 1.
    error = (1 << (_Q - 1)) - int(taps.sum() - taps[DELAY_16K])
    assert error % 2 == 0  # symmetric pairs always sum to an even number
    taps[DELAY_16K - 1] += error // 2
    taps[DELAY_16K + 1] += error // 2
    return taps


HALFBAND_TAPS: NDArray[np.int64] = _design()


def _filter(history: NDArray[np.int64], x: NDArray[np.int64], gain_shift: int) -> NDArray[np.int64]:
    full = np.concatenate((history, x))
    acc = np.convolve(full, HALFBAND_TAPS, mode="valid")  # one output per sample of ``x``
    return (acc + (1 << (_Q - gain_shift - 1))) >> (_Q - gain_shift)


def _to_int16(y: NDArray[np.int64]) -> NDArray[np.int16]:
    return np.clip(y, -32768, 32767).astype(np.int16)


class Decimator:
    """16 kHz to 8 kHz: anti-alias low-pass, then keep every other sample."""

    def __init__(self) -> None:
        self._history = np.zeros(TAPS - 1, dtype=np.int64)
        self._consumed = 0  # input samples seen so far; decides which samples are kept

    def process(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        x = np.asarray(samples, dtype=np.int64)
        if len(x) == 0:
            return np.zeros(0, dtype=np.int16)
        y = _filter(self._history, x, 0)
        first = self._consumed % 2  # keep samples at even positions of the whole stream
        self._consumed += len(x)
        self._history = np.concatenate((self._history, x))[-(TAPS - 1) :]
        return _to_int16(y[first::2])


class Interpolator:
    """8 kHz to 16 kHz: insert a zero after every sample, then low-pass with gain 2."""

    def __init__(self) -> None:
        self._history = np.zeros(TAPS - 1, dtype=np.int64)

    def process(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        x = np.asarray(samples, dtype=np.int64)
        if len(x) == 0:
            return np.zeros(0, dtype=np.int16)
        stuffed = np.zeros(2 * len(x), dtype=np.int64)
        stuffed[0::2] = x
        y = _filter(self._history, stuffed, 1)
        self._history = np.concatenate((self._history, stuffed))[-(TAPS - 1) :]
        return _to_int16(y)
