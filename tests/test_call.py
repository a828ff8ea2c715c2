"""Whole calls in memory with fake engines: the real server, codecs, pacer and ledger end to end."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.schedule import Priority
from relay_bridge.protocols import relay
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SILENT_FRAME, SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline
from relay_bridge.speech.chunker import chunk_text
from tests.harness import fake_engines, heard_through, run_memory_call, settings

LONG_REPLY = ("First sentence of a long answer. Second sentence keeps going. Third sentence is here. "
              "Fourth sentence follows. Fifth sentence ends it.")


def spoken_chunks(text: str) -> list[str]:
    """How the bridge splits a reply into spoken chunks (each closed by a mark)."""
    return [c.strip() for c in chunk_text(text)]


def agent(**script: object) -> ScriptedAgent:
    return ScriptedAgent(Timeline(), AgentScript(**script))  # type: ignore[arg-type]


async def test_setup_carries_call_and_custom_parameters(autojump_clock: object) -> None:
    app = agent()

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    params = {"from": "+15550100", "to": "+15550199", "direction": "inbound", "callerName": "Ada",
              "custom": "kept"}
    await run_memory_call(fake_engines(), settings(), app.handle, script, custom_parameters=params)
    setup = app.sessions[0].setup
    assert setup is not None
    assert setup.call_sid == "CA" + "0" * 32 and setup.account_sid == "AC" + "0" * 32
    assert setup.session_id.startswith("VX") and len(setup.session_id) == 34
    assert (setup.from_, setup.to, setup.direction, setup.caller_name) == ("+15550100", "+15550199", "inbound", "Ada")
    assert setup.custom_parameters == params
    assert setup.call_status == "RINGING" and setup.parent_call_sid == ""


async def test_speech_becomes_a_final_prompt_and_the_reply_is_heard(autojump_clock: object,
                                                                    clips: dict[str, Clip]) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.say(clips["agent-pass"])
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(("please enter your password",)), settings(), app.handle, script)
    session = app.sessions[0]
    assert [(p.voice_prompt, p.lang, p.last) for p in session.prompts] == [
        ("please enter your password", "en-US", True)]
    played = [d["text"] for _, name, d in result.stats.events if name == "played"]
    assert played == ["Hi.", "I heard:", "please enter your password"]
    assert result.caller.ear.frames_played > 0
    assert result.stats.end_reason is EndReason.PROVIDER_STOPPED


async def test_outbound_audio_is_paced_within_the_lead_with_marks(autojump_clock: object) -> None:
    app = agent(greeting=LONG_REPLY)

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(playback__lead_ms=200), app.handle, script)
    ear = result.caller.ear
    assert max(ear.leads_ms) <= 200 + 1e-6
    # One start mark plus one per chunk, and every mark came back after its audio.
    chunks = spoken_chunks(LONG_REPLY)
    assert len(chunks) >= 5
    assert ear.marks_echoed == 1 + len(chunks)
    assert [d["text"] for _, n, d in result.stats.events if n == "played"] == chunks
    # Fake TTS: 40 ms per character, so the audio is about as long as the text says.
    expected_ms = sum(len(s) for s in LONG_REPLY.split(". ")) * 40
    assert abs(ear.frames_played * 20 - expected_ms) < 400


async def test_a_replys_first_chunk_is_urgent_and_later_ones_are_made_ahead(autojump_clock: object) -> None:
    """Synthesis scheduling: the first chunk (the caller hears nothing yet) goes first; later ones are
    due soon while little is left to hear, and made ahead once enough is."""
    app = agent(greeting=LONG_REPLY)

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    engines = fake_engines()
    await run_memory_call(engines, settings(), app.handle, script)
    granted = engines.tts_scheduler.granted
    chunks = len(spoken_chunks(LONG_REPLY))
    assert granted[Priority.FINAL] == 1 and granted[Priority.SPECULATIVE] >= 1 and granted[Priority.PARTIAL] >= 1
    assert sum(granted.values()) == chunks


async def test_dtmf_reaches_the_app(autojump_clock: object) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        for digit in "1#":
            await caller.press(digit)
            await caller.wait_agent_done()
        await caller.hang_up()

    await run_memory_call(fake_engines(), settings(), app.handle, script)
    assert app.sessions[0].digits == ["1", "#"]


async def test_dtmf_not_forwarded_without_detection(autojump_clock: object) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.press("1")
        await caller.pause(1)
        await caller.hang_up()

    await run_memory_call(fake_engines(), settings(session__dtmf_detection=False), app.handle, script)
    assert app.sessions[0].digits == []


async def barge_in_call(clips: dict[str, Clip], interruptible: str = "any", wait_s: float = 2.5,  # type: ignore[no-untyped-def]
                        params: dict[str, str] | None = None):
    app = agent(greeting=LONG_REPLY, answer=lambda heard, turn: "Okay.")
    marks: dict[str, float] = {}

    async def script(caller: SimulatedCaller) -> None:
        marks["audio"] = await caller.wait_agent_audio()
        await caller.pause(wait_s)
        spoken = caller.start_saying(clips["vm-sorry"])
        marks["onset"] = spoken.onset
        await caller.finish_saying()
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(("sorry",)), settings(session__interruptible=interruptible), app.handle,
                                   script, custom_parameters=params)
    return app, result, marks


async def test_barge_in_clears_playback_and_reports_what_was_heard(autojump_clock: object,
                                                                   clips: dict[str, Clip]) -> None:
    app, result, marks = await barge_in_call(clips)
    session = app.sessions[0]
    assert len(session.interrupts) == 1
    interrupt = session.interrupts[0]
    ear = result.caller.ear
    assert len(ear.clears) == 1
    clear_at = ear.clears[0]
    assert clear_at > marks["onset"]
    # The caller heard whole sentences up to the last played mark, and the text reported is exactly those.
    heard_sentences = [d["text"] for t, n, d in result.stats.events if n == "played" and d["cycle"] == 1]
    # ... plus the first words of the chunk cut off, as far as its audio got.
    assert heard_through(interrupt.utterance_until_interrupt, heard_sentences, spoken_chunks(LONG_REPLY))
    assert 1 <= len(heard_sentences) < len(spoken_chunks(LONG_REPLY))
    assert LONG_REPLY.startswith(interrupt.utterance_until_interrupt)
    # The reported duration matches the agent audio the caller actually heard before the clear.
    heard_ms = result.caller.heard_ms_between(marks["audio"], clear_at)
    assert abs(interrupt.duration_until_interrupt_ms - heard_ms) <= 60
    # Nothing of the interrupted reply is played after the clear: the next audio is the new reply.
    assert "Okay." in [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert [p.voice_prompt for p in session.prompts] == ["sorry"]


async def test_marks_echoed_by_a_clear_are_not_counted_as_played(autojump_clock: object,
                                                                 clips: dict[str, Clip]) -> None:
    app, result, _ = await barge_in_call(clips)
    played_cycle1 = [d["text"] for _, n, d in result.stats.events if n == "played" and d["cycle"] == 1]
    # The caller echoed every mark (played ones and the ones pending at the clear) ...
    assert result.caller.ear.marks_echoed >= len(played_cycle1) + 1
    # ... but only the played ones count: the heard text stops at the interrupt.
    assert heard_through(app.sessions[0].interrupts[0].utterance_until_interrupt, played_cycle1,
                         spoken_chunks(LONG_REPLY))


async def test_no_barge_in_when_not_interruptible(autojump_clock: object, clips: dict[str, Clip]) -> None:
    app, result, _ = await barge_in_call(clips, interruptible="dtmf", params={"reportInputDuringAgentSpeech": "speech"})
    assert app.sessions[0].interrupts == []
    assert [p.voice_prompt for p in app.sessions[0].prompts] == ["sorry"]  # reported, as asked
    assert result.caller.ear.clears == []
    played = [d["text"] for _, n, d in result.stats.events if n == "played" and d["cycle"] == 1]
    assert played == spoken_chunks(LONG_REPLY)


async def test_dtmf_barge_in(autojump_clock: object) -> None:
    app = agent(greeting=LONG_REPLY)

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(1.0)
        await caller.press("9")
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), app.handle, script)
    assert len(app.sessions[0].interrupts) == 1
    assert app.sessions[0].digits == ["9"]
    assert len(result.caller.ear.clears) == 1


# -- misbehaving peers ----------------------------------------------------------------------------


def raw_app(frames: list[str | bytes], record: list[str], *, then_wait: bool = True):  # type: ignore[no-untyped-def]
    """An app that sends fixed frames after setup and records what it receives."""

    async def handle(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            record.append(str(await ws.get_message()))  # setup
            for frame in frames:
                await ws.send_message(frame)
            while then_wait:
                record.append(str(await ws.get_message()))
        except ConnectionClosed as exc:
            record.append(f"closed {exc.reason.code if exc.reason else None} "
                          f"{exc.reason.reason if exc.reason else ''}")

    return handle


async def test_invalid_app_frames_get_error_frames_and_the_call_goes_on(autojump_clock: object) -> None:
    record: list[str] = []
    bad = ['{"type":"text","token":null}', "not json", '{"type":"nope"}', b"\x00binary"]
    app = raw_app([*bad, relay.text("Still here.", last=True)], record)

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), app, script)
    errors = [json.loads(r) for r in record if r.startswith('{"type":"error"')]
    assert [e["description"] for e in errors] == [
        f"Invalid message received, code: 64107, {b if isinstance(b, str) else b.decode('utf-8', 'replace')}"
        for b in bad]
    assert result.stats.invalid_app_frames == 4
    assert result.caller.ear.frames_played > 0  # the valid text after them was spoken


async def test_ten_consecutive_invalid_app_frames_close_with_1007(autojump_clock: object) -> None:
    record: list[str] = []
    app = raw_app(["garbage"] * 10, record)

    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(5):
            await caller.wait_bridge_closed()

    result = await run_memory_call(fake_engines(), settings(), app, script)
    assert sum(r.startswith('{"type":"error"') for r in record) == 10
    assert record[-1] == "closed 1007 Too many consecutive malformed messages."
    assert result.caller.bridge_closed
    assert result.stats.end_reason is EndReason.APP_MALFORMED


async def test_invalid_provider_frames_are_dropped_and_the_call_goes_on(autojump_clock: object,
                                                                        clips: dict[str, Clip]) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        for junk in (b"\x01\x02", "{", '{"event":"media","streamSid":"MZwrong","media":{}}', '{"event":"bogus"}',
                     '{"event":"media","streamSid":"' + caller.codec.stream_sid + '","media":{"payload":"@@"}}'):
            await caller._send(junk) if isinstance(junk, str) else await caller._ws.send_message(junk)  # type: ignore[union-attr]
        await caller.say(clips["hello-world"])
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(("hello",)), settings(), app.handle, script)
    assert result.stats.invalid_provider_frames == 5
    assert [p.voice_prompt for p in app.sessions[0].prompts] == ["hello"]


async def test_provider_stop_closes_the_app_socket_normally(autojump_clock: object) -> None:
    record: list[str] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(0.5)
        await caller.hang_up()

    await run_memory_call(fake_engines(), settings(), raw_app([], record), script)
    assert record[-1] == "closed 1000 Closing websocket session"


async def test_unreachable_app_ends_the_call_cleanly(autojump_clock: object) -> None:
    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(10):
            await caller.wait_bridge_closed()

    result = await run_memory_call(fake_engines(), settings(), None, script)
    assert result.caller.bridge_closed
    assert result.stats.end_reason is EndReason.APP_UNREACHABLE


async def test_app_dropping_mid_call_ends_the_call(autojump_clock: object) -> None:
    async def app(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        await ws.send_message(relay.text("Bye.", last=True))
        await trio.sleep(1)
        await ws.aclose(1011, "app crashed")

    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(10):
            await caller.wait_bridge_closed()

    result = await run_memory_call(fake_engines(), settings(), app, script)
    assert (result.stats.end_reason, result.stats.end_detail) == (EndReason.APP_CLOSED, "1011")


async def test_app_end_closes_the_stream_and_keeps_handoff_data(autojump_clock: object) -> None:
    app = agent(greeting="Hi.", end_after_key="0", handoff_data='{"to":"sales"}')

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.press("0")
        with trio.fail_after(10):
            await caller.wait_bridge_closed()

    result = await run_memory_call(fake_engines(), settings(), app.handle, script)
    assert result.stats.end_reason is EndReason.APP_ENDED
    assert [d["handoff_data"] for _, n, d in result.stats.events if n == "end"] == ['{"to":"sales"}']


async def test_silence_only_gives_no_prompt(autojump_clock: object) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(3)
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), app.handle, script)
    assert app.sessions[0].prompts == []
    assert all(f == SILENT_FRAME for f in result.caller.left)


# -- sendDigits ----------------------------------------------------------------------------------


async def test_send_digits_plays_dtmf_the_caller_can_decode(autojump_clock: object) -> None:
    record: list[str] = []
    app = raw_app([relay.text("Dialling now.", last=True), '{"type":"sendDigits","digits":"12w#9"}'], record)

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(6)
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), app, script)
    assert result.caller.heard_digits() == "12#9"
    played = [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert played == ["Dialling now.", "12w#9"]  # the digits waited behind the speech
    assert not [r for r in record if r.startswith('{"type":"error"')]


async def test_send_digits_flushes_text_still_open_before_the_tones(autojump_clock: object) -> None:
    app = raw_app([relay.text("Hold on"), '{"type":"sendDigits","digits":"5"}', relay.text("Done.", last=True)], [])

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(5)
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), app, script)
    assert [d["text"] for _, n, d in result.stats.events if n == "played"] == ["Hold on", "5", "Done."]
    assert result.caller.heard_digits() == "5"


async def test_a_barge_in_cuts_send_digits(autojump_clock: object, clips: dict[str, Clip]) -> None:
    record: list[str] = []
    app = raw_app(['{"type":"sendDigits","digits":"0123456789"}'], record)

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(0.6)
        await caller.say(clips["hello-world"])
        await caller.pause(1)
        await caller.hang_up()

    result = await run_memory_call(fake_engines(("stop",)), settings(), app, script)
    heard = result.caller.heard_digits()
    assert 1 <= len(heard) < 10 and "0123456789".startswith(heard)
    assert len(result.caller.ear.clears) == 1
    assert any(r.startswith('{"type":"interrupt"') for r in record)


async def test_invalid_send_digits_gets_an_error_frame(autojump_clock: object) -> None:
    record: list[str] = []
    app = raw_app(['{"type":"sendDigits","digits":"12x"}'], record)

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(1)
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), app, script)
    assert [json.loads(r)["description"] for r in record if r.startswith('{"type":"error"')] == [
        'Invalid message received, code: 64107, {"type":"sendDigits","digits":"12x"}']
    assert result.caller.heard_digits() == ""


# -- session settings per call, welcome greeting, info events ------------------------------------

EVENTS = {"events": "speaker-events tokens-played"}


def talk_over_the_agent(clip: Clip) -> Callable[[SimulatedCaller], Awaitable[None]]:
    """A caller who speaks half a second into the agent's speech, then waits for it to finish."""

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(0.5)
        await caller.say(clip)
        await caller.wait_agent_done()
        await caller.hang_up()

    return script


