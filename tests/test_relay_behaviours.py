"""Every ConversationRelay behaviour of protocols.md 1.2, 1.3, 1.4 and 4.6, against whole calls.

``BEHAVIOURS`` is the table: one row per behaviour the spec states, with the test that proves it
(here, or in another module when that test already did) or why the row does not apply to the
bridge. ``test_every_row_names_a_test_that_exists`` keeps the table honest.

The calls are the real server with fake engines, the simulated caller and a scripted app, under
the autojumping mock clock; the two calls that need real sockets (an HTTP ``play`` source and the
session-ended callback) run on the real clock.
"""

from __future__ import annotations

import importlib
import io
import json
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import trio
from numpy.typing import NDArray
from trio_websocket import WebSocketConnection

from relay_bridge.call.engines import LanguageEngines, SpeechEngines
from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.protocols import relay
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from tests.harness import AppLog, CallResult, fake_engines, heard_through, run_memory_call, scripted_app, settings
from tests.httpserver import Received, open_http_server, response
from tests.test_call import EVENTS, LONG_REPLY, spoken_chunks


@dataclass(frozen=True)
class Row:
    section: str
    behaviour: str
    covered_by: str  # "test_x" (this module), "tests/test_y.py::test_x", or "n/a: why"


BEHAVIOURS = [
    # -- 1.2 messages to the app -------------------------------------------------------------------
    Row("1.2 setup", "sent once, first, with the call's fields and customParameters",
        "tests/test_call.py::test_setup_carries_call_and_custom_parameters"),
    Row("1.2 setup", "Twilio's field set and order; sessionId VX..., callStatus RINGING",
        "tests/test_telnyx_call.py::test_twilio_calls_are_unchanged_beside_telnyx"),
    Row("1.2 setup", "setup is the first frame the app gets",
        "tests/test_call.py::test_welcome_greeting_from_a_custom_parameter_is_spoken_first"),
    Row("1.2 prompt", "speech becomes one prompt{voicePrompt, lang, last:true}",
        "tests/test_call.py::test_speech_becomes_a_final_prompt_and_the_reply_is_heard"),
    Row("1.2 prompt", "partials off by default; on: last:false frames with the whole utterance so far, "
        "then last:true; a partial never follows its final", "test_partial_prompts"),
    Row("1.2 prompt", "lang is the recognition language (after a transcriptionLanguage switch too)",
        "test_language_message_switches_voice_and_recognition"),
    Row("1.2 prompt", "no confidence field", "test_partial_prompts"),
    Row("1.2 dtmf", "one frame per keypress", "tests/test_call.py::test_dtmf_reaches_the_app"),
    Row("1.2 dtmf", "needs dtmfDetection", "tests/test_call.py::test_dtmf_not_forwarded_without_detection"),
    Row("1.2 dtmf", "keys in quick succession arrive in order, none lost", "test_keys_in_quick_succession"),
    Row("1.2 dtmf", "delivered during the welcome greeting", "test_keys_during_the_welcome_greeting"),
    Row("1.2 dtmf", "under interruptible any a key is a barge-in (interrupt, TTS stops)",
        "tests/test_call.py::test_dtmf_barge_in"),
    Row("1.2 dtmf", "DTMF never appears in transcripts",
        "n/a: keys arrive as Media Streams dtmf events, never as in-band audio the recogniser could hear"),
    Row("1.2 interrupt", "utteranceUntilInterrupt/durationUntilInterruptMs are what the caller heard",
        "tests/test_call.py::test_barge_in_clears_playback_and_reports_what_was_heard"),
    Row("1.2 interrupt", "utteranceUntilInterrupt can be empty", "test_an_interrupt_before_any_chunk_was_heard"),
    Row("1.2 interrupt", "a barge-in purges everything queued, last:true included; later tokens are a new cycle",
        "test_a_barge_in_purges_the_queue_and_later_tokens_start_a_new_cycle"),
    # Observed on Twilio: clientSpeaking on, tokensPlayed <fragment>, interrupt, prompt{last:false}, agentSpeaking
    # off. The bridge sends agentSpeaking off right after the interrupt, so a partial prompt comes after it.
    Row("1.2 interrupt", "frame order: clientSpeaking on, tokensPlayed <fragment>, interrupt, agentSpeaking off, "
        "clientSpeaking off, prompt",
        "tests/test_call.py::test_speaker_events_bracket_a_barge_in_in_twilio_order"),
    Row("1.2 error", "every invalid app frame is answered with an error frame (64107) and dropped",
        "tests/test_call.py::test_invalid_app_frames_get_error_frames_and_the_call_goes_on"),
    Row("1.2 info", "nothing unless subscribed", "tests/test_call.py::test_no_info_messages_unless_subscribed"),
    Row("1.2 info", "subscribed by events or by the older debug; envelope is type, name, value only",
        "test_info_subscriptions_and_envelope"),
    Row("1.2 info", "agentSpeaking brackets each talk cycle; tokensPlayed per chunk",
        "tests/test_call.py::test_welcome_greeting_from_a_custom_parameter_is_spoken_first"),
    Row("1.2 info", "clientSpeaking on/off from caller voice activity",
        "tests/test_call.py::test_speaker_events_bracket_a_barge_in_in_twilio_order"),
    Row("1.2 info", "sendDigits playback is reported as tokensPlayed with the digits",
        "test_send_digits_is_reported_as_tokens_played"),
    Row("1.2 info", "roundTripDelayMs (debugging)", "n/a: observed once, no source for what it measures"),
    Row("1.2 configUpdated", "confirms a dynamic config change", "n/a: payload unconfirmed; no config message"),
    # -- 1.3 messages from the app ------------------------------------------------------------------
    Row("1.3 validation", "10 consecutive invalid frames close with 1007",
        "tests/test_call.py::test_ten_consecutive_invalid_app_frames_close_with_1007"),
    Row("1.3 text", "token:null is invalid; the valid text after it is spoken",
        "tests/test_call.py::test_invalid_app_frames_get_error_frames_and_the_call_goes_on"),
    Row("1.3 text", "an empty token with last:true closes the cycle",
        "tests/test_call.py::test_speech_becomes_a_final_prompt_and_the_reply_is_heard"),
    Row("1.3 text", "tokens are not trimmed: inter-token spaces are kept", "test_tokens_are_not_trimmed"),
    Row("1.3 text", "speech starts before last:true; last flushes the tail", "test_speech_starts_before_last"),
    Row("1.3 text", "lang: the voice of that token only; undeclared: error frame, session voice",
        "test_text_lang_applies_to_its_token_only"),
    Row("1.3 text", "interruptible:false per message is not cut (input reported as configured)",
        "tests/test_call.py::test_a_text_marked_not_interruptible_is_not_cut"),
    Row("1.3 text", "interruptible:true per message is cut under a session interruptible none",
        "test_interruptible_true_overrides_the_session"),
    Row("1.3 text", "preemptible per message", "test_preemption"),
    Row("1.3 text", "SSML passthrough", "n/a: provider-specific tag sets; the local voices take plain text"),
    Row("1.3 play", "played as its own talk cycle behind earlier text, loop times", "test_play_queues_and_loops"),
    Row("1.3 play", "loop 0 plays 1000 times (on until cut)", "test_play_loop_zero_keeps_playing"),
    Row("1.3 play", "source must be an http(s) URL, loop 0..1000: else error 64107",
        "test_invalid_play_messages_get_error_frames"),
    Row("1.3 play", "a source that cannot be played: error frame, the call goes on", "test_a_play_that_fails"),
    Row("1.3 play", "interruptible per play", "test_play_interruptible"),
    Row("1.3 play", "preemptible per play", "test_preemption"),
    Row("1.3 play", "fetched over HTTP and decoded", "test_play_from_http_and_completed_callback"),
    Row("1.3 sendDigits", "same queue as text: digits wait behind speech",
        "tests/test_call.py::test_send_digits_plays_dtmf_the_caller_can_decode"),
    Row("1.3 sendDigits", "text still open is flushed before the tones",
        "tests/test_call.py::test_send_digits_flushes_text_still_open_before_the_tones"),
    Row("1.3 sendDigits", "sent while the caller talks, they go out at once",
        "test_send_digits_while_the_caller_talks"),
    Row("1.3 sendDigits", "digits not 0-9 w # *: error 64107",
        "tests/test_call.py::test_invalid_send_digits_gets_an_error_frame"),
    Row("1.3 sendDigits", "a speech barge-in cuts the tones", "tests/test_call.py::test_a_barge_in_cuts_send_digits"),
    Row("1.3 sendDigits", "a key barge-in cuts the tones and drops the text queued behind them",
        "test_a_key_cuts_send_digits_and_what_was_queued_behind"),
    Row("1.3 language", "ttsLanguage/transcriptionLanguage switch among declared languages; undeclared: error",
        "test_language_message_switches_voice_and_recognition"),
    Row("1.3 language", "a switch in the middle of a reply: text sent before it keeps the old voice",
        "test_a_language_switch_in_the_middle_of_a_reply"),
    Row("1.3 end", "closes the app socket with 1000 and the provider stream; handoffData kept",
        "test_end_posts_the_session_ended_callback"),
    Row("1.3 end", "session-ended callback: SessionStatus, HandoffData, SessionId, CallSid",
        "test_end_posts_the_session_ended_callback"),
    Row("1.3 end", "after a hangup the callback says completed", "test_play_from_http_and_completed_callback"),
    Row("1.3 Oct 2026", "config and hints messages", "n/a: field shapes unconfirmed; unknown types get 64107"),
    # -- 1.4 interruptible vs preemptible -----------------------------------------------------------
    Row("1.4 interruptible", "none/dtmf/speech/any and true/false decide which input cuts",
        "test_interruptible_matrix"),
    Row("1.4 interruptible", "dtmf: speech does not cut",
        "tests/test_call.py::test_no_barge_in_when_not_interruptible"),
    Row("1.4 interruptible", "welcomeGreetingInterruptible for the greeting",
        "tests/test_call.py::test_a_greeting_that_is_not_interruptible_is_not_cut_by_speech"),
    Row("1.4 interruptible", "the flag of the message being heard decides",
        "test_interruptibility_follows_the_message_heard"),
    Row("1.4 preemptible", "a new text/play cuts preemptible output: clear, tokensPlayed fragment, no interrupt",
        "test_preemption"),
    Row("1.4 preemptible", "a preemptible new message queues behind non-preemptible speech", "test_preemption"),
    Row("1.4 preemptible", "nothing left to cut: no clear", "test_preemption_after_the_output_finished"),
    Row("1.4 sensitivity", "interruptSensitivity high/medium/low", "test_interrupt_sensitivity"),
    Row("1.4 report", "reportInputDuringAgentSpeech for speech (default none)",
        "tests/test_call.py::test_a_text_marked_not_interruptible_is_not_cut"),
    Row("1.4 report", "reportInputDuringAgentSpeech for keys", "test_report_keys_during_agent_speech"),
    Row("1.4 ignoreBackchannel", "short acknowledgements neither cut nor prompt", "n/a: not implemented"),
    # -- 4.6 mapping onto Media Streams -------------------------------------------------------------
    Row("4.6 setup", "from connected + start; sessionId invented",
        "tests/test_call.py::test_setup_carries_call_and_custom_parameters"),
    Row("4.6 interrupt", "clear + marks; echoes of cleared marks are not played",
        "tests/test_call.py::test_marks_echoed_by_a_clear_are_not_counted_as_played"),
    Row("4.6 interrupt", "cleared marks that come back report nothing to the app", "test_cleared_marks_report_nothing"),
    Row("4.6 tokensPlayed", "from mark echoes",
        "tests/test_call.py::test_speaker_events_bracket_a_barge_in_in_twilio_order"),
    Row("4.6 preemptible", "clear, then the new audio; only when the current item is preemptible", "test_preemption"),
    Row("4.6 sendDigits", "in-band tones the far end decodes",
        "tests/test_call.py::test_send_digits_plays_dtmf_the_caller_can_decode"),
    Row("4.6 play", "decoded to 8 kHz and streamed; loop 0 is 1000", "test_play_loop_zero_keeps_playing"),
    Row("4.6 end", "close the socket; HandoffData reported by the bridge itself",
        "tests/test_call.py::test_app_end_closes_the_stream_and_keeps_handoff_data"),
    Row("4.6 errors", "10-bad-frames rule with 1007",
        "tests/test_call.py::test_ten_consecutive_invalid_app_frames_close_with_1007"),
]


