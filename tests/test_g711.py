"""G.711 mu-law and A-law tables against the stdlib ``audioop`` reference, bit for bit."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_bridge.audio.g711 import (
    ALAW_SILENCE_BYTE,
    ALAW_TO_PCM16,
    PCM16_TO_ALAW,
    PCM16_TO_ULAW,
    SILENCE_BYTE,
    ULAW_TO_PCM16,
    alaw_decode,
    alaw_encode,
    l16_decode,
    l16_encode,
    ulaw_decode,
    ulaw_encode,
)

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


# --- A-law and big-endian L16 -----------------------------------------------------------------


def test_alaw_table_shapes_and_dtypes() -> None:
    assert ALAW_TO_PCM16.shape == (256,) and ALAW_TO_PCM16.dtype == np.int16
    assert PCM16_TO_ALAW.shape == (65536,) and PCM16_TO_ALAW.dtype == np.uint8


def test_alaw_decode_all_codes_matches_audioop() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype="<i2")
    np.testing.assert_array_equal(alaw_decode(ALL_CODES), expected)


def test_alaw_encode_all_int16_values_matches_audioop() -> None:
    expected = audioop.lin2alaw(ALL_PCM.astype("<i2").tobytes(), 2)
    got = alaw_encode(ALL_PCM)
    if got != expected:
        diff = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(expected, np.uint8))
        raise AssertionError(f"{len(diff)} mismatches, first at pcm={int(ALL_PCM[diff[0]])}")


def test_alaw_known_codes() -> None:
    assert alaw_encode(np.zeros(2, dtype=np.int16)) == bytes([ALAW_SILENCE_BYTE]) * 2
    assert alaw_decode(b"\xaa\x2a").tolist() == [32256, -32256]  # the loudest codes
    assert alaw_encode(np.array([32767, -32768], dtype=np.int16)) == b"\xaa\x2a"


def test_alaw_decode_encode_is_identity_on_codes() -> None:
    # Unlike mu-law, A-law has no negative zero: every code survives a decode/encode round trip.
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


@settings(derandomize=True, max_examples=60, deadline=None)
@given(data=st.lists(st.integers(-32768, 32767), max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_alaw_chunked_encode_equals_whole(data: list[int], cuts: list[int]) -> None:
    samples = np.array(data, dtype=np.int16)
    bounds = [0, *sorted(c for c in cuts if c <= len(samples)), len(samples)]
    pieces = b"".join(alaw_encode(samples[a:b]) for a, b in itertools.pairwise(bounds))
    assert pieces == alaw_encode(samples) == audioop.lin2alaw(samples.astype("<i2").tobytes(), 2)


def test_l16_is_big_endian() -> None:
    assert l16_encode(np.array([1, -2, 0x1234], dtype=np.int16)) == b"\x00\x01\xff\xfe\x12\x34"
    assert l16_decode(b"\x00\x01\xff\xfe\x12\x34").tolist() == [1, -2, 0x1234]
    assert l16_decode(b"\x12\x34").dtype == np.int16


def test_l16_round_trips_every_value() -> None:
    np.testing.assert_array_equal(l16_decode(l16_encode(ALL_PCM)), ALL_PCM)
    assert l16_encode(ALL_PCM) == audioop.byteswap(ALL_PCM.astype("<i2").tobytes(), 2)


def test_l16_refuses_half_samples() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        l16_decode(b"\x00\x01\x02")
