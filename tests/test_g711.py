"""G.711 mu-law tables against the stdlib ``audioop`` reference, bit for bit."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.g711 import PCM16_TO_ULAW, SILENCE_BYTE, ULAW_TO_PCM16, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))
ALL_PCM = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_table_shapes_and_dtypes() -> None:
    assert ULAW_TO_PCM16.shape == (256,)
    assert ULAW_TO_PCM16.dtype == np.int16
    assert PCM16_TO_ULAW.shape == (65536,)
    assert PCM16_TO_ULAW.dtype == np.uint8


def test_decode_all_codes_matches_audioop() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype="<i2")
    got = ulaw_decode(ALL_CODES)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_encode_all_int16_values_matches_audioop() -> None:
    expected = audioop.lin2ulaw(ALL_PCM.astype("<i2").tobytes(), 2)
    got = ulaw_encode(ALL_PCM)
    assert isinstance(got, bytes)
    assert len(got) == 65536
    if got != expected:
        diff = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(expected, np.uint8))
        raise AssertionError(f"{len(diff)} mismatches, first at pcm={int(ALL_PCM[diff[0]])}")


def test_silence_byte() -> None:
    assert ulaw_encode(np.zeros(3, dtype=np.int16)) == bytes([SILENCE_BYTE]) * 3
    assert ulaw_decode(bytes([SILENCE_BYTE])).tolist() == [0]


def test_known_codes() -> None:
    # Extremes of the mu-law range.
    assert ulaw_decode(b"\x00").tolist() == [-32124]
    assert ulaw_decode(b"\x80").tolist() == [32124]
    assert ulaw_encode(np.array([32767, -32768], dtype=np.int16)) == b"\x80\x00"


def test_encode_decode_encode_is_stable() -> None:
    # Decoding a code and re-encoding it gives the same code back (except 0x7F, which aliases 0xFF: -0 vs +0).
    decoded = ulaw_decode(ALL_CODES)
    reencoded = np.frombuffer(ulaw_encode(decoded), dtype=np.uint8)
    codes = np.arange(256)
    mismatch = codes[reencoded != codes]
    assert mismatch.tolist() == [0x7F]
    assert reencoded[0x7F] == 0xFF


def test_encode_accepts_non_int16_input() -> None:
    as_int32 = np.array([0, 1000, -1000], dtype=np.int32)
    assert ulaw_encode(as_int32) == ulaw_encode(as_int32.astype(np.int16))


def test_empty() -> None:
    assert ulaw_encode(np.zeros(0, dtype=np.int16)) == b""
    assert len(ulaw_decode(b"")) == 0


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    data=st.lists(st.integers(-32768, 32767), max_size=400),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_chunked_encode_equals_whole(data: list[int], cuts: list[int]) -> None:
    samples = np.array(data, dtype=np.int16)
    bounds = [0, *sorted(c for c in cuts if c <= len(samples)), len(samples)]
    pieces = b"".join(ulaw_encode(samples[a:b]) for a, b in itertools.pairwise(bounds))
    assert pieces == ulaw_encode(samples)
    assert pieces == audioop.lin2ulaw(samples.astype("<i2").tobytes(), 2)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_chunked_decode_equals_whole(data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    pieces = np.concatenate(
        [ulaw_decode(data[a:b]) for a, b in itertools.pairwise(bounds)]
    ).astype(np.int16)
    np.testing.assert_array_equal(pieces, ulaw_decode(data))
    np.testing.assert_array_equal(pieces, np.frombuffer(audioop.ulaw2lin(data, 2), dtype="<i2"))
