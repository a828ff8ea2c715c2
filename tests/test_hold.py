"""Holds: the pacer stops the agent without losing its words, the judge tells words from acknowledgements,
noise and echo, and whole calls resume after a false barge-in or an acknowledgement."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio

from relay_bridge.audio.telephony import FRAME_BYTES
from relay_bridge.call import engines as engines_module
from relay_bridge.call.engines import Claim, SpeechEngines
from relay_bridge.conversation import events as ev
from relay_bridge.conversation.judge import Judge, Verdict, backchannels_for, words
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.engines.schedule import Priority
from relay_bridge.protocols.marks import resent_name
from relay_bridge.sim.agent import AgentSession
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.noise import noise_burst
from tests.harness import CallResult, run_memory_call, settings
from tests.test_call import LONG_REPLY, agent
from tests.test_call_robustness import quiet_playback

# --- the judge -------------------------------------------------------------------------------------

EN = Judge(backchannels_for("en-US"))


@pytest.mark.parametrize(("text", "partial", "verdict"), [
    ("", False, Verdict.NOTHING), (" ... ", False, Verdict.NOTHING),
    ("Okay.", False, Verdict.BACKCHANNEL), ("Uh-huh.", False, Verdict.BACKCHANNEL),
    ("Yeah, yeah, right.", False, Verdict.BACKCHANNEL), ("Thank you so much.", False, Verdict.BACKCHANNEL),
    ("Thank", True, Verdict.UNDECIDED), ("Thank", False, Verdict.WORDS), ("Okay, thank", True, Verdict.UNDECIDED),
    ("Okay, but", True, Verdict.WORDS), ("No.", False, Verdict.WORDS), ("Wait.", True, Verdict.WORDS),
    ("okay okay okay okay okay okay okay", False, Verdict.WORDS),  # more than six words is a turn
])
def test_the_judge_knows_acknowledgements(text: str, partial: bool, verdict: Verdict) -> None:
    assert EN.verdict(text, partial=partial) is verdict


def test_without_a_list_every_word_counts() -> None:
    assert Judge().verdict("Okay.") is Verdict.WORDS and Judge().verdict("") is Verdict.NOTHING


def test_echo_is_judged_from_the_agents_words() -> None:
    agent_words = set(words("Your flight to Boston leaves at nine tomorrow morning."))
    assert EN.verdict("to Boston leaves at nine", agent_words=agent_words) is Verdict.ECHO
    assert EN.verdict("Flight to Boston? No, Denver!", agent_words=agent_words) is Verdict.WORDS
    assert EN.verdict("to Boston leaves at nine", agent_words=None) is Verdict.WORDS


def test_lists_are_per_language_and_configurable() -> None:
    assert "vale" in backchannels_for("es-MX") and "okay" in backchannels_for("en-GB")
    assert backchannels_for("ja-JP") == ()
    assert backchannels_for("es-ES", {"es": ("venga",)}) == ("venga",)
    assert backchannels_for("en-US", {"en-US": ("roger",), "en": ("ok",)}) == ("roger",)
    assert words("Uh-huh. D\u2019accord, très BIEN!") == ["uh-huh", "d'accord", "très", "bien"]


# --- the pacer -------------------------------------------------------------------------------------


def numbered_frames(n: int) -> bytes:
    """``n`` frames, frame i filled with byte i (never 0x7f/0xff silence), to tell frames apart on the wire."""
    return b"".join(bytes([i + 1]) * FRAME_BYTES for i in range(n))


async def test_a_hold_takes_back_what_was_not_heard_and_release_goes_on_from_there(autojump_clock: object) -> None:
    sent: list[tuple[float, dict[str, object]]] = []
    playback, inbox = quiet_playback([])

    async def send(frame: str) -> None:
        sent.append((trio.current_time(), json.loads(frame)))

    playback._send = send  # the wire, with send times
    async with trio.open_nursery() as nursery:
        nursery.start_soon(playback.run)
        playback.enqueue_audio(1, numbered_frames(40))
        playback.enqueue_mark("c1-1")
        playback.enqueue_audio(1, numbered_frames(80)[40 * FRAME_BYTES :])
        playback.enqueue_mark("c1-2")
        await trio.sleep(0.7)  # 300 ms lead: frames 0..49 sent, 0..34 started playing
        held_at = trio.current_time()
        playback.hold()
        await trio.sleep(2.0)
        assert playback.held
        playback.release()
        await trio.sleep(3.0)
        nursery.cancel_scope.cancel()
    events = []
    while True:
        with trio.move_on_after(0) as empty:
            events.append(await inbox.get())
        if empty.cancelled_caught:
            break
    clear_at = next(t for t, m in sent if m["event"] == "clear")
    assert held_at <= clear_at < held_at + 0.001
    before = [m for t, m in sent if t <= clear_at]
    after = [m for t, m in sent if t > clear_at]
    assert not [t for t, m in sent if held_at < t < held_at + 2.0 and m["event"] != "clear"]  # nothing while held

    def frame_no(m: dict[str, object]) -> int:
        payload = m["media"]["payload"]  # type: ignore[index]
        return base64.b64decode(payload)[0] - 1

    sent_before = [frame_no(m) for m in before if m["event"] == "media"]
    resent = [frame_no(m) if m["event"] == "media" else m["mark"]["name"] for m in after]  # type: ignore[index]
    # The caller had started hearing every frame up to the hold; the rest follows in order after release,
    # with the mark the hold took back renamed, so every frame is heard exactly once.
    frames_after = [x for x in resent if isinstance(x, int)]
    assert frames_after[0] in sent_before and frames_after == list(range(frames_after[0], 80))
    assert sent_before[: frames_after[0]] == list(range(frames_after[0]))
    assert abs(frames_after[0] * 0.02 - (held_at - sent[0][0] - 0.02)) <= 0.021  # the frame playing at the hold
    assert [x for x in resent if isinstance(x, str)] == [resent_name("c1-1"), "c1-2"]
    assert ev.Rewound(("c1-1",)) in events


# --- whole calls ------------------------------------------------------------------------------------


async def reply_with_speech_over_it(clip: Clip, heard_text: str, *, provider: str = "twilio",
                                    **session: object) -> tuple[AgentSession, CallResult]:
    """The app answers a key with a long reply; 1.5 s into it the caller makes ``clip``'s sound, which
    recognises as ``heard_text``."""
    app = agent(greeting="", on_key=lambda digit: LONG_REPLY)
    over: list[float] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.press("1")
        await caller.wait_agent_audio()
        await caller.pause(1.5)
        over.append(trio.current_time())
        await caller.say(clip)
        await caller.wait_agent_done(quiet_s=2.0)
        await caller.hang_up()

    engines = SpeechEngines(FakeTranscriber(script=(heard_text,)), FakeSynthesizer())
    result = await run_memory_call(engines, settings(**{f"session__{k}": v for k, v in session.items()}),
                                   app.handle, script, provider=provider)
    return app.sessions[0], result


def heard_to_the_end(session: AgentSession) -> bool:
    played = [i.value for i in session.infos if i.name == "tokensPlayed"]
    return bool(played) and LONG_REPLY.endswith(played[-1])


@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
async def test_a_noise_burst_over_the_agent_costs_no_words(autojump_clock: object, provider: str) -> None:
    session, result = await reply_with_speech_over_it(noise_burst("cough"), "", provider=provider,
                                                      events="tokens-played")
    assert session.interrupts == [] and session.prompts == []
    assert heard_to_the_end(session)
    stats = result.stats
    assert stats.count("hold") == 1 and stats.count("dismissed") == 1 and stats.count("interrupt") == 0
    # The agent stopped at once and went on about a second later.
    hold_at = next(t for t, name, _ in stats.events if name == "hold")
    resumed_at = next(t for t, name, _ in stats.events if name == "dismissed")
    assert 0.3 <= resumed_at - hold_at <= 1.5
    ear = result.caller.ear
    assert ear.clears and ear.clears[0] - hold_at < 0.1


@pytest.mark.parametrize(("ignore", "cut"), [(True, False), (False, True)])
async def test_an_acknowledgement_cuts_only_without_ignore_backchannel(autojump_clock: object, clips: dict[str, Clip],
                                                                       ignore: bool, cut: bool) -> None:
    session, _ = await reply_with_speech_over_it(clips["auth-thankyou"], "Thank you.", events="tokens-played",
                                                 ignore_backchannel=ignore)
    assert bool(session.interrupts) is cut
    assert [p.voice_prompt for p in session.prompts] == (["Thank you."] if cut else [])
    assert heard_to_the_end(session) is not cut


async def test_real_words_over_the_agent_still_cut_it(autojump_clock: object, clips: dict[str, Clip]) -> None:
    session, _ = await reply_with_speech_over_it(clips["agent-pass"], "please enter your password",
                                                 ignore_backchannel=True)
    assert len(session.interrupts) == 1 and not heard_to_the_end(session)
    assert [p.voice_prompt for p in session.prompts] == ["please enter your password"]


async def test_the_agents_own_echo_neither_cuts_nor_prompts_with_echo_filtering(autojump_clock: object) -> None:
    echo = "Second sentence keeps going."  # what the agent is saying when the echo comes back
    session, result = await reply_with_speech_over_it(noise_burst("crackle", 1), echo, events="tokens-played",
                                                      echo_prompt_filtering=True)
    assert session.interrupts == [] and session.prompts == [] and heard_to_the_end(session)
    stats = result.stats
    assert stats.count("hold") == 0 and stats.count("dismissed") >= 1  # the agent never stopped
    assert result.caller.ear.clears == []
    # Without echo filtering the same sound is a barge-in.
    session, _ = await reply_with_speech_over_it(noise_burst("crackle", 1), echo, events="tokens-played")
    assert len(session.interrupts) == 1


async def test_bursts_over_the_agent_never_queue_a_final_recognition_per_burst(
        autojump_clock: object, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Clip]) -> None:
    """Each held utterance ends at its first pause, but only while no earlier one awaits recognition:
    noise in 100 ms bursts over a long reply queues at most one final at a time, however long it goes on."""
    waiting: list[int] = []
    engines = SpeechEngines(FakeTranscriber(), FakeSynthesizer())

    async def slow_worker(fn: Callable[[], Any], limiter: Claim) -> Any:
        waiting.append(engines.asr_scheduler.waiting(Priority.FINAL))
        async with limiter:
            await trio.sleep(0.5)  # a decode of half a second, in simulated time
            return fn()

    monkeypatch.setattr(engines_module, "run_in_worker", slow_worker)
    app = agent(greeting="", on_key=lambda digit: LONG_REPLY * 3)
    burst = noise_burst("cough", 2)
    pattern = np.concatenate([np.concatenate((burst.samples[:800], np.zeros(1600, np.int16))) for _ in range(60)])

    async def script(caller: SimulatedCaller) -> None:
        await caller.press("1")
        await caller.wait_agent_audio()
        await caller.say(Clip("bursts", "", pattern, 0, len(pattern)))
        await caller.pause(3)
        await caller.hang_up()

    await run_memory_call(engines, settings(), app.handle, script)
    assert waiting and max(waiting) <= 1
