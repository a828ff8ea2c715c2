"""Endpointer over real recorded speech (the bundled 8 kHz clips), padded with digital silence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from relay_bridge.audio.telephony import FRAME_SAMPLES, SAMPLE_RATE_HZ
from relay_bridge.sim.clips import BUNDLED, Clip, read_wav, speech_bounds
from relay_bridge.speech.endpointer import (
    Endpointer,
    EndpointerEvent,
    EndpointerSettings,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    State,
)

CLIP_NAMES = ["hello-world", "vm-sorry", "agent-pass", "privacy-prompt", "pls-hold-while-try",
              "please-try-call-later"]
DEFAULTS = EndpointerSettings()
PRE_ROLL = DEFAULTS.pre_roll_ms * SAMPLE_RATE_HZ // 1000
HANGOVER = DEFAULTS.hangover_ms * SAMPLE_RATE_HZ // 1000


def silence(ms: int) -> NDArray[np.int16]:
    return np.zeros(ms * SAMPLE_RATE_HZ // 1000, dtype=np.int16)


def kinds(events: list[EndpointerEvent]) -> list[type]:
    return [type(e) for e in events]


def without_resumed_pauses(events: list[EndpointerEvent]) -> list[EndpointerEvent]:
    """Drop pauses the speaker resumed from (a comma's pause may trigger one), checking they pair up."""
    out: list[EndpointerEvent] = []
    for ev in events:
        if isinstance(ev, SpeechResumed):
            assert out and isinstance(out[-1], SpeechPaused), "a resume must follow a pause"
            out.pop()
        else:
            out.append(ev)
    return out


def run(samples: NDArray[np.int16], settings: EndpointerSettings | None = None) -> list[EndpointerEvent]:
    return Endpointer(settings).feed(samples)


@pytest.fixture(scope="module")
def speech() -> dict[str, NDArray[np.int16]]:
    return {name: read_wav(BUNDLED / f"{name}.wav") for name in CLIP_NAMES}


def test_clips_are_real_speech(clips: dict[str, Clip]) -> None:
    assert set(CLIP_NAMES) <= set(clips)
    for name in CLIP_NAMES:
        clip = clips[name]
        assert clip.samples.dtype == np.int16
        assert 1.0 < clip.seconds < 5.0
        assert 0 < clip.speech_start < clip.speech_end <= len(clip.samples)


def test_silence_alone_gives_no_events() -> None:
    ep = Endpointer()
    assert ep.feed(silence(5000)) == []
    assert ep.state is State.QUIET
    assert not ep.in_speech
    assert ep.position == 5000 * 8


@pytest.mark.parametrize("name", CLIP_NAMES)
@pytest.mark.parametrize("lead", [8000, 8000 + 77])  # frame-aligned and not
def test_one_utterance_per_clip(speech: dict[str, NDArray[np.int16]], name: str, lead: int) -> None:
    clip = speech[name]
    e_start, e_end = speech_bounds(clip)
    samples = np.concatenate((np.zeros(lead, dtype=np.int16), clip, silence(1500)))
    events = without_resumed_pauses(run(samples))
    assert kinds(events) == [SpeechStarted, SpeechPaused, SpeechEnded]
    started, paused, ended = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(paused, SpeechPaused)
    assert isinstance(ended, SpeechEnded)
    clip_start, clip_end = lead, lead + len(clip)
    energy_start, energy_end = lead + e_start, lead + e_end

    # The first voiced frame: at or before the energy onset, and inside the clip.
    assert clip_start - FRAME_SAMPLES < started.start <= energy_start
    assert started.start % FRAME_SAMPLES == 0
    assert started.start < started.detected_at
    assert started.detected_at - started.start >= DEFAULTS.speech_start_ms * SAMPLE_RATE_HZ // 1000
    assert started.detected_at <= energy_start + 4 * FRAME_SAMPLES  # confirmed promptly

    # The utterance covers the energy bounds, padded by exactly pre-roll and hangover.
    assert ended.start == started.start - PRE_ROLL
    assert ended.start <= energy_start
    assert ended.speech_end >= energy_end
    assert ended.end == ended.speech_end + HANGOVER
    assert ended.end >= energy_end
    # ...and does not spill far past the audio (webrtcvad has its own short internal hangover).
    assert ended.speech_end <= clip_end + 4 * FRAME_SAMPLES

    # No speech resumed, so the speculative pause names the same span as the end.
    assert (paused.start, paused.end) == (ended.start, ended.end)


def test_pre_roll_clipped_at_stream_start(speech: dict[str, NDArray[np.int16]]) -> None:
    events = run(np.concatenate((speech["hello-world"], silence(1500))))
    ended = events[-1]
    assert isinstance(ended, SpeechEnded)
    assert ended.start == 0


@pytest.mark.parametrize(
    ("first", "second"), [("hello-world", "vm-sorry"), ("agent-pass", "pls-hold-while-try")]
)
def test_gap_longer_than_end_of_speech_gives_two_utterances(
    speech: dict[str, NDArray[np.int16]], first: str, second: str
) -> None:
    gap = DEFAULTS.end_of_speech_silence_ms + 400
    a, b = speech[first], speech[second]
    samples = np.concatenate((silence(500), a, silence(gap), b, silence(1500)))
    events = [e for e in run(samples) if isinstance(e, SpeechStarted | SpeechEnded)]  # pauses between words aside
    assert kinds(events) == [SpeechStarted, SpeechEnded] * 2
    end1, end2 = events[1], events[3]
    assert isinstance(end1, SpeechEnded)
    assert isinstance(end2, SpeechEnded)
    second_at = 4000 + len(a) + gap * 8
    assert end1.end <= end2.start + PRE_ROLL  # in order
    assert end1.speech_end <= second_at
    assert end2.start <= second_at + speech_bounds(b)[0]
    assert end2.speech_end >= second_at + speech_bounds(b)[1]


@pytest.mark.parametrize("gap_ms", [100, 200])
def test_gap_shorter_than_end_of_speech_gives_one_utterance(
    speech: dict[str, NDArray[np.int16]], gap_ms: int
) -> None:
    assert gap_ms < DEFAULTS.end_of_speech_silence_ms
    a, b = speech["hello-world"], speech["vm-sorry"]
    samples = np.concatenate((silence(500), a, silence(gap_ms), b, silence(1500)))
    events = run(samples)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(started) == 1
    assert len(ended) == 1
    assert isinstance(events[-1], SpeechEnded)
    end = ended[0]
    assert end.start <= 4000 + speech_bounds(a)[0]
    assert end.speech_end >= 4000 + len(a) + gap_ms * 8 + speech_bounds(b)[1]
    # A pause then a resume may happen in the gap; every resume follows a pause, and the last pause
    # before the end names the same span.
    paused_open = False
    for e in events:
        if isinstance(e, SpeechPaused):
            assert not paused_open
            paused_open = True
        elif isinstance(e, SpeechResumed):
            assert paused_open
            paused_open = False
    last_pause = [e for e in events if isinstance(e, SpeechPaused)][-1]
    assert events[-2] == last_pause
    assert (last_pause.start, last_pause.end) == (end.start, end.end)


def test_resumed_after_pause(speech: dict[str, NDArray[np.int16]]) -> None:
    # With a short speculation window the 300 ms gap between two clips is a pause, then a resume.
    s = EndpointerSettings(speculate_ms=100)
    a = speech["hello-world"]
    samples = np.concatenate((silence(500), a, silence(300), speech["vm-sorry"], silence(1500)))
    events = run(samples, s)
    names = kinds(events)
    assert names[0] is SpeechStarted
    assert SpeechResumed in names
    i = names.index(SpeechResumed)
    assert names[i - 1] is SpeechPaused
    resumed = events[i]
    assert isinstance(resumed, SpeechResumed)
    assert resumed.at > 4000 + len(a)
    assert names[-1] is SpeechEnded
    assert names.count(SpeechEnded) == 1


@pytest.mark.parametrize("max_ms", [1000, 1500])
def test_max_utterance_forces_an_end(speech: dict[str, NDArray[np.int16]], max_ms: int) -> None:
    s = EndpointerSettings(max_utterance_ms=max_ms)
    clip = speech["privacy-prompt"]  # about 3.5 s of speech
    ep = Endpointer(s)
    events = ep.feed(np.concatenate((silence(500), clip)))
    started = events[0]
    assert isinstance(started, SpeechStarted)
    forced = next(e for e in events if isinstance(e, SpeechEnded))
    assert forced.speech_end - started.start == max_ms * 8
    assert forced.start == started.start - PRE_ROLL
    # A forced end happens mid-speech; the speech that follows starts a new utterance.
    rest = events[events.index(forced) + 1 :]
    assert any(isinstance(e, SpeechStarted) for e in rest)
    for e in events:
        if isinstance(e, SpeechEnded):
            assert e.speech_end - e.start <= max_ms * 8 + PRE_ROLL


def test_no_forced_end_under_default_max(speech: dict[str, NDArray[np.int16]]) -> None:
    events = run(np.concatenate((silence(500), speech["privacy-prompt"], silence(1500))))
    assert kinds(without_resumed_pauses(events)) == [SpeechStarted, SpeechPaused, SpeechEnded]


def test_state_and_position_track_the_stream(speech: dict[str, NDArray[np.int16]]) -> None:
    ep = Endpointer()
    clip = speech["agent-pass"]
    assert ep.feed(silence(500)) == []
    e_start, _ = speech_bounds(clip)
    events = ep.feed(clip[: e_start + 2400])
    assert kinds(events) == [SpeechStarted]
    assert ep.in_speech
    ep.feed(clip[e_start + 2400 :])
    ep.feed(silence(1500))
    assert ep.state is State.QUIET
    assert not ep.in_speech
    total = 4000 + len(clip) + 12000
    assert ep.position == total - total % FRAME_SAMPLES


def test_partial_frames_are_held_until_complete() -> None:
    ep = Endpointer()
    ep.feed(silence(20)[:79])
    assert ep.position == 0
    ep.feed(silence(20)[:81])
    assert ep.position == FRAME_SAMPLES
    ep.feed(silence(20)[:159])
    assert ep.position == FRAME_SAMPLES
    ep.feed(silence(20)[:1])
    assert ep.position == 2 * FRAME_SAMPLES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"aggressiveness": -1}, "aggressiveness"),
        ({"hangover_ms": -1}, "hangover_ms"),
        ({"pre_roll_ms": -20}, "pre_roll_ms"),
        ({"speculate_ms": -1}, "speculate_ms"),
        ({"max_utterance_ms": -1}, "max_utterance_ms"),
        ({"speech_start_ms": 10}, "speech_start_ms"),
        ({"speech_start_ms": -5}, "speech_start_ms"),
        ({"end_of_speech_silence_ms": 19}, "end_of_speech_silence_ms"),
    ],
)
def test_settings_validation(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EndpointerSettings(**kwargs)


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_valid_settings_accepted(aggressiveness: int) -> None:
    s = EndpointerSettings(aggressiveness=aggressiveness, speech_start_ms=20, end_of_speech_silence_ms=20,
                           hangover_ms=0, pre_roll_ms=0, speculate_ms=0)
    assert Endpointer(s).feed(silence(100)) == []


@pytest.fixture(scope="module")
def two_utterances(speech: dict[str, NDArray[np.int16]]) -> tuple[NDArray[np.int16], list[EndpointerEvent]]:
    samples = np.concatenate((silence(300), speech["hello-world"], silence(250), speech["vm-sorry"],
                              silence(900), speech["please-try-call-later"], silence(800)))
    return samples, run(samples)


def test_streaming_fixture_is_interesting(
    two_utterances: tuple[NDArray[np.int16], list[EndpointerEvent]],
) -> None:
    _, events = two_utterances
    assert sum(isinstance(e, SpeechEnded) for e in events) == 2


@settings(derandomize=True, max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 90_000), max_size=30))
def test_streaming_equals_batch(
    two_utterances: tuple[NDArray[np.int16], list[EndpointerEvent]], cuts: list[int]
) -> None:
    samples, batch = two_utterances
    bounds = [0, *sorted(c for c in cuts if c <= len(samples)), len(samples)]
    ep = Endpointer()
    streamed: list[EndpointerEvent] = []
    for a, b in itertools.pairwise(bounds):
        streamed.extend(ep.feed(samples[a:b]))
    assert streamed == batch
    assert ep.position == len(samples) - len(samples) % FRAME_SAMPLES


def test_streaming_frame_by_frame_and_odd_sizes(
    two_utterances: tuple[NDArray[np.int16], list[EndpointerEvent]],
) -> None:
    samples, batch = two_utterances
    for step in (1, 159, 161, 160 * 7 + 3):
        ep = Endpointer()
        streamed: list[EndpointerEvent] = []
        for i in range(0, len(samples), step):
            streamed.extend(ep.feed(samples[i : i + step]))
        assert streamed == batch, step
