"""The 16/8 kHz half-band filters: exact lengths, anti-aliasing, and streaming equal to batch, bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from relay_bridge.audio.halfband import DELAY_16K, HALFBAND_TAPS, TAPS, Decimator, Interpolator


def tone(freq_hz: float, rate: int, n: int, amplitude: float = 10000.0) -> NDArray[np.int16]:
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / rate)).astype(np.int16)


def rms(x: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def chunked(make: type[Decimator] | type[Interpolator], x: NDArray[np.int16], cuts: list[int]) -> NDArray[np.int16]:
    f = make()
    bounds = [0, *sorted(c for c in cuts if c <= len(x)), len(x)]
    return np.concatenate([f.process(x[a:b]) for a, b in itertools.pairwise(bounds)]).astype(np.int16)


def test_taps_are_a_symmetric_half_band_with_unity_gain() -> None:
    assert len(HALFBAND_TAPS) == TAPS and TAPS % 2 == 1
    np.testing.assert_array_equal(HALFBAND_TAPS, HALFBAND_TAPS[::-1])
    assert HALFBAND_TAPS.sum() == 1 << 15
    assert HALFBAND_TAPS[DELAY_16K] == 1 << 14
    offsets = np.arange(TAPS) - DELAY_16K
    assert not HALFBAND_TAPS[(offsets % 2 == 0) & (offsets != 0)].any()


def test_lengths_are_exact_per_call() -> None:
    d, i = Decimator(), Interpolator()
    assert [len(d.process(np.zeros(n, dtype=np.int16))) for n in (320, 1, 1, 3, 0)] == [160, 1, 0, 2, 0]
    assert [len(i.process(np.zeros(n, dtype=np.int16))) for n in (160, 1, 0)] == [320, 2, 0]


def test_decimator_passes_the_telephone_band() -> None:
    out = Decimator().process(tone(1000, 16000, 3200))[TAPS:]
    assert abs(rms(out) / (10000 / np.sqrt(2)) - 1) < 0.01


def test_decimator_stops_what_would_alias() -> None:
    # 6 kHz at 16 kHz would fold to 2 kHz at 8 kHz without the low-pass.
    out = Decimator().process(tone(6000, 16000, 3200))[TAPS:]
    assert rms(out) < 10000 * 10 ** (-60 / 20)


def test_interpolator_keeps_the_original_samples_and_suppresses_images() -> None:
    x = tone(1000, 8000, 800)
    y = Interpolator().process(x)
    # The half-band's centre tap is one half and its other odd taps are zero: every other output is an input.
    np.testing.assert_array_equal(y[DELAY_16K::2], x[: len(y[DELAY_16K::2])])
    # The 7 kHz image of a 1 kHz tone is what a naive zero-stuffing would leave at full strength.
    spectrum = np.abs(np.fft.rfft(y[TAPS:].astype(np.float64) * np.hanning(len(y) - TAPS)))
    freqs = np.fft.rfftfreq(len(y) - TAPS, 1 / 16000)
    image = spectrum[np.abs(freqs - 7000) < 100].max()
    wanted = spectrum[np.abs(freqs - 1000) < 100].max()
    assert 20 * np.log10(image / wanted) < -60


def test_round_trip_through_16k_is_transparent_in_band() -> None:
    x = tone(440, 8000, 1600)
    y = Decimator().process(Interpolator().process(x))
    delay = DELAY_16K  # 2 x 31 samples at 16 kHz is 31 at 8 kHz
    err = y[delay + TAPS :].astype(np.int32) - x[TAPS : len(x) - delay].astype(np.int32)
    assert np.abs(err).max() <= 2


def test_full_scale_input_clips_instead_of_wrapping() -> None:
    square = np.tile(np.array([32767] * 8 + [-32768] * 8, dtype=np.int16), 40)
    for out in (Decimator().process(square), Interpolator().process(square)):
        assert out.dtype == np.int16
        assert out.max() == 32767 and out.min() == -32768  # Gibbs overshoot is clipped, not wrapped


@settings(derandomize=True, max_examples=80, deadline=None)
@given(data=st.lists(st.integers(-32768, 32767), max_size=700), cuts=st.lists(st.integers(0, 700), max_size=10))
def test_decimator_streaming_equals_batch(data: list[int], cuts: list[int]) -> None:
    x = np.array(data, dtype=np.int16)
    np.testing.assert_array_equal(chunked(Decimator, x, cuts), Decimator().process(x))


@settings(derandomize=True, max_examples=80, deadline=None)
@given(data=st.lists(st.integers(-32768, 32767), max_size=400), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_interpolator_streaming_equals_batch(data: list[int], cuts: list[int]) -> None:
    x = np.array(data, dtype=np.int16)
    np.testing.assert_array_equal(chunked(Interpolator, x, cuts), Interpolator().process(x))
