"""Whole calls over Telnyx media streaming, in memory with fake engines, in each supported format."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from trio_websocket import ConnectionClosed, WebSocketRequest

from relay_bridge.audio.transcode import bytes_per_ms
from relay_bridge.conversation.events import EndReason
from relay_bridge.protocols import relay
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import (
    TELNYX_CALL_CONTROL_ID,
    TELNYX_CALL_LEG_ID,
    TELNYX_CALL_SESSION_ID,
    TELNYX_USER_ID,
    SimulatedCaller,
)
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline
from relay_bridge.speech.chunker import chunk_text
from tests.harness import fake_engines, heard_through, run_memory_call, settings

LONG_REPLY = ("First sentence of a long answer. Second sentence keeps going. Third sentence is here. "
              "Fourth sentence follows. Fifth sentence ends it.")

# (encoding, sample rate, reorder seed): every format, in order and shuffled.
FORMATS = [
    pytest.param("PCMU", 8000, None, id="pcmu-8k"),
    pytest.param("PCMU", 8000, 1, id="pcmu-8k-reordered"),
    pytest.param("PCMA", 8000, 2, id="pcma-8k-reordered"),
    pytest.param("L16", 8000, 3, id="l16-8k-reordered"),
    pytest.param("L16", 16000, None, id="l16-16k"),
    pytest.param("L16", 16000, 4, id="l16-16k-reordered"),
]


def agent(**script: object) -> ScriptedAgent:
    return ScriptedAgent(Timeline(), AgentScript(**script))  # type: ignore[arg-type]


def telnyx(encoding: str, rate: int, seed: int | None) -> dict[str, Any]:
    return {"provider": "telnyx", "encoding": encoding, "sample_rate": rate, "reorder_seed": seed,
            "from_": "+13122010094", "to": "+13122123456"}


def assert_heard_in_stream_format(caller: SimulatedCaller, encoding: str, rate: int) -> None:
    """Every agent media frame was valid for the stream and held the pacer's 20 ms frame."""
    assert caller.invalid_frames == []
    sizes = set(caller.ear.wire_payload_bytes)
    assert sizes == {20 * bytes_per_ms(encoding, rate)}


