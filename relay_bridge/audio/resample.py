"""Streaming sample-rate conversion (soxr) that is continuous across block boundaries.

One ``StreamResampler`` lives as long as the stream it converts (a call's inbound audio, one
spoken item's outbound audio): its filter state carries over from block to block, so block-wise
output equals one-shot output and there is no click where blocks meet. ``flush`` drains the
filter tail at the end of the stream; the resampler can then be reused for a new stream.
"""

from __future__ import annotations

import numpy as np
import soxr
from numpy.typing import NDArray


class StreamResampler:
    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._quality = quality
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.in_rate == self.out_rate:
            return None
        return soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=self._quality)

    def process(self, samples: NDArray[np.float32]) -> NDArray[np.float32]:
        """Convert the next block; the output may lag the input by the filter delay."""
        x = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return x.copy()
        out: NDArray[np.float32] = self._stream.resample_chunk(x, last=False)
        return out

    def flush(self) -> NDArray[np.float32]:
        """End the stream: return the filter tail and reset for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out: NDArray[np.float32] = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()  # ready for the next stream
        return out


def resample_once(samples: NDArray[np.float32], in_rate: int, out_rate: int) -> NDArray[np.float32]:
    """Convert a whole signal in one piece (soxr's one-shot call: the same samples as streaming it
    through a ``StreamResampler`` and flushing, without making a stream)."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if in_rate == out_rate:
        return x.copy()
    out: NDArray[np.float32] = soxr.resample(x, in_rate, out_rate, quality="HQ")
    return out


def pcm16_to_float(samples: NDArray[np.int16]) -> NDArray[np.float32]:
    return samples.astype(np.float32) * np.float32(1.0 / 32768.0)


def float_to_pcm16(samples: NDArray[np.float32]) -> NDArray[np.int16]:
    scaled: NDArray[np.float32] = np.clip(np.rint(samples * 32768.0), -32768, 32767)
    return scaled.astype(np.int16)
