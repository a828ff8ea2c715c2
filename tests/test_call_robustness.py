"""Races and failures inside a call: barge-in against in-flight text, hangups, engine errors, silence."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import trio
import trio.lowlevel
import trio.testing
from numpy.typing import NDArray
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from relay_bridge.call.call import PROVIDER_IDLE_TIMEOUT_S
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.call.inbox import Inbox
from relay_bridge.call.opening import START_TIMEOUT_S
from relay_bridge.call.playback import Playback
from relay_bridge.call.record import CallLogger
from relay_bridge.call.speaker import Speaker
from relay_bridge.conversation import events as ev
from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.protocols import relay
from relay_bridge.protocols.media_streams import MediaStreamsBridge, MediaStreamsProvider
from relay_bridge.protocols.telnyx_media import TelnyxMediaProvider
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.timeline import Timeline
from tests.harness import MemoryNetwork, bridge_server, fake_engines, run_memory_call, settings


def quiet_playback(sent: list[str]) -> tuple[Playback, Inbox[ev.Event]]:
    codec = MediaStreamsBridge()
    codec.stream_sid = "MZ1"

    async def send(frame: str) -> None:
        sent.append(frame)

    inbox: Inbox[ev.Event] = Inbox()
    return Playback(send, codec, inbox, lead_ms=300), inbox


async def test_a_chunk_cancelled_while_it_is_synthesised_yields_nothing() -> None:
    # Real clock: synthesis runs in a worker thread, which a mock clock would jump over.
    sent: list[str] = []
    playback, inbox = quiet_playback(sent)
    speaker = Speaker(fake_engines(), playback, inbox, max_ahead_ms=3000,
                      logger=CallLogger(logging.getLogger("test"), {}))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.run)
        speaker.render(ev.SpeechChunk(1, 1, "Old reply, first part.", first=True))
        await trio.lowlevel.checkpoint()
        speaker.cancel(1)  # the barge-in lands while it is being synthesised
        speaker.render(ev.SpeechChunk(2, 2, "New reply.", first=True, final=True))
        with trio.fail_after(5):
            event = await inbox.get()
        await trio.sleep(0.1)  # anything wrongly let through would be in the inbox by now
        nursery.cancel_scope.cancel()
    assert isinstance(event, ev.Rendered) and event.seq == 2 and event.audio
    assert inbox.waiting("provider") == inbox.waiting("app") == 0
    with trio.move_on_after(0.01) as nothing_more:
        await inbox.get()
    assert nothing_more.cancelled_caught


@pytest.mark.parametrize(("unheard", "cleared"), [(False, False), (True, True)])
async def test_a_clear_is_sent_only_when_the_provider_may_hold_agent_audio(autojump_clock: object, unheard: bool,
                                                                            cleared: bool) -> None:
    sent: list[str] = []
    playback, _ = quiet_playback(sent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(playback.run)
        playback.enqueue_audio(1, b"\xff" * 1600)  # queued, never sent: the pacer is held by the lead
        playback.clear(unheard=unheard)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [json.loads(f)["event"] for f in sent] == (["clear"] if cleared else [])
    assert playback.queued_ms == 0


async def test_no_frame_of_the_old_audio_follows_a_clear(autojump_clock: object) -> None:
    sent: list[str] = []
    playback, inbox = quiet_playback(sent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(playback.run)
        playback.enqueue_audio(1, b"\xff" * 16000)  # 2 s: paced out over time
        playback.enqueue_mark("c1-1")
        await trio.sleep(0.5)
        playback.clear(unheard=False)
        playback.enqueue_audio(2, b"\x7f" * 160)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    events = [json.loads(f) for f in sent]
    cut = next(i for i, e in enumerate(events) if e["event"] == "clear")
    assert all(e["event"] == "media" for e in events[:cut]) and cut > 0
    assert [e["event"] for e in events[cut + 1:]] == ["media"]  # only the new audio, and no mark of the old
    first_audio = []
    while inbox.waiting("provider") == 0:
        with trio.move_on_after(0.01):
            first_audio.append(await inbox.get())
            continue
        break
    assert [e.cycle for e in first_audio if isinstance(e, ev.FirstAudio)] == [1, 2]


async def test_a_hangup_during_agent_speech_is_an_ordinary_end(autojump_clock: object,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    app = ScriptedAgent(Timeline(), AgentScript(greeting="This greeting is long enough to still be playing. " * 3))

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(0.7)
        await caller.hang_up()

    with caplog.at_level(logging.WARNING):
        result = await run_memory_call(fake_engines(), settings(), app.handle, script)
    assert result.stats.end_reason is EndReason.PROVIDER_STOPPED
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@dataclass
class BrokenSynthesizer(FakeSynthesizer):
    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        if "boom" in text:
            raise RuntimeError("voice model failed")
        yield from super().synthesize(text)


async def test_a_synthesis_failure_skips_the_chunk_and_the_call_goes_on(autojump_clock: object,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    record: list[str] = []

    async def app(request: WebSocketRequest) -> None:
        ws = await request.accept()
        record.append(str(await ws.get_message()))
        await ws.send_message(relay.text("boom.", last=True))
        await ws.send_message(relay.text("Still talking.", last=True))
        await trio.sleep_forever()

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.hang_up()

    engines = SpeechEngines(FakeTranscriber(), BrokenSynthesizer())
    result = await run_memory_call(engines, settings(), app, script)
    played = [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert played == ["Still talking."]
    assert any("speech synthesis failed" in r.getMessage() for r in caplog.records)
    assert result.stats.end_reason is EndReason.PROVIDER_STOPPED


async def test_a_provider_that_goes_silent_ends_the_call(autojump_clock: object) -> None:
    app = ScriptedAgent(Timeline())
    provider = MediaStreamsProvider(stream_sid="MZ1", account_sid="AC1", call_sid="CA1")
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[settings().server.app_url] = app.handle
        server = bridge_server(settings(), fake_engines(), net.connect_app)
        server.keep_stats = True
        async with net.connect_bridge(server) as ws:
            await ws.send_message(provider.connected())
            await ws.send_message(provider.start())
            started = trio.current_time()
            with trio.fail_after(PROVIDER_IDLE_TIMEOUT_S + 5):
                await server.wait_idle()
            assert trio.current_time() - started >= PROVIDER_IDLE_TIMEOUT_S
        nursery.cancel_scope.cancel()
    assert server.finished[0].end_reason is EndReason.PROVIDER_SILENT
    # The app is told why before its socket closes (a session-level failure, 64108 RTP timeout).
    assert app.sessions[0].errors == ["Session ended (64108): provider went silent"]


async def test_an_app_that_never_answers_the_malformed_close_does_not_hold_the_call(autojump_clock: object) -> None:
    """After 10 bad frames the bridge closes the app socket with 1007 and ends the call at once, even if
    the app never completes the closing handshake (the close is bounded, in teardown)."""
    closes: list[int | None] = []

    @asynccontextmanager
    async def connect_app(url: str, timeout_s: float, headers: object = None) -> AsyncIterator[WebSocketConnection]:
        ours, theirs = trio.testing.memory_stream_pair()

        async def silent_app() -> None:  # raw wsproto: accepts, sends garbage, ignores the close frame
            ws = WSConnection(ConnectionType.SERVER)
            while data := await theirs.receive_some(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        await theirs.send_all(ws.send(AcceptConnection())
                                              + b"".join(ws.send(TextMessage("garbage")) for _ in range(10)))
                    elif isinstance(event, CloseConnection):
                        closes.append(event.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(silent_app)
            ws = await wrap_client_stream(nursery, ours, "app.test", "/relay")
            yield ws
            nursery.cancel_scope.cancel()

    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(5):
            await caller.wait_bridge_closed()

    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        server = bridge_server(settings(), fake_engines(), connect_app)
        server.keep_stats = True
        caller = SimulatedCaller("ws://bridge.test/media", Timeline())
        await caller.run(script, connect=lambda: net.connect_bridge(server))
        with trio.fail_after(10):
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    assert closes == [1007]
    assert server.finished[0].end_reason is EndReason.APP_MALFORMED


async def test_a_stream_the_bridge_cannot_serve_is_closed_at_once(autojump_clock: object) -> None:
    """A refused ``start`` (here a Telnyx stream in G722) ends the stream now, not after the start timeout."""
    app = ScriptedAgent(Timeline())
    provider = TelnyxMediaProvider(stream_id="s1", call_control_id="v3:c1", call_session_id="cs1", user_id="u1",
                                   encoding="G722", sample_rate=16000)
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[settings().server.app_url] = app.handle
        server = bridge_server(settings(), fake_engines(), net.connect_app)
        async with net.connect_bridge(server) as ws:
            await ws.send_message(provider.connected())
            await ws.send_message(provider.start())
            started = trio.current_time()
            with trio.fail_after(START_TIMEOUT_S / 2), pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert trio.current_time() - started < 1
        nursery.cancel_scope.cancel()
    assert app.sessions == []  # no relay session was opened for it