def test_every_row_names_a_test_that_exists() -> None:
    for row in BEHAVIOURS:
        if row.covered_by.startswith("n/a: "):
            continue
        path, _, name = row.covered_by.rpartition("::")
        module = importlib.import_module(path.removesuffix(".py").replace("/", ".")) if path else None
        found = getattr(module, name, None) if module else globals().get(name)
        assert callable(found) and name.startswith("test_"), f"{row.section}: no test {row.covered_by}"


# -- helpers ---------------------------------------------------------------------------------------

Script = Callable[[SimulatedCaller], Awaitable[None]]
TONE_URL = "https://media.example.com/tone.wav"
SPANISH = "es-ES"


def played(result: CallResult, cycle: int | None = None) -> list[str]:
    return [d["text"] for _, n, d in result.stats.events if n == "played" and cycle in (None, d["cycle"])]


def tone(seconds: float, hz: float = 1000.0) -> NDArray[np.int16]:
    t = np.arange(int(seconds * 8000)) / 8000
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def play(source: str, **fields: Any) -> str:
    return json.dumps({"type": "play", "source": source, **fields})


def language(**fields: str) -> str:
    return json.dumps({"type": "language", **fields})


def sends(*frames: str) -> Callable[[WebSocketConnection, AppLog], Awaitable[None]]:
    """An app script that sends ``frames`` after setup."""

    async def script(ws: WebSocketConnection, log: AppLog) -> None:
        for frame in frames:
            await ws.send_message(frame)

    return script