async def test_welcome_greeting_from_a_custom_parameter_is_spoken_first(autojump_clock: object) -> None:
    app = agent(greeting="")  # the app itself says nothing

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    params = {"welcomeGreeting": "Welcome to the bridge. How can I help?", **EVENTS}
    result = await run_memory_call(fake_engines(), settings(), app.handle, script, custom_parameters=params)
    assert [d["text"] for _, n, d in result.stats.events if n == "played"] == spoken_chunks(params["welcomeGreeting"])
    session = app.sessions[0]
    infos = [f"{i.name}={i.value}" for i in session.infos]
    assert infos == ["agentSpeaking=on", *[f"tokensPlayed={c}" for c in spoken_chunks(params["welcomeGreeting"])],
                     "agentSpeaking=off"]
    assert session.received[0] == "Setup"


async def test_a_greeting_that_is_not_interruptible_is_not_cut_by_speech(autojump_clock: object,
                                                                         clips: dict[str, Clip]) -> None:
    app = agent(greeting="")

    script = talk_over_the_agent(clips["hello-world"])

    params = {"welcomeGreeting": LONG_REPLY, "welcomeGreetingInterruptible": "dtmf"}
    result = await run_memory_call(fake_engines(("hi",)), settings(), app.handle, script, custom_parameters=params)
    assert result.caller.ear.clears == [] and app.sessions[0].interrupts == []
    played = [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert played[: len(spoken_chunks(LONG_REPLY))] == spoken_chunks(LONG_REPLY)


async def test_speaker_events_bracket_a_barge_in_in_twilio_order(autojump_clock: object,
                                                                 clips: dict[str, Clip]) -> None:
    app, _, _ = await barge_in_call(clips, params=EVENTS)
    received = app.sessions[0].received
    cut = received.index("Interrupt")
    assert received[0:2] == ["Setup", "agentSpeaking=on"]
    # Caller speech, the fragment of the chunk cut off, then the interrupt it caused (Twilio's order).
    assert received[cut - 2] == "clientSpeaking=on" and received[cut - 1].startswith("tokensPlayed=")
    assert received[cut + 1] == "agentSpeaking=off"
    assert received.index("clientSpeaking=off", cut) < received.index("Prompt")
    # What tokensPlayed reported before the cut is exactly what the interrupt says was heard.
    played = [r.removeprefix("tokensPlayed=") for r in received[:cut] if r.startswith("tokensPlayed=")]
    assert " ".join(played) == app.sessions[0].interrupts[0].utterance_until_interrupt


async def test_no_info_messages_unless_subscribed(autojump_clock: object, clips: dict[str, Clip]) -> None:
    app, _, _ = await barge_in_call(clips)
    assert app.sessions[0].infos == []


@pytest.mark.parametrize(("report", "reported"), [(None, False), ("none", False), ("dtmf", False),
                                                 ("speech", True), ("any", True), ("true", True)])
async def test_a_text_marked_not_interruptible_is_not_cut(autojump_clock: object, clips: dict[str, Clip],
                                                          report: str | None, reported: bool) -> None:
    """Whether speech over agent speech that does not cut it is reported is reportInputDuringAgentSpeech's
    call (default none, as on Twilio since May 2025), separate from whether playback stops."""
    record: list[str] = []
    app = raw_app([relay.text(LONG_REPLY, last=True, interruptible=False)], record)

    script = talk_over_the_agent(clips["hello-world"])
    params = {} if report is None else {"reportInputDuringAgentSpeech": report}
    result = await run_memory_call(fake_engines(("hi",)), settings(), app, script, custom_parameters=params)
    assert result.caller.ear.clears == []
    assert not any(r.startswith('{"type":"interrupt"') for r in record)
    assert any(r.startswith('{"type":"prompt"') for r in record) == reported


async def test_invalid_session_parameters_are_reported_to_the_app(autojump_clock: object) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    await run_memory_call(fake_engines(), settings(), app.handle, script,
                          custom_parameters={"interruptible": "sometimes", "dtmfDetection": "maybe"})
    errors = app.sessions[0].errors
    assert len(errors) == 2 and all(e.startswith("Invalid session parameter: ") for e in errors)
    assert "interruptible" in errors[0] + errors[1] and "dtmfDetection" in errors[0] + errors[1]


async def test_the_example_app_survives_a_call_ending_while_it_streams_a_reply(autojump_clock: object) -> None:
    """The bridge may close the app socket between two tokens of a reply (the caller hung up): the reply
    stops there, and nothing escapes into the app's server (which would end every other session)."""
    from relay_bridge.sim.agent import AgentSession
    from tests.harness import MemoryNetwork

    app = ScriptedAgent(Timeline())
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)

        async def close_at_once(request: WebSocketRequest) -> None:
            ws = await request.accept()
            await ws.aclose()

        net.apps["ws://closing.test/"] = close_at_once
        async with net.connect_app("ws://closing.test/", 1.0) as ws:
            with trio.fail_after(1), pytest.raises(ConnectionClosed):
                await ws.get_message()  # the app's side sees the close
            await app._stream_reply(ws, AgentSession(), "a reply of several words", False, "", trio.CancelScope())
        nursery.cancel_scope.cancel()
