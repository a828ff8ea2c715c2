"""Edge conversion between a stream's wire format and the runtime's 8 kHz mu-law."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_bridge.audio.g711 import alaw_decode, alaw_encode, l16_decode, l16_encode, ulaw_decode, ulaw_encode
from relay_bridge.audio.halfband import DELAY_16K, TAPS
from relay_bridge.audio.transcode import EdgeTranscoder, bytes_per_ms

ALL_ULAW = bytes(range(256))


def test_pcmu_8k_passes_bytes_through() -> None:
    edge = EdgeTranscoder("PCMU", 8000)
    assert edge.passthrough
    assert edge.to_ulaw(ALL_ULAW) == ALL_ULAW
    assert edge.from_ulaw(ALL_ULAW) == ALL_ULAW


def test_pcma_8k_is_g711_both_ways() -> None:
    edge = EdgeTranscoder("PCMA", 8000)
    assert edge.from_ulaw(ALL_ULAW) == alaw_encode(ulaw_decode(ALL_ULAW))
    alaw = bytes(range(256))
    assert edge.to_ulaw(alaw) == ulaw_encode(alaw_decode(alaw))


def test_l16_8k_is_big_endian_linear() -> None:
    edge = EdgeTranscoder("L16", 8000)
    wire = edge.from_ulaw(ALL_ULAW)
    assert len(wire) == 512
    np.testing.assert_array_equal(l16_decode(wire), ulaw_decode(ALL_ULAW))
    assert edge.to_ulaw(l16_encode(ulaw_decode(ALL_ULAW))) == ulaw_encode(ulaw_decode(ALL_ULAW))


def test_l16_16k_frames_keep_their_duration() -> None:
    edge = EdgeTranscoder("L16", 16000)
    assert len(edge.from_ulaw(b"\xff" * 160)) == 640  # 20 ms out
    assert len(edge.to_ulaw(b"\x00" * 640)) == 160  # 20 ms in


def test_l16_16k_tone_survives_both_directions() -> None:
    t = np.arange(1600) / 8000
    x = np.rint(8000 * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
    ulaw = ulaw_encode(x)
    bridge, caller = EdgeTranscoder("L16", 16000), EdgeTranscoder("L16", 16000)
    back = b"".join(bridge.to_ulaw(caller.from_ulaw(ulaw[i : i + 160])) for i in range(0, len(ulaw), 160))
    y = ulaw_decode(back).astype(np.float64)[DELAY_16K + TAPS :]
    ref = ulaw_decode(ulaw).astype(np.float64)[TAPS : len(ulaw) - DELAY_16K]
    # Up, down and re-quantised to mu-law: in-band audio comes back within mu-law's own step size.
    assert np.abs(y - ref).max() <= 0.02 * 8000


@settings(derandomize=True, max_examples=50, deadline=None)
@given(data=st.binary(min_size=0, max_size=1200).map(lambda b: b[: len(b) // 2 * 2]),
       cuts=st.lists(st.integers(0, 600), max_size=8))
def test_l16_16k_inbound_streaming_equals_batch(data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(2 * c for c in cuts if 2 * c <= len(data)), len(data)]
    pieces = EdgeTranscoder("L16", 16000)
    streamed = b"".join(pieces.to_ulaw(data[a:b]) for a, b in itertools.pairwise(bounds))
    assert streamed == EdgeTranscoder("L16", 16000).to_ulaw(data)


@pytest.mark.parametrize(("encoding", "rate", "reason"), [
    ("G722", 8000, "encoding must be one of PCMU, PCMA, L16"),
    ("pcmu", 8000, "encoding must be one of"),
    ("L16", 24000, "sample rate must be 8000 or 16000"),
])
def test_unsupported_formats_are_refused(encoding: str, rate: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        EdgeTranscoder(encoding, rate)


def test_bytes_per_ms() -> None:
    assert [bytes_per_ms(*f) for f in (("PCMU", 8000), ("PCMA", 8000), ("L16", 8000), ("L16", 16000))] == [8, 8, 16, 32]