async def call(app_script: Callable[[WebSocketConnection, AppLog], Awaitable[None]], caller_script: Script, *,
               engines: SpeechEngines | None = None, params: dict[str, str] | None = None,
               media: dict[str, NDArray[np.int16]] | None = None, **config: object) -> tuple[CallResult, AppLog]:
    log = AppLog()
    result = await run_memory_call(engines or fake_engines(("words",)), settings(**config),
                                   scripted_app(app_script, log), caller_script, custom_parameters=params,
                                   media=media)
    return result, log


def listen(seconds: float) -> Script:
    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(seconds)
        await caller.hang_up()

    return script


def listen_to_the_end() -> Script:
    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    return script


def speak_after(clip: Clip, delay_s: float, then_s: float = 2.0) -> Script:
    """A caller who speaks ``delay_s`` into the agent's audio, then listens for ``then_s``."""

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(delay_s)
        await caller.say(clip)
        await caller.pause(then_s)
        await caller.hang_up()

    return script


def press_after(digit: str, delay_s: float, then_s: float = 2.0) -> Script:
    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(delay_s)
        await caller.press(digit)
        await caller.pause(then_s)
        await caller.hang_up()

    return script


def two_languages() -> tuple[SpeechEngines, FakeSynthesizer, FakeSynthesizer]:
    english, spanish = FakeSynthesizer(), FakeSynthesizer(frequency_hz=880)
    engines = SpeechEngines(FakeTranscriber(), english,
                            more_languages=(LanguageEngines(SPANISH, FakeTranscriber(), spanish),))
    return engines, english, spanish


def said(synth: FakeSynthesizer) -> str:
    return " ".join(t.strip() for t in synth.texts)


# -- 1.2 messages to the app -------------------------------------------------------------------------


