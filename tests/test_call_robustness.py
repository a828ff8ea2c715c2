"""Races and failures inside a call: barge-in against in-flight text, hangups, engine errors, silence."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import trio
import trio.testing
from numpy.typing import NDArray
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from bridge.call.engines import SpeechEngines
from bridge.call.playback import AudioFrame, Playback
from bridge.call.session import PROVIDER_IDLE_TIMEOUT_S, START_TIMEOUT_S, Call, CallLogger
from bridge.call.speaker import Speaker, SpeechChunk
from bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from bridge.protocols import media_streams as ms
from bridge.protocols import relay
from bridge.protocols.marks import Heard, MarkLedger
from bridge.protocols.media_streams import MediaStreamsBridge, MediaStreamsProvider
from bridge.protocols.telnyx_media import TelnyxMediaProvider
from bridge.sim.agent import AgentScript, ScriptedAgent
from bridge.sim.caller import SimulatedCaller
from bridge.sim.timeline import Timeline
from tests.harness import MemoryNetwork, bridge_server, fake_engines, run_memory_call, settings


def quiet_playback(sent: list[str]) -> tuple[Playback, MarkLedger]:
    codec = MediaStreamsBridge()
    codec.stream_sid = "MZ1"

    async def send(frame: str) -> None:
        sent.append(frame)

    ledger = MarkLedger()
    return Playback(send, codec, ledger, lead_ms=300), ledger


async def test_a_barge_in_drops_chunks_of_the_cut_cycle_still_on_their_way() -> None:
    # Real clock: synthesis runs in a worker thread, which a mock clock would jump over.
    sent: list[str] = []
    playback, _ = quiet_playback(sent)
    speaker = Speaker(fake_engines(), playback, max_ahead_ms=3000,
                      logger=CallLogger(logging.getLogger("test"), {}))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.run)
        await trio.sleep(0.1)  # the speaker is waiting in receive: a submit hands the chunk straight over
        await speaker.submit(SpeechChunk(1, "Old reply, first part.", final=False))
        speaker.cancel(keep_from_cycle=2)  # the barge-in lands while that chunk is being handed over
        await speaker.submit(SpeechChunk(1, "Old reply, second part.", final=True))  # still on its way
        await speaker.submit(SpeechChunk(2, "New reply.", final=True))
        with trio.fail_after(5):
            while not any(isinstance(item, AudioFrame) for item in playback._queue):
                await playback._wait_change()
            await trio.sleep(0.1)  # anything wrongly let through would be queued by now
        nursery.cancel_scope.cancel()
    queued_cycles = {item.cycle for item in playback._queue if isinstance(item, AudioFrame)}
    assert playback.frames_sent == 0  # the pacer is not running here
    assert queued_cycles == {2}


async def test_every_barge_in_forgets_what_was_heard_before(autojump_clock: object) -> None:
    sent: list[str] = []
    playback, ledger = quiet_playback(sent)
    start = ledger.place(1, "", "")
    ledger.note_sent(1, 8000)
    first = ledger.place(1, "One.", "One.")
    ledger.echo(start.name, 1.0)
    ledger.echo(first.name, 2.0)  # nothing pending now: a barge-in needs no clear frame
    assert ledger.heard(2.5).text == "One."
    await playback.clear()
    assert sent == []  # no clear sent: nothing was buffered at the provider
    assert ledger.heard(3.0) == Heard(cycle=None, text="", duration_ms=0.0)


async def test_a_hangup_during_agent_speech_is_an_ordinary_end(autojump_clock: object,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    app = ScriptedAgent(Timeline(), AgentScript(greeting="This greeting is long enough to still be playing. " * 3))

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_audio()
        await caller.pause(0.7)
        await caller.hang_up()

    with caplog.at_level(logging.WARNING):
        result = await run_memory_call(fake_engines(), settings(), app.handle, script)
    assert result.stats.end_reason == "provider sent stop"
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
    assert result.stats.end_reason == "provider sent stop"


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
    assert server.finished[0].end_reason == "provider went silent"
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
    assert server.finished[0].end_reason == "app sent too many malformed messages"


class _Sent:
    """A socket stand-in that keeps what is sent and yields, as a real send does."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed = None

    async def send_message(self, message: str) -> None:
        self.sent.append(message)
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("kind", ["play", "digits", "text"])
async def test_a_message_whose_handling_spans_a_barge_in_is_dropped(autojump_clock: object, kind: str) -> None:
    """A barge-in that lands while an app message is still being handled (at one of its awaits) purges that
    message too: it was sent before the interrupt, so nothing of it may play after the clear."""
    start = ms.Start(stream_sid="MZ1", account_sid="AC1", call_sid="CA1", tracks=("inbound",),
                     custom_parameters={}, media_format=ms.MediaFormat("audio/x-mulaw", 8000, 1))
    codec = MediaStreamsBridge()
    codec.stream_sid = "MZ1"
    call = Call(_Sent(), fake_engines(), settings().call, start, codec)  # type: ignore[arg-type]
    call.app_ws = _Sent()  # type: ignore[assignment]
    await call._on_text(relay.Text(token="Hello there. How are", last=False))  # a cycle left open
    submit, barged = call.speaker.submit, []

    async def submit_then_barge_in(chunk: SpeechChunk) -> None:
        await submit(chunk)
        if not barged:  # the caller speaks while the message is being handled
            barged.append(chunk)
            await call.barge_in("speech")

    call.speaker.submit = submit_then_barge_in  # type: ignore[method-assign]
    if kind == "play":
        await call._on_play(relay.Play(source="https://media.example/a.wav"))
    elif kind == "digits":
        await call._on_send_digits("123")
    else:
        await call._on_text(relay.Text(token=" you? Fine", last=False))
    survivors = []
    while True:
        try:
            chunk = call.speaker._receive.receive_nowait()
        except trio.WouldBlock:
            break
        if chunk.cycle >= call.speaker._keep_from_cycle:
            survivors.append(chunk)
    assert barged and survivors == []
    assert call._preemptible == {} and not call._cycle_open
    assert call.chunker.flush() == []  # nothing of the interrupted text is held for the next cycle


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
