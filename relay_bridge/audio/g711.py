"""G.711 mu-law and A-law as numpy lookup tables, bit-exact with the stdlib ``audioop``; big-endian L16.

The tables are built once from the G.711 segment arithmetic (the same integer steps audioop
uses: for mu-law, 16-bit input shifted to 14 bits, bias 0x84/4, clip at 8159; for A-law, 16-bit
input shifted to 13 bits, sign folded to one's complement, even bits inverted with 0x55), so
encoding is one fancy-index into a 65,536-entry table and decoding one index into a 256-entry table.

L16 is linear 16-bit PCM in network byte order (RFC 2586), which is what Telnyx streams carry.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

SILENCE_BYTE = 0xFF  # mu-law code for linear 0
ALAW_SILENCE_BYTE = 0xD5  # A-law code for linear 0
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


_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_alaw_decode_table() -> NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    t = (codes & 0x0F) << 4
    seg = (codes & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(codes & 0x80, t, -t).astype(np.int16)


def _build_alaw_encode_table() -> NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit, arithmetic shift like audioop
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)  # one's complement magnitude, as G.711 A-law folds the sign
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    seg_c = np.minimum(seg, 7)
    quant = np.where(seg_c < 2, mag >> 1, mag >> np.maximum(seg_c, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg_c << 4) | quant)
    table = (code ^ mask).astype(np.uint8)
    return np.roll(table, -32768)


ALAW_TO_PCM16: NDArray[np.int16] = _build_alaw_decode_table()
PCM16_TO_ALAW: NDArray[np.uint8] = _build_alaw_encode_table()


def alaw_decode(data: bytes) -> NDArray[np.int16]:
    """A-law bytes to 16-bit linear samples."""
    return ALAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: NDArray[np.int16]) -> bytes:
    """16-bit linear samples to A-law bytes."""
    return PCM16_TO_ALAW[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def l16_decode(data: bytes) -> NDArray[np.int16]:
    """Big-endian 16-bit PCM bytes to native samples; ``data`` must have an even length."""
    if len(data) % 2:
        raise ValueError(f"L16 data must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype=">i2").astype(np.int16)


def l16_encode(samples: NDArray[np.int16]) -> bytes:
    """Native 16-bit samples to big-endian PCM bytes."""
    return np.asarray(samples, dtype=np.int16).astype(">i2").tobytes()