@pytest.mark.parametrize("partials", [None, "false", "true"])
async def test_partial_prompts(autojump_clock: object, clips: dict[str, Clip], partials: str | None) -> None:
    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(0.5)
        await caller.say(clips["vm-sorry"])
        await caller.pause(2)
        await caller.hang_up()

    params = {} if partials is None else {"partialPrompts": partials}
    # Unscripted, the fake recogniser says how much speech it was given: the utterance so far.
    _, log = await call(sends(), script, engines=fake_engines(), params=params)
    prompts = log.of("prompt")
    assert all(set(p) == {"type", "voicePrompt", "lang", "last"} for p in prompts)  # no confidence
    assert [p["last"] for p in prompts][-1] is True
    assert sum(p["last"] for p in prompts) == 1  # one utterance, one final, and nothing after it
    partial = [p for p in prompts if not p["last"]]
    if partials != "true":
        assert partial == []
        return
    seconds = [float(p["voicePrompt"].split()[0]) for p in partial]
    assert len(partial) >= 3
    assert seconds == sorted(set(seconds))  # each partial covers more of the utterance than the one before
    assert float(prompts[-1]["voicePrompt"].split()[0]) >= seconds[-1]  # the final may repeat the last partial
    assert all(p["lang"] == "en-US" for p in prompts)


async def test_keys_in_quick_succession(autojump_clock: object) -> None:
    async def script(caller: SimulatedCaller) -> None:
        for digit in "159*#0":
            await caller.press(digit)
            await caller.pause(0.04)
        await caller.pause(1)
        await caller.hang_up()

    _, log = await call(sends(), script)
    assert [f["digit"] for f in log.of("dtmf")] == list("159*#0")


@pytest.mark.parametrize(("params", "cut"), [
    ({}, True),  # the greeting is interruptible (any) by default: the key cuts it and is reported
    ({"welcomeGreetingInterruptible": "none", "reportInputDuringAgentSpeech": "dtmf"}, False),
])
async def test_keys_during_the_welcome_greeting(autojump_clock: object, params: dict[str, str], cut: bool) -> None:
    result, log = await call(sends(), press_after("4", 0.5, then_s=6),
                             params={"welcomeGreeting": LONG_REPLY, **params})
    assert [f["digit"] for f in log.of("dtmf")] == ["4"]
    assert (len(log.of("interrupt")), len(result.caller.ear.clears)) == ((1, 1) if cut else (0, 0))
    assert (played(result) == spoken_chunks(LONG_REPLY)) is not cut


async def test_an_interrupt_before_any_chunk_was_heard(autojump_clock: object, clips: dict[str, Clip]) -> None:
    result, log = await call(sends(relay.text(LONG_REPLY, last=True)), speak_after(clips["hello-world"], 0.0))
    [interrupt] = log.of("interrupt")
    first_chunk = spoken_chunks(LONG_REPLY)[0]
    first_chunk_ms = len(first_chunk) * 40  # the fake voice: 40 ms a character
    # Only the words of the first chunk its audio had reached (possibly none): no mark of it came back.
    assert heard_through(interrupt["utteranceUntilInterrupt"], [], [first_chunk])
    assert interrupt["utteranceUntilInterrupt"] != first_chunk
    assert 0 < interrupt["durationUntilInterruptMs"] < first_chunk_ms
    assert played(result, 1) == []


async def test_a_barge_in_purges_the_queue_and_later_tokens_start_a_new_cycle(autojump_clock: object,
                                                                             clips: dict[str, Clip]) -> None:
    later = "Sorry, go on."

    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        # Everything up front, last:true included, as an LLM that streamed faster than speech would.
        await ws.send_message(relay.text(LONG_REPLY, last=True))
        await log.wait_for(lambda f: f["type"] == "interrupt")
        # An app that does not stop its own stream: what it sends after the interrupt is spoken.
        await ws.send_message(relay.text(later, last=True))

    result, log = await call(app, speak_after(clips["hello-world"], 2.0, then_s=4.0))
    heard = log.of("interrupt")[0]["utteranceUntilInterrupt"]
    assert heard_through(heard, played(result, 1), spoken_chunks(LONG_REPLY))
    assert len(played(result, 1)) < len(spoken_chunks(LONG_REPLY))
    assert played(result)[len(played(result, 1)) :] == spoken_chunks(later)


@pytest.mark.parametrize(("params", "subscribed"), [
    ({"events": "speaker-events tokens-played"}, True),
    ({"debug": "speaker-events tokens-played"}, True),  # the older way
    ({"debug": "debugging"}, False),
    ({"events": "speaker-events"}, False),
])
async def test_info_subscriptions_and_envelope(autojump_clock: object, params: dict[str, str],
                                               subscribed: bool) -> None:
    _, log = await call(sends(relay.text("Hello there.", last=True)), listen_to_the_end(), params=params)
    assert all(set(f) == {"type", "name", "value"} and isinstance(f["value"], str) for f in log.of("info"))
    speaker = ["agentSpeaking=on", "agentSpeaking=off"]
    expected = ["agentSpeaking=on", "tokensPlayed=Hello there.", "agentSpeaking=off"] if subscribed else speaker
    if params.get("debug") == "debugging":
        expected = []
    assert [s for s in log.sequence() if "=" in s] == expected


async def test_send_digits_is_reported_as_tokens_played(autojump_clock: object) -> None:
    result, log = await call(sends(relay.text("Dialling.", last=True), relay.send_digits("12w#")), listen(4),
                             params=EVENTS)
    assert [f["value"] for f in log.of("info") if f["name"] == "tokensPlayed"] == ["Dialling.", "12w#"]
    assert result.caller.heard_digits() == "12#"


