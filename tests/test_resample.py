"""StreamResampler: chunked streaming is continuous and equals one-shot conversion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from relay_bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float, resample_once

RATE_PAIRS = [(8000, 16000), (22050, 8000)]


def _signal(n: int, seed: int = 1) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000.0
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(n)
    return x.astype(np.float32)


def _sine(n: int, rate: int, freq: float = 300.0) -> NDArray[np.float32]:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def _one_shot(r: StreamResampler, x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.concatenate((r.process(x), r.flush()))


def _chunked(r: StreamResampler, x: NDArray[np.float32], cuts: list[int]) -> NDArray[np.float32]:
    bounds = [0, *sorted(c for c in cuts if c <= len(x)), len(x)]
    out = [r.process(x[a:b]) for a, b in itertools.pairwise(bounds)]
    out.append(r.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@settings(derandomize=True, max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_chunked_equals_one_shot(in_rate: int, out_rate: int, cuts: list[int]) -> None:
    x = _signal(3000)
    whole = _one_shot(StreamResampler(in_rate, out_rate), x)
    pieces = _chunked(StreamResampler(in_rate, out_rate), x, cuts)
    assert pieces.dtype == np.float32
    assert len(pieces) == len(whole)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_tiny_chunks_equal_one_shot(in_rate: int, out_rate: int) -> None:
    x = _signal(2000, seed=7)
    whole = _one_shot(StreamResampler(in_rate, out_rate), x)
    pieces = _chunked(StreamResampler(in_rate, out_rate), x, list(range(0, 2000, 3)))
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_no_click_at_chunk_boundaries(in_rate: int, out_rate: int) -> None:
    n = in_rate // 2
    x = _sine(n, in_rate)
    whole = _one_shot(StreamResampler(in_rate, out_rate), x)
    # 20 ms chunks, like the call path.
    step = in_rate // 50
    pieces = _chunked(StreamResampler(in_rate, out_rate), x, list(range(step, n, step)))
    max_jump_whole = float(np.abs(np.diff(whole)).max())
    max_jump_pieces = float(np.abs(np.diff(pieces)).max())
    assert max_jump_pieces <= max_jump_whole + 1e-3
    # Away from the stream's own onset and end transients the output is a clean sine: every jump is
    # bounded by the sine's slope at out_rate, so no chunk boundary inside can hold a click.
    edge = out_rate // 20
    slope = 0.5 * 2 * np.pi * 300.0 / out_rate
    assert float(np.abs(np.diff(pieces[edge:-edge])).max()) <= slope * 1.05


def test_fresh_resampler_per_chunk_would_differ() -> None:
    # Sanity check that the equality test above is meaningful: restarting the filter per chunk
    # (what StreamResampler must not do) does change the output.
    x = _signal(3000)
    whole = _one_shot(StreamResampler(8000, 16000), x)
    restarted = np.concatenate([_one_shot(StreamResampler(8000, 16000), x[i : i + 160])
                                for i in range(0, 3000, 160)])
    assert len(restarted) != len(whole) or not np.allclose(restarted, whole, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_same_rate_is_passthrough(rate: int) -> None:
    r = StreamResampler(rate, rate)
    x = _signal(500)
    out = r.process(x)
    np.testing.assert_array_equal(out, x)
    assert out is not x
    out[0] = 123.0
    assert x[0] != 123.0  # a copy, not a view
    assert len(r.flush()) == 0
    assert r.flush().dtype == np.float32


def test_passthrough_converts_dtype() -> None:
    r = StreamResampler(8000, 8000)
    out = r.process(np.array([0.5, -0.25], dtype=np.float64))  # type: ignore[arg-type]
    assert out.dtype == np.float32
    assert out.tolist() == [0.5, -0.25]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_flush_resets_for_reuse(in_rate: int, out_rate: int) -> None:
    r = StreamResampler(in_rate, out_rate)
    a, b = _signal(2500, seed=2), _signal(1800, seed=3)
    first = _one_shot(r, a)
    second = _one_shot(r, b)
    np.testing.assert_allclose(first, _one_shot(StreamResampler(in_rate, out_rate), a), rtol=0, atol=1e-6)
    np.testing.assert_allclose(second, _one_shot(StreamResampler(in_rate, out_rate), b), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "out_rate"), [*RATE_PAIRS, (16000, 8000), (8000, 22050), (44100, 8000)])
@pytest.mark.parametrize("n", [800, 4410, 12345])
def test_output_length_tracks_ratio(in_rate: int, out_rate: int, n: int) -> None:
    out = _one_shot(StreamResampler(in_rate, out_rate), _signal(n))
    expected = n * out_rate / in_rate
    assert abs(len(out) - expected) <= 2


def test_preserves_tone_amplitude() -> None:
    rate_in, rate_out = 8000, 16000
    x = _sine(8000, rate_in, freq=500.0)
    out = _one_shot(StreamResampler(rate_in, rate_out), x)
    middle = out[2000:-2000]
    assert 0.48 < float(np.abs(middle).max()) < 0.52


@pytest.mark.parametrize(("in_rate", "out_rate"), [(0, 8000), (8000, 0), (-1, 8000)])
def test_rejects_non_positive_rates(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(in_rate, out_rate)


def test_pcm16_float_conversions() -> None:
    pcm = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    f = pcm16_to_float(pcm)
    assert f.dtype == np.float32
    assert f.tolist() == [-1.0, -0.5, 0.0, 0.5, 32767 / 32768]
    np.testing.assert_array_equal(float_to_pcm16(f), pcm)
    clipped = float_to_pcm16(np.array([1.5, -2.0, 0.99999], dtype=np.float32))
    assert clipped.dtype == np.int16
    assert clipped.tolist() == [32767, -32768, 32767]


def test_pcm16_round_trip_all_values() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    np.testing.assert_array_equal(float_to_pcm16(pcm16_to_float(pcm)), pcm)


def test_one_shot_gives_the_samples_of_a_stream_flushed() -> None:
    rng = np.random.default_rng(7)
    for n, (in_rate, out_rate) in itertools.product((7, 3100, 12345), [*RATE_PAIRS, (22050, 8000)]):
        x = rng.standard_normal(n).astype(np.float32) * 0.1
        assert np.array_equal(resample_once(x, in_rate, out_rate), _one_shot(StreamResampler(in_rate, out_rate), x))