@pytest.mark.parametrize(("encoding", "rate", "seed"), FORMATS)
async def test_speech_prompt_reply_and_dtmf(autojump_clock: object, clips: dict[str, Clip], encoding: str,
                                            rate: int, seed: int | None) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.say(clips["agent-pass"])
        await caller.wait_agent_done()
        await caller.press("7")
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(("please enter your password",)), settings(), app.handle, script,
                                   **telnyx(encoding, rate, seed))
    session = app.sessions[0]
    assert [(p.voice_prompt, p.last) for p in session.prompts] == [("please enter your password", True)]
    assert session.digits == ["7"]
    played = [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert played == ["Hi.", "I heard:", "please enter your password", "You pressed 7."]
    assert result.caller.ear.frames_played > 0
    assert_heard_in_stream_format(result.caller, encoding, rate)
    assert result.stats.invalid_provider_frames == 0
    assert result.stats.end_reason is EndReason.PROVIDER_STOPPED
    assert (result.caller.media_out_of_order > 10) == (seed is not None)


@pytest.mark.parametrize(("encoding", "rate", "seed"), FORMATS)
async def test_barge_in_sends_clear_and_the_app_gets_interrupt(autojump_clock: object, clips: dict[str, Clip],
                                                               encoding: str, rate: int, seed: int | None) -> None:
    app = agent(greeting=LONG_REPLY, answer=lambda heard, turn: "Okay.")
    marks: dict[str, float] = {}

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(2.5)
        marks["onset"] = caller.start_saying(clips["vm-sorry"]).onset
        await caller.finish_saying()
        await caller.wait_agent_done()
        await caller.hang_up()

    result = await run_memory_call(fake_engines(("sorry",)), settings(), app.handle, script,
                                   **telnyx(encoding, rate, seed))
    session = app.sessions[0]
    assert len(session.interrupts) == 1
    assert len(result.caller.ear.clears) == 1
    assert result.caller.ear.clears[0] > marks["onset"]
    heard = [d["text"] for _, n, d in result.stats.events if n == "played" and d["cycle"] == 1]
    assert 1 <= len(heard) < 5
    assert heard_through(session.interrupts[0].utterance_until_interrupt, heard,
                         [c.strip() for c in chunk_text(LONG_REPLY)])
    assert [p.voice_prompt for p in session.prompts] == ["sorry"]
    assert "Okay." in [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert_heard_in_stream_format(result.caller, encoding, rate)


def digits_app(record: list[str]):  # type: ignore[no-untyped-def]
    async def handle(request: WebSocketRequest) -> None:
        ws = await request.accept()
        record.append(await ws.get_message())  # setup
        await ws.send_message(relay.text("Dialling now.", last=True))
        await ws.send_message(relay.send_digits("12w#9"))
        try:
            while True:
                record.append(await ws.get_message())
        except ConnectionClosed:
            pass

    return handle


@pytest.mark.parametrize(("encoding", "rate", "seed"), FORMATS)
async def test_agent_audio_reaches_the_caller_intact(autojump_clock: object, encoding: str, rate: int,
                                                     seed: int | None) -> None:
    # In-band DTMF only decodes if every byte of the agent's audio went out in the stream's format.
    record: list[str] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(6)
        await caller.hang_up()

    result = await run_memory_call(fake_engines(), settings(), digits_app(record), script,
                                   **telnyx(encoding, rate, seed))
    assert result.caller.heard_digits() == "12#9"
    assert_heard_in_stream_format(result.caller, encoding, rate)


async def test_setup_carries_the_telnyx_fields(autojump_clock: object) -> None:
    record: list[str] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(1)
        await caller.hang_up()

    params = {"customer_id": "customer_123", "vip": True, "tier": 3, "callerName": "Ada"}
    await run_memory_call(fake_engines(), settings(), digits_app(record), script, custom_parameters=params,
                          **telnyx("PCMU", 8000, None))
    setup = json.loads(record[0])
    assert setup["type"] == "setup"
    assert setup["callSid"] == setup["callControlId"] == TELNYX_CALL_CONTROL_ID
    assert setup["callSessionId"] == TELNYX_CALL_SESSION_ID
    assert setup["callLegId"] == TELNYX_CALL_LEG_ID
    assert setup["accountSid"] == TELNYX_USER_ID
    assert str(uuid.UUID(setup["sessionId"])) == setup["sessionId"]
    assert setup["callStatus"] == "active"
    assert (setup["from"], setup["to"], setup["callerName"]) == ("+13122010094", "+13122123456", "Ada")
    assert setup["customParameters"] == params  # non-string values pass through as they came
    parsed = relay.parse_relay_message(record[0])
    assert isinstance(parsed, relay.Setup) and parsed.call_control_id == TELNYX_CALL_CONTROL_ID


async def test_non_string_session_parameters_apply(autojump_clock: object) -> None:
    app = agent(greeting="Hi.")

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.press("3")
        await caller.pause(1)
        await caller.hang_up()

    # dtmfDetection arrives as a JSON boolean on Telnyx; it turns detection off like "false" would.
    await run_memory_call(fake_engines(), settings(), app.handle, script, custom_parameters={"dtmfDetection": False},
                          **telnyx("PCMA", 8000, None))
    assert app.sessions[0].digits == []
    assert app.sessions[0].errors == []


async def test_twilio_calls_are_unchanged_beside_telnyx(autojump_clock: object) -> None:
    record: list[str] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(1)
        await caller.hang_up()

    await run_memory_call(fake_engines(), settings(), digits_app(record), script)
    setup = json.loads(record[0])
    assert list(setup) == ["type", "sessionId", "accountSid", "parentCallSid", "callSid", "from", "to",
                           "forwardedFrom", "callerName", "direction", "callType", "callStatus", "customParameters"]
    assert setup["callStatus"] == "RINGING" and setup["sessionId"].startswith("VX")