# -- 1.3 messages from the app ---------------------------------------------------------------------


async def test_tokens_are_not_trimmed(autojump_clock: object) -> None:
    tokens = ["Hel", "lo", " wor", "ld", ".", " It", " is", " ", "me", "."]
    engines = fake_engines()
    result, _ = await call(sends(*(relay.text(t) for t in tokens), relay.text("", last=True)), listen_to_the_end(),
                           engines=engines)
    assert " ".join(played(result)) == "Hello world. It is me."
    assert said(engines.synthesizer) == "Hello world. It is me."  # type: ignore[arg-type]


async def test_speech_starts_before_last(autojump_clock: object) -> None:
    sent_last: list[float] = []

    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(relay.text("The first sentence is complete. The second"))
        await trio.sleep(4)
        sent_last.append(trio.current_time())
        await ws.send_message(relay.text(" one ends here.", last=True))

    heard: list[float] = []

    async def script(caller: SimulatedCaller) -> None:
        heard.append(await caller.wait_agent_audio())
        await caller.pause(6)
        await caller.hang_up()

    result, _ = await call(app, script)
    assert heard[0] < sent_last[0]
    assert played(result) == [*spoken_chunks("The first sentence is complete."), "The second one ends here."]


async def test_text_lang_applies_to_its_token_only(autojump_clock: object) -> None:
    engines, english, spanish = two_languages()
    result, log = await call(sends(relay.text("Hola.", lang="es-es"), relay.text(" Hello.", last=True),
                                   relay.text("Bonjour.", lang="fr-FR", last=True)), listen(5), engines=engines)
    assert said(spanish) == "Hola."
    assert said(english) == "Hello. Bonjour."  # an undeclared lang: the session's voice
    [error] = log.of("error")
    assert "'fr-FR'" in error["description"] and "lang" in error["description"]
    assert played(result) == ["Hola.", "Hello.", "Bonjour."]


async def test_a_language_switch_in_the_middle_of_a_reply(autojump_clock: object) -> None:
    engines, english, spanish = two_languages()
    before = ["Good", " morning,", " this", " is the"]  # " this is the" waits in the chunker for a boundary
    after = [" recepción.", " Hola,", " buenos", " días."]
    app = sends(*(relay.text(t) for t in before), language(ttsLanguage=SPANISH), *(relay.text(t) for t in after),
                relay.text("", last=True))
    result, log = await call(app, listen_to_the_end(), engines=engines)
    assert said(english) == "Good morning, this is the"
    assert said(spanish) == "recepción. Hola, buenos días."
    assert log.of("error") == []
    assert " ".join(played(result, 1)) == "Good morning, this is the recepción. Hola, buenos días."


async def test_language_message_switches_voice_and_recognition(autojump_clock: object,
                                                               clips: dict[str, Clip]) -> None:
    engines, english, spanish = two_languages()

    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(relay.text("Hello.", last=True))
        await ws.send_message(language(ttsLanguage="es", transcriptionLanguage=SPANISH))
        await ws.send_message(language(ttsLanguage="fr-FR", transcriptionLanguage="de-DE"))  # refused: unchanged
        await ws.send_message(relay.text("Hola.", last=True))

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.say(clips["vm-sorry"])  # the fake recogniser marks Spanish itself
        await caller.pause(2)
        await caller.hang_up()

    _, log = await call(app, script, engines=engines)
    assert (said(english), said(spanish)) == ("Hello.", "Hola.")
    [prompt] = log.of("prompt")
    assert prompt["lang"] == SPANISH and prompt["voicePrompt"].startswith("(es) ")
    errors = [f["description"] for f in log.of("error")]
    assert len(errors) == 2 and "ttsLanguage 'fr-FR'" in errors[0] and "transcriptionLanguage 'de-DE'" in errors[1]


@pytest.mark.parametrize(("languages", "switched", "refused"), [
    (None, True, 0),  # every declared language
    ("en-US es-ES", True, 0),  # the call's <Language> elements
    ("en-US,es", True, 0),
    ("en-US", False, 1),  # Spanish is declared but not among this call's languages
    ("en-US de-DE", False, 2),  # de-DE is not even declared: reported as a refused parameter
])
async def test_a_call_may_narrow_its_languages(autojump_clock: object, languages: str | None, switched: bool,
                                               refused: int) -> None:
    engines, english, spanish = two_languages()

    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(language(ttsLanguage=SPANISH))
        await ws.send_message(relay.text("Hola.", last=True))

    params = {} if languages is None else {"languages": languages}
    _, log = await call(app, listen(3), engines=engines, params=params)
    assert said(spanish if switched else english) == "Hola."
    assert len(log.of("error")) == refused


async def test_interruptible_true_overrides_the_session(autojump_clock: object, clips: dict[str, Clip]) -> None:
    result, log = await call(sends(relay.text(LONG_REPLY, last=True, interruptible=True)),
                             speak_after(clips["hello-world"], 1.5), params={"interruptible": "none"})
    assert len(log.of("interrupt")) == 1 and len(result.caller.ear.clears) == 1


# -- play --------------------------------------------------------------------------------------------


