"""The end-of-turn model (Smart Turn v3.2) on recorded telephone speech (marked ``models``)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from relay_bridge.audio.g711 import ulaw_decode, ulaw_encode
from relay_bridge.audio.resample import pcm16_to_float, resample_once
from relay_bridge.engines.models import load_manifest, resolve
from relay_bridge.engines.turn import SAMPLE_RATE, TurnModel
from relay_bridge.sim.clips import Clip

pytestmark = pytest.mark.models

AFTER_SPEECH = 3200  # 200 ms of 16 kHz audio after the last word


@pytest.fixture(scope="module")
def model() -> TurnModel:
    found = resolve("smart-turn-v3.2", "turn")
    return TurnModel(found.path / load_manifest()["smart-turn-v3.2"].files[0].path)


def line(clip: Clip) -> np.ndarray:  # type: ignore[type-arg]
    """The clip as the bridge hears it, at the model's 16 kHz."""
    return resample_once(pcm16_to_float(ulaw_decode(ulaw_encode(clip.samples))), 8000, SAMPLE_RATE)


def test_it_is_found_and_checked_without_running_pipecat() -> None:
    found = resolve("smart-turn-v3.2", "turn")
    assert found.source == "package pipecat-ai"
    assert not any(name == "pipecat" or name.startswith("pipecat.") for name in sys.modules)


def test_features_are_whispers_log_mel_of_the_last_eight_seconds(model: TurnModel) -> None:
    rng = np.random.default_rng(3)
    long = rng.standard_normal(SAMPLE_RATE * 10).astype(np.float32)
    assert model.features(long).shape == (80, 800)
    np.testing.assert_array_equal(model.features(long), model.features(long[-SAMPLE_RATE * 8:]))
    short = long[:SAMPLE_RATE]  # padded with silence at the start: the end lines up with the window's end
    assert model.features(short)[:, -90:].std() > model.features(short)[:, :90].std()


def test_finished_sentences_are_complete_and_cut_off_ones_are_not(model: TurnModel, clips: dict[str, Clip]) -> None:
    finished, cut = [], []
    for clip in clips.values():
        if len(clip.text.split()) < 3:  # "Thank you." cut at 70% is still "Thank you" to the model
            continue
        audio = line(clip)
        start, end = 2 * clip.speech_start, 2 * clip.speech_end
        finished.append(model.complete(audio[: end + AFTER_SPEECH]))
        cut.append(model.complete(audio[: start + (end - start) * 7 // 10]))  # the last words missing
    assert len(finished) >= 5
    # "Hello world." alone reads as the start of more (the model gives it 0.01).
    assert sum(p > 0.5 for p in finished) >= len(finished) - 1
    assert all(p < 0.5 for p in cut)


def test_no_audio_is_not_a_finished_turn(model: TurnModel) -> None:
    assert model.complete(np.zeros(0, dtype=np.float32)) == 0.0
