"""G.711 mu-law as numpy lookup tables, bit-exact with the stdlib ``audioop``.

The tables are built once from the G.711 segment arithmetic (the same integer steps audioop
uses: 16-bit input shifted to 14 bits, bias 0x84/4, clip at 8159), so encoding is one fancy-index
into a 65,536-entry table and decoding one index into a 256-entry table.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

SILENCE_BYTE = 0xFF  # mu-law code for linear 0
_BIAS = 0x84
_CLIP = 8159
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((codes & 0x0F) << 3) + _BIAS
    t <<= (codes & 0x70) >> 4
    return np.where(codes & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_encode_table() -> NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, arithmetic shift like audioop
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag, side="left")
    seg_c = np.minimum(seg, 7)
    code = (seg_c << 4) | ((mag >> (seg_c + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    table = (code ^ mask).astype(np.uint8)
    # Re-order so the table is indexed by the int16 value viewed as uint16.
    return np.roll(table, -32768)


ULAW_TO_PCM16: NDArray[np.int16] = _build_decode_table()
PCM16_TO_ULAW: NDArray[np.uint8] = _build_encode_table()


def ulaw_decode(data: bytes) -> NDArray[np.int16]:
    """mu-law bytes to 16-bit linear samples."""
    return ULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: NDArray[np.int16]) -> bytes:
    """16-bit linear samples to mu-law bytes."""
    return PCM16_TO_ULAW[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()