async def test_play_queues_and_loops(autojump_clock: object) -> None:
    app = sends(relay.text("Please hold.", last=True), play(TONE_URL, loop=3), relay.text("Thanks.", last=True))
    result, log = await call(app, listen(8), media={TONE_URL: tone(0.5)})
    assert played(result) == ["Please hold.", "Thanks."]
    cycles = [d["cycle"] for _, n, d in result.stats.events if n == "first_audio"]
    assert cycles == [1, 2, 3]  # the play is a talk cycle of its own, between the two texts
    speech_ms = len("Please hold.Thanks.") * 40
    assert abs(result.caller.ear.frames_played * 20 - (speech_ms + 3 * 500)) <= 100
    assert log.of("error") == []


async def test_play_loop_zero_keeps_playing(autojump_clock: object) -> None:
    result, _ = await call(sends(play(TONE_URL, loop=0)), listen(6), media={TONE_URL: tone(0.1)})
    ear = result.caller.ear
    assert ear.frames_played * 20 >= 5000  # 50 plays and counting: not one
    assert ear.last_agent_frame_at >= 5.9  # still playing when the caller hung up


@pytest.mark.parametrize("frame", [
    play("ftp://media.example.com/a.wav"),
    play("not a url"),
    play(TONE_URL, loop=1001),
    play(TONE_URL, loop=-1),
    '{"type":"play"}',
])
async def test_invalid_play_messages_get_error_frames(autojump_clock: object, frame: str) -> None:
    result, log = await call(sends(frame, relay.text("Still here.", last=True)), listen_to_the_end(),
                             media={TONE_URL: tone(0.1)})
    assert [f["description"] for f in log.of("error")] == [f"Invalid message received, code: 64107, {frame}"]
    assert played(result) == ["Still here."]
    assert result.caller.ear.frames_played * 20 <= len("Still here.") * 40 + 20  # no tone


async def test_a_play_that_fails(autojump_clock: object) -> None:
    # Private addresses are refused by default, so this fails at once without any network.
    source = "http://127.0.0.1/missing.wav"
    result, log = await call(sends(relay.text("One moment.", last=True), play(source),
                                   relay.text("Here it is.", last=True)), listen(5))
    [error] = log.of("error")
    assert error["description"].startswith(f"Cannot play {source}")
    assert played(result) == ["One moment.", "Here it is."]
    assert result.stats.end_reason is EndReason.PROVIDER_STOPPED


@pytest.mark.parametrize(("fields", "cut"), [({}, True), ({"interruptible": False}, False),
                                              ({"interruptible": True}, True)])
async def test_play_interruptible(autojump_clock: object, clips: dict[str, Clip], fields: dict[str, bool],
                                  cut: bool) -> None:
    result, log = await call(sends(play(TONE_URL, **fields)), speak_after(clips["hello-world"], 1.0, then_s=4),
                             media={TONE_URL: tone(5)})
    assert len(log.of("interrupt")) == len(result.caller.ear.clears) == int(cut)
    if cut:
        assert log.of("interrupt")[0]["utteranceUntilInterrupt"] == ""  # a play has no text
        assert result.caller.ear.frames_played * 20 < 3000
    else:
        assert result.caller.ear.frames_played * 20 == 5000


# -- sendDigits ----------------------------------------------------------------------------------------


async def test_a_key_cuts_send_digits_and_what_was_queued_behind(autojump_clock: object) -> None:
    app = sends(relay.send_digits("0123456789"), relay.text("You are connected now.", last=True))
    result, log = await call(app, press_after("#", 0.7), params=EVENTS)
    heard = result.caller.heard_digits()
    assert 1 <= len(heard) < 10 and "0123456789".startswith(heard)
    assert len(result.caller.ear.clears) == 1 and len(log.of("interrupt")) == 1
    assert [f["digit"] for f in log.of("dtmf")] == ["#"]
    assert played(result) == []  # neither the tones' closing mark nor the text behind them
    assert not [f for f in log.of("info") if f["name"] == "tokensPlayed"]


async def test_send_digits_while_the_caller_talks(autojump_clock: object, clips: dict[str, Clip]) -> None:
    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await log.wait_for(lambda f: f.get("name") == "clientSpeaking" and f["value"] == "on")
        await ws.send_message(relay.send_digits("42"))

    ended: list[float] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(0.3)
        ended.append((await caller.say(clips["privacy-prompt"])).end)
        await caller.pause(2)
        await caller.hang_up()

    result, log = await call(app, script, params=EVENTS)
    assert result.caller.heard_digits() == "42"
    assert result.caller.ear.clears == [] and log.of("interrupt") == []
    assert [d["text"] for t, n, d in result.stats.events if n == "played" and t < ended[0]] == ["42"]
    assert len(log.of("prompt")) == 1  # the caller's speech is still a prompt


# -- 1.4 interruptible vs preemptible ------------------------------------------------------------------


def barge(kind: str, clips: dict[str, Clip]) -> Script:
    return speak_after(clips["hello-world"], 1.0, then_s=6) if kind == "speech" else press_after("3", 1.0, then_s=6)


@pytest.mark.parametrize(("interruptible", "by", "cut"), [
    # any + speech, any + dtmf and dtmf + speech: tests/test_call.py
    ("none", "speech", False), ("none", "dtmf", False), ("speech", "speech", True), ("speech", "dtmf", False),
    ("dtmf", "dtmf", True), ("true", "speech", True), ("false", "dtmf", False), ("false", "speech", False),
])
async def test_interruptible_matrix(autojump_clock: object, clips: dict[str, Clip], interruptible: str, by: str,
                                    cut: bool) -> None:
    result, log = await call(sends(relay.text(LONG_REPLY, last=True)), barge(by, clips),
                             params={"interruptible": interruptible})
    assert len(log.of("interrupt")) == len(result.caller.ear.clears) == int(cut)
    assert (played(result) == spoken_chunks(LONG_REPLY)) is not cut
    assert log.of("error") == []


