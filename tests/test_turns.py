"""Turn-taking in whole calls: the end-of-turn model ends a finished turn early and keeps a paused one open."""

from __future__ import annotations

import pytest

from relay_bridge.call.engines import SpeechEngines
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber, FakeTurnModel
from relay_bridge.sim.caller import SimulatedCaller, Spoken
from relay_bridge.sim.clips import Clip
from tests.harness import run_memory_call, settings
from tests.test_call import agent

SILENCE_S = 0.6  # vad.end_of_speech_silence_ms
CAP_S = 1.5  # vad.max_turn_silence_ms


def engines(probability: float | None, *texts: str) -> tuple[SpeechEngines, FakeTurnModel | None]:
    model = None if probability is None else FakeTurnModel(probability)
    return SpeechEngines(FakeTranscriber(script=texts), FakeSynthesizer(), turn_model=model), model


async def one_utterance(clip: Clip, probability: float | None, **changes: object) -> tuple[float, int]:
    """Seconds from the end of speech to the prompt, and the model's decisions."""
    app = agent(greeting="Hi.")
    spoken: list[Spoken] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        spoken.append(await caller.say(clip))
        await caller.wait_agent_done()
        await caller.hang_up()

    e, model = engines(probability, "please enter your password")
    params = changes.pop("params", None)
    await run_memory_call(e, settings(**changes), app.handle, script, custom_parameters=params)
    [prompt_at] = app.sessions[0].prompt_times
    return prompt_at - spoken[0].end, model.decisions if model else 0


async def test_a_finished_turn_ends_as_soon_as_the_model_says_so(autojump_clock: object,
                                                                 clips: dict[str, Clip]) -> None:
    waited, decisions = await one_utterance(clips["agent-pass"], 0.9)
    assert waited < SILENCE_S - 0.2 and decisions == 1


async def test_an_unfinished_turn_waits_for_the_longer_silence(autojump_clock: object,
                                                              clips: dict[str, Clip]) -> None:
    waited, decisions = await one_utterance(clips["agent-pass"], 0.1)
    assert CAP_S - 0.1 <= waited < CAP_S + 0.3
    assert decisions >= 3  # asked at the pause and again as the silence went on


@pytest.mark.parametrize(("threshold", "early"), [("0.5", True), ("0.9", False)])
async def test_eot_threshold_sets_the_models_bar_per_call(autojump_clock: object, clips: dict[str, Clip],
                                                          threshold: str, early: bool) -> None:
    waited, _ = await one_utterance(clips["agent-pass"], 0.7, params={"eotThreshold": threshold})
    assert (waited < SILENCE_S) is early


async def test_speech_timeout_caps_the_wait_with_the_model(autojump_clock: object, clips: dict[str, Clip]) -> None:
    waited, _ = await one_utterance(clips["agent-pass"], 0.1, params={"speechTimeout": "800"})
    assert 0.7 <= waited < 1.1


@pytest.mark.parametrize("detection", ["silence", "smart"])
async def test_without_the_model_turns_end_on_silence(autojump_clock: object, clips: dict[str, Clip],
                                                      detection: str) -> None:
    probability = 0.9 if detection == "silence" else None  # "silence" ignores a model; "smart" needs one
    waited, decisions = await one_utterance(clips["agent-pass"], probability, vad__turn_detection=detection)
    assert SILENCE_S - 0.1 <= waited < SILENCE_S + 0.3 and decisions == 0


@pytest.mark.parametrize(("probability", "prompts"), [(0.1, 1), (None, 2)])
async def test_a_mid_sentence_pause_splits_the_turn_only_on_silence(autojump_clock: object, clips: dict[str, Clip],
                                                                    probability: float | None, prompts: int) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.say(clips["pls-hold-while-try"])
        await caller.pause(0.8)  # "Please hold while we try to connect you." ... "Please try your call again later."
        await caller.say(clips["please-try-call-later"])
        await caller.wait_agent_done()
        await caller.hang_up()

    e, _ = engines(probability, "first part", "second part")
    await run_memory_call(e, settings(), app.handle, script)
    assert len(app.sessions[0].prompts) == prompts
