"""In-band DTMF: Q.23 tone pairs that survive G.711 and decode back to the digits."""

from __future__ import annotations

import numpy as np
import pytest

from relay_bridge.audio.dtmf import FREQUENCIES, GAP_MS, PAUSE_MS, TONE_MS, detect_dtmf, dtmf_tones
from relay_bridge.audio.g711 import ulaw_decode, ulaw_encode
from relay_bridge.audio.telephony import SAMPLE_RATE_HZ


def phone_line(samples: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    return ulaw_decode(ulaw_encode(samples))


def test_every_key_survives_mu_law_and_is_detected() -> None:
    keys = "".join(FREQUENCIES)
    assert sorted(keys) == sorted("0123456789*#ABCD")
    assert detect_dtmf(phone_line(dtmf_tones(keys))) == keys


def test_repeated_digits_are_separate_presses() -> None:
    assert detect_dtmf(phone_line(dtmf_tones("1100"))) == "1100"


def test_durations_and_the_half_second_pause() -> None:
    per_digit = (TONE_MS + GAP_MS) * SAMPLE_RATE_HZ // 1000
    assert len(dtmf_tones("12")) == 2 * per_digit
    assert len(dtmf_tones("1w2")) == 2 * per_digit + PAUSE_MS * SAMPLE_RATE_HZ // 1000
    assert len(dtmf_tones("W")) == PAUSE_MS * SAMPLE_RATE_HZ // 1000
    assert TONE_MS >= 40 and GAP_MS >= 40  # ITU-T Q.24 minimums


def test_tones_do_not_clip() -> None:
    assert int(np.abs(dtmf_tones("0123456789*#").astype(np.int32)).max()) < 32767


@pytest.mark.parametrize("digit", ["x", "5 ", "e"])
def test_invalid_digit_is_refused(digit: str) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        dtmf_tones(digit)


def test_silence_noise_and_speech_like_tones_are_not_digits() -> None:
    rng = np.random.default_rng(1)
    assert detect_dtmf(np.zeros(8000, dtype=np.int16)) == ""
    assert detect_dtmf((rng.normal(0, 3000, 8000)).astype(np.int16)) == ""
    t = np.arange(8000) / SAMPLE_RATE_HZ
    single = (8000 * np.sin(2 * np.pi * 697 * t)).astype(np.int16)  # a row tone alone is no key
    assert detect_dtmf(single) == ""