async def test_interruptibility_follows_the_message_heard(autojump_clock: object, clips: dict[str, Clip]) -> None:
    first = "This first reply cannot be cut off."  # 35 characters: 1.4 s of the fake voice
    app = sends(relay.text(first, last=True, interruptible=False), relay.text(LONG_REPLY, last=True))

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(0.2)
        await caller.say(clips["hello-world"])  # over the first reply
        await caller.pause(1.0)
        await caller.say(clips["hello-world"])  # over the second
        await caller.pause(2)
        await caller.hang_up()

    result, log = await call(app, script)
    assert played(result, 1) == spoken_chunks(first)
    [interrupt] = log.of("interrupt")
    assert interrupt["utteranceUntilInterrupt"] and LONG_REPLY.startswith(interrupt["utteranceUntilInterrupt"])
    assert len(result.caller.ear.clears) == 1
    assert [p["voicePrompt"] for p in log.of("prompt")] == ["words"]  # only the one that cut (report: none)


@pytest.mark.parametrize(("sensitivity", "voiced_ms", "cut"), [
    # The voice detector counts a little more than the clip's energy bounds: margins of 100 ms and more.
    ("high", 60, True), ("medium", 60, False), ("medium", 300, True), ("low", 300, False), ("low", 500, True),
])
async def test_interrupt_sensitivity(autojump_clock: object, clips: dict[str, Clip], sensitivity: str,
                                     voiced_ms: int, cut: bool) -> None:
    clip = clips["agent-pass"]  # speech from 60 ms to 3.1 s: cut it short to ``voiced_ms`` of speech
    short = Clip("short", "", np.concatenate([clip.samples[: clip.speech_start + voiced_ms * 8],
                                              np.zeros(8000, dtype=np.int16)]), clip.speech_start,
                 clip.speech_start + voiced_ms * 8)
    result, log = await call(sends(relay.text(LONG_REPLY, last=True)), speak_after(short, 1.0, then_s=6),
                             params={"interruptSensitivity": sensitivity})
    assert len(log.of("interrupt")) == len(result.caller.ear.clears) == int(cut)


@pytest.mark.parametrize(("report", "delivered"), [(None, False), ("none", False), ("speech", False),
                                                   ("dtmf", True), ("any", True)])
async def test_report_keys_during_agent_speech(autojump_clock: object, clips: dict[str, Clip], report: str | None,
                                               delivered: bool) -> None:
    params = {"interruptible": "speech"} | ({} if report is None else {"reportInputDuringAgentSpeech": report})
    result, log = await call(sends(relay.text(LONG_REPLY, last=True)), press_after("7", 1.0, then_s=6),
                             params=params)
    assert [f["digit"] for f in log.of("dtmf")] == (["7"] if delivered else [])
    assert result.caller.ear.clears == [] and log.of("interrupt") == []


FIRST_TEXT = "This answer may be replaced. It goes on for a while. And on and on."


@pytest.mark.parametrize(("first", "params", "second", "preempted"), [
    (relay.text(FIRST_TEXT, last=True, preemptible=True), {}, relay.text("New.", last=True), True),
    (relay.text(FIRST_TEXT, last=True), {"preemptible": "true"}, relay.text("New.", last=True), True),
    (relay.text(FIRST_TEXT, last=True, preemptible=False), {"preemptible": "true"},
     relay.text("New.", last=True), False),
    # The flag marks what may be cut, not what cuts: a preemptible newcomer queues.
    (relay.text(FIRST_TEXT, last=True), {}, relay.text("New.", last=True, preemptible=True), False),
    (play(TONE_URL, preemptible=True), {}, relay.text("New.", last=True), True),
    (relay.text(FIRST_TEXT, last=True, preemptible=True), {}, play(TONE_URL), True),
    (play(TONE_URL), {}, relay.text("New.", last=True), False),
], ids=["text-by-text", "session-preemptible", "per-message-false", "newcomer-flag-queues", "play-by-text",
        "text-by-play", "play-queues"])
async def test_preemption(autojump_clock: object, first: str, params: dict[str, str], second: str,
                          preempted: bool) -> None:
    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(first)
        await log.wait_for(lambda f: f.get("name") == "agentSpeaking" and f["value"] == "on")
        await trio.sleep(1.0)
        await ws.send_message(second)

    result, log = await call(app, listen(9), params=EVENTS | params, media={TONE_URL: tone(3)})
    assert log.of("interrupt") == []  # a preemption is never an interrupt
    assert len(result.caller.ear.clears) == int(preempted)
    tokens = [f["value"] for f in log.of("info") if f["name"] == "tokensPlayed"]
    first_is_text = json.loads(first)["type"] == "text"
    second_is_text = json.loads(second)["type"] == "text"
    first_chunks = spoken_chunks(FIRST_TEXT) if first_is_text else []
    if preempted:
        # What was heard in full, then the fragment being heard when it was cut, then only the new message.
        heard = played(result, 1)
        assert len(heard) < len(first_chunks) or not first_is_text
        new = ["New."] if second_is_text else []
        assert tokens[: len(heard)] == heard and tokens[len(tokens) - len(new) :] == new
        cut = tokens[len(heard) : len(tokens) - len(new)]  # the words of the chunk cut off that got through
        assert len(cut) <= 1 and heard_through(" ".join(tokens[: len(tokens) - len(new)]), heard, first_chunks)
        assert result.caller.ear.frames_played * 20 < 2500 + (len("New.") * 40 if second_is_text else 3000)
        on_off = [s for s in log.sequence() if s.startswith("agentSpeaking")]
        assert on_off == ["agentSpeaking=on", "agentSpeaking=off"] * 2
    else:
        assert played(result, 1) == first_chunks
        assert tokens == [*first_chunks, *(["New."] if second_is_text else [])]


async def test_preemption_after_the_output_finished(autojump_clock: object) -> None:
    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(relay.text("Short.", last=True, preemptible=True))
        await log.wait_for(lambda f: f.get("name") == "agentSpeaking" and f["value"] == "off")
        await ws.send_message(relay.text("Next.", last=True))

    result, log = await call(app, listen(4), params=EVENTS)
    assert result.caller.ear.clears == []
    assert [f["value"] for f in log.of("info") if f["name"] == "tokensPlayed"] == ["Short.", "Next."]


# -- 4.6 mapping -----------------------------------------------------------------------------------------


async def test_cleared_marks_report_nothing(autojump_clock: object, clips: dict[str, Clip]) -> None:
    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(relay.text(LONG_REPLY, last=True))
        await log.wait_for(lambda f: f["type"] == "prompt")
        await ws.send_message(relay.text("Okay.", last=True))

    result, log = await call(app, speak_after(clips["vm-sorry"], 2.0, then_s=3), params=EVENTS)
    sequence = log.sequence()
    cut = sequence.index("interrupt")
    # Every mark pending at the clear came back (the caller echoes them all) ...
    cycle1 = played(result, 1)
    assert result.caller.ear.marks_echoed > 1 + len(cycle1) + 2
    # ... yet after the interrupt the app only hears of the new reply.
    after = [s for s in sequence[cut:] if s.startswith(("tokensPlayed", "agentSpeaking"))]
    assert after == ["agentSpeaking=off", "agentSpeaking=on", "tokensPlayed=Okay.", "agentSpeaking=off"]
    reported = [s.removeprefix("tokensPlayed=") for s in sequence[:cut] if s.startswith("tokensPlayed")]
    assert reported[: len(cycle1)] == cycle1  # then at most the fragment of the chunk cut off
    assert len(reported) <= len(cycle1) + 1
    assert heard_through(" ".join(reported), cycle1, spoken_chunks(LONG_REPLY))


# -- real sockets: a play source over HTTP and the session-ended callback ----------------------------------


def wav_bytes(samples: NDArray[np.int16], rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


async def serve_media_and_callbacks(request: Received, stream: trio.abc.Stream) -> None:
    if request.method == "GET":
        t = np.arange(8000) / 16000  # half a second at 16 kHz: the bridge resamples it
        body = wav_bytes((0.3 * 32767 * np.sin(2 * np.pi * 697 * t)).astype(np.int16))
        await stream.send_all(response(200, body, [("Content-Type", "audio/wav")]))
    else:
        await stream.send_all(response(200, b"<Response/>"))


async def test_play_from_http_and_completed_callback() -> None:
    # Real clock: the fetch and the callback use real sockets.
    async with open_http_server(serve_media_and_callbacks) as srv:
        with trio.fail_after(20):
            result, log = await call(sends(play(srv.url("/hold.wav"))), listen_to_the_end(),
                                     play__allow_private=True, handoff__callback_url=srv.url("/action"))
    get, post = srv.requests
    assert (get.method, get.target, post.method, post.target) == ("GET", "/hold.wav", "POST", "/action")
    assert abs(result.caller.ear.frames_played * 20 - 500) <= 20
    assert log.of("error") == []
    form = post.form()
    assert (form["SessionStatus"], form["CallStatus"]) == ("completed", "completed")
    assert form["SessionId"] == log.of("setup")[0]["sessionId"] and form["CallSid"] == result.stats.call_sid
    assert "HandoffData" not in form


async def test_end_posts_the_session_ended_callback() -> None:
    handoff = '{"reason":"transfer","to":"sales & support"}'

    async def app(ws: WebSocketConnection, log: AppLog) -> None:
        await ws.send_message(relay.text("Transferring you.", last=True))
        await log.wait_for(lambda f: f.get("name") == "agentSpeaking" and f["value"] == "off")
        await ws.send_message(relay.end(handoff))

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_bridge_closed()

    async with open_http_server(serve_media_and_callbacks) as srv:
        with trio.fail_after(20):
            result, log = await call(app, script, params=EVENTS, handoff__callback_url=srv.url("/action"))
    [post] = srv.requests
    form = post.form()
    assert (form["SessionStatus"], form["CallStatus"], form["HandoffData"]) == ("ended", "in-progress", handoff)
    assert form["SessionId"] == log.of("setup")[0]["sessionId"] and form["CallSid"] == "CA" + "0" * 32
    assert log.closed == "1000 Closing websocket session"
    assert result.caller.bridge_closed and result.stats.end_reason is EndReason.APP_ENDED
