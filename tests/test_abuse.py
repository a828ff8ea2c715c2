"""An attacker's view of a call: each defect found that way has a named test here.

Admission (who gets a call slot and when), liveness (peers that stop reading or answering), bounded
work (media faster than real time, bursty speech, long calls) and logs that are safe to keep. The
pure-layer defects (the chunker, hints, field parsing, Telnyx tracks) are tested beside their
modules; ``test_fuzz_*`` fuzz the codecs and whole calls.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from relay_bridge.call import engines as engines_module
from relay_bridge.call.record import MAX_RECORDED_EVENTS, CallStats
from relay_bridge.config import load
from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.fake import FakeTranscriber
from relay_bridge.logs import SafeFormatter
from relay_bridge.protocols import relay
from relay_bridge.protocols import telnyx_media as tx
from relay_bridge.protocols.media_streams import MediaStreamsProvider
from relay_bridge.protocols.signature import twilio_signature
from relay_bridge.server import MediaStreamsServer
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline
from tests.harness import (
    APP_URL,
    MemoryNetwork,
    bridge_server,
    fake_engines,
    leaf,
    run_memory_call,
    settings,
)

TOKEN, PUBLIC_URL = "secret-token", "wss://voice.example.com/media"
ACCOUNT = "AC" + "0" * 32


async def raw_request(server: MediaStreamsServer, request: bytes) -> bytes:
    """Send raw bytes as a client would; return everything the server answers before it closes."""
    client, srv = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, srv)
        await client.send_all(request)
        answer = b""
        with trio.fail_after(5):
            while data := await client.receive_some(65536):
                answer += data
    return answer


def upgrade(path: str = "/media", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: bridge.test", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- admission -------------------------------------------------------------------------------


async def test_a_plain_http_request_is_answered_at_once_and_holds_nothing(autojump_clock: object) -> None:
    server = bridge_server(settings(), fake_engines())
    started = trio.current_time()
    answer = await raw_request(server, b"GET / HTTP/1.1\r\nHost: bridge.test\r\n\r\n")
    assert status_of(answer) == 200 and answer.endswith(b"relay-bridge: accepting calls\n")
    assert trio.current_time() - started < 0.1
    assert status_of(await raw_request(server, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
    assert status_of(await raw_request(server, b"GET /media HTTP/1.1\r\nHost: x\r\n\r\n")) == 426
    assert status_of(await raw_request(server, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    assert status_of(await raw_request(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")) == 405
    assert status_of(await raw_request(server, b"\x16\x03\x01 not http at all\r\n\r\n")) == 400
    assert server.active_calls == 0 and server.pending == 0


async def test_a_query_with_many_fields_is_refused_not_a_crash(autojump_clock: object,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The token lookup used parse_qsl(max_num_fields=64), which raises: one request logged a traceback
    and left its socket open, before any authentication."""
    server = bridge_server(settings(server__allow_unauthenticated=False, server__telnyx_stream_token="t",
                                    server__handshake_timeout_ms=1000), fake_engines())
    query = "&".join(f"f{i}=1" for i in range(500))
    assert status_of(await raw_request(server, upgrade(f"/media?{query}"))) == 403
    assert status_of(await raw_request(server, upgrade(f"/media?{query}&token=t"))) == 101
    assert "connection failed" not in caplog.text


async def test_idle_tcp_connections_take_no_call_slot(autojump_clock: object) -> None:
    """~51 idle connects used to lock out every real call: a slot was taken before the handshake."""
    cfg = settings(server__max_calls=2, server__handshake_timeout_ms=5000)
    app = ScriptedAgent(Timeline())
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[APP_URL] = app.handle
        server = bridge_server(cfg, fake_engines(), net.connect_app)
        server.keep_stats = True
        idle = []
        for _ in range(51):
            client, srv = trio.testing.memory_stream_pair()
            idle.append(client)
            nursery.start_soon(server.handle_stream, srv)
        await trio.sleep(0.5)
        assert server.active_calls == 0 and server.pending == 51

        async def script(caller: SimulatedCaller) -> None:
            await caller.pause(1)
            await caller.hang_up()

        caller = SimulatedCaller("ws://bridge.test/media", Timeline())
        await caller.run(script, connect=lambda: net.connect_bridge(server))
        with trio.fail_after(10):
            await server.wait_idle()  # the idle ones are dropped at the handshake deadline
        nursery.cancel_scope.cancel()
    assert len(server.finished) == 1 and server.finished[0].end_reason is EndReason.PROVIDER_STOPPED
    assert server.refused["timeout"] == 51


async def test_pending_handshakes_are_bounded_in_number(autojump_clock: object) -> None:
    server = bridge_server(settings(server__max_pending_handshakes=3), fake_engines())
    async with trio.open_nursery() as nursery:
        clients = []
        for _ in range(5):
            client, srv = trio.testing.memory_stream_pair()
            clients.append(client)
            nursery.start_soon(server.handle_stream, srv)
        await trio.sleep(0.1)
        assert server.pending == 3 and server.refused["pending"] == 2
        closed = 0
        for client in clients:  # the two beyond the bound were closed at once (trio starts tasks in any order)
            with trio.move_on_after(0.1):
                closed += await client.receive_some(10) == b""
        assert closed == 2
        nursery.cancel_scope.cancel()


async def test_the_wait_for_start_is_bounded_by_the_handshake_timeout(autojump_clock: object) -> None:
    server = bridge_server(settings(server__handshake_timeout_ms=2000), fake_engines())
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        started = trio.current_time()
        async with net.connect_bridge(server) as ws:
            with trio.fail_after(5), pytest.raises(ConnectionClosed):
                await ws.get_message()  # never sends start: closed at the deadline
        assert 2 <= trio.current_time() - started < 3
        nursery.cancel_scope.cancel()
    assert server.refused["timeout"] == 1 and server.calls_total == 0


async def twilio_call(cfg_changes: dict[str, Any], *, headers: list[tuple[bytes, bytes]] | None = None,
                      account_sid: str = ACCOUNT, provider: Any = None) -> tuple[MediaStreamsServer, ScriptedAgent,
                                                                                  MemoryNetwork]:
    """Open a stream with ``headers`` and send connected + start; return once the bridge is idle again."""
    app = ScriptedAgent(Timeline())
    provider = provider or MediaStreamsProvider(stream_sid="MZ1", account_sid=account_sid, call_sid="CA1")
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[APP_URL] = app.handle
        server = bridge_server(settings(**cfg_changes), fake_engines(), net.connect_app)
        server.keep_stats = True
        try:
            async with net.connect_bridge(server, headers=headers) as ws:
                await ws.send_message(provider.connected())
                await ws.send_message(provider.start())
                await trio.sleep(1)
                if not ws.closed:
                    await ws.send_message(provider.stop())
        except BaseExceptionGroup as group:  # refused at the upgrade
            if not isinstance(leaf(group, ConnectionRejected), ConnectionRejected):
                raise
        with trio.fail_after(10):
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    return server, app, net


def signed(url: str = PUBLIC_URL, token: str = TOKEN) -> list[tuple[bytes, bytes]]:
    return [(b"X-Twilio-Signature", twilio_signature(token, url).encode())]


AUTH = {"server__allow_unauthenticated": False, "server__twilio_auth_token": TOKEN, "server__public_url": PUBLIC_URL}


async def test_a_signature_is_accepted_with_and_without_the_default_port(autojump_clock: object) -> None:
    for url in (PUBLIC_URL, "wss://voice.example.com:443/media"):
        server, app, _ = await twilio_call(AUTH, headers=signed(url))
        assert server.calls_total == 1 and len(app.sessions) == 1, url
    server, app, _ = await twilio_call(AUTH, headers=signed("wss://voice.example.com:8443/media"))
    assert server.calls_total == 0 and server.refused["auth"] == 1


async def test_a_start_for_another_account_ends_the_stream(autojump_clock: object) -> None:
    cfg = {**AUTH, "server__twilio_account_sid": ACCOUNT}
    server, app, _ = await twilio_call(cfg, headers=signed(), account_sid="AC" + "1" * 32)
    assert server.calls_total == 0 and app.sessions == [] and server.refused["auth"] == 1
    server, app, _ = await twilio_call(cfg, headers=signed())
    assert server.calls_total == 1 and len(app.sessions) == 1


async def test_without_allow_unauthenticated_an_unsigned_stream_is_refused(autojump_clock: object) -> None:
    server, app, _ = await twilio_call({"server__allow_unauthenticated": False})
    assert server.calls_total == 0 and app.sessions == [] and server.refused["auth"] == 1


def telnyx_provider() -> tx.TelnyxMediaProvider:
    return tx.TelnyxMediaProvider(stream_id="s1", call_control_id="v3:c1", call_session_id="cs1", user_id="u1")


@pytest.mark.parametrize(("headers", "path", "admitted"), [
    ([(b"Authorization", b"Bearer tx-token")], "/media", True),
    ([], "/media?token=tx-token", True),
    ([(b"Authorization", b"Bearer wrong")], "/media", False),
    ([], "/media?token=wrong", False),
    ([], "/media", False),
])
async def test_a_telnyx_stream_must_present_its_token(autojump_clock: object, headers: list[tuple[bytes, bytes]],
                                                       path: str, admitted: bool) -> None:
    cfg = settings(server__allow_unauthenticated=False, server__telnyx_stream_token="tx-token")
    app = ScriptedAgent(Timeline())
    provider = telnyx_provider()
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[APP_URL] = app.handle
        server = bridge_server(cfg, fake_engines(), net.connect_app)
        try:
            async with net.connect_bridge(server, path, headers) as ws:
                await ws.send_message(provider.connected())
                await ws.send_message(provider.start())
                await trio.sleep(1)
                await ws.send_message(provider.stop())
        except BaseException as exc:  # a refused upgrade raises ConnectionRejected out of the client
            assert not admitted, exc
        with trio.fail_after(10):
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    assert (server.calls_total, len(app.sessions)) == ((1, 1) if admitted else (0, 0))


async def test_a_connection_signed_by_twilio_cannot_open_a_telnyx_stream(autojump_clock: object) -> None:
    cfg = {**AUTH, "server__telnyx_stream_token": "tx-token"}
    server, app, _ = await twilio_call(cfg, headers=signed(), provider=telnyx_provider())
    assert server.calls_total == 0 and app.sessions == [] and server.refused["auth"] == 1


async def test_the_bridge_signs_its_upgrade_to_the_app(autojump_clock: object) -> None:
    _, app, net = await twilio_call(AUTH, headers=signed())
    assert len(app.sessions) == 1
    assert net.app_headers == [[(b"X-Twilio-Signature", twilio_signature(TOKEN, APP_URL).encode())]]


# -- liveness --------------------------------------------------------------------------------


def raw_app(*, read: bool, answer_pings: bool) -> Callable[..., Any]:
    """An app connector whose app accepts, then reads (or not) and answers pings (or not)."""

    @asynccontextmanager
    async def connect(url: str, timeout_s: float, headers: object = None) -> AsyncIterator[WebSocketConnection]:
        # lockstep: a send completes only when the other side reads it, like a full TCP window
        ours, theirs = trio.testing.lockstep_stream_pair()

        async def app() -> None:
            ws = WSConnection(ConnectionType.SERVER)
            while data := await theirs.receive_some(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        await theirs.send_all(ws.send(AcceptConnection()))
                    elif isinstance(event, Ping) and answer_pings:
                        await theirs.send_all(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        return
                if not read:
                    await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(app)
            ws = await wrap_client_stream(nursery, ours, "app.test", "/relay")
            yield ws
            nursery.cancel_scope.cancel()

    return connect


async def test_an_app_that_stops_reading_does_not_hold_the_call_after_hangup(autojump_clock: object,
                                                                             clips: dict[str, Clip]) -> None:
    cfg = settings(session__events="speaker-events")

    async def script(caller: SimulatedCaller) -> None:
        await caller.say(clips["agent-pass"])  # speaker events and a prompt to an app that reads nothing
        await caller.hang_up()

    async with trio.open_nursery() as nursery:
        server = bridge_server(cfg, fake_engines(), raw_app(read=False, answer_pings=False))
        server.keep_stats = True
        net = MemoryNetwork(nursery)
        caller = SimulatedCaller("ws://bridge.test/media", Timeline())
        await caller.run(script, connect=lambda: net.connect_bridge(server))
        hung_up = trio.current_time()
        with trio.fail_after(30):
            await server.wait_idle()
        gone_after = trio.current_time() - hung_up
        nursery.cancel_scope.cancel()
    assert gone_after < 10
    assert server.finished[0].end_reason in (EndReason.APP_STUCK, EndReason.PROVIDER_STOPPED)


async def test_a_half_open_app_socket_ends_the_call(autojump_clock: object) -> None:
    cfg = settings(server__ping_interval_ms=2000, server__pong_timeout_ms=3000)

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_bridge_closed()

    async with trio.open_nursery() as nursery:
        server = bridge_server(cfg, fake_engines(), raw_app(read=True, answer_pings=False))
        server.keep_stats = True
        net = MemoryNetwork(nursery)
        caller = SimulatedCaller("ws://bridge.test/media", Timeline())
        with trio.fail_after(30):
            await caller.run(script, connect=lambda: net.connect_bridge(server))
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    assert server.finished[0].end_reason is EndReason.APP_NO_PONG


async def test_a_healthy_app_streaming_a_long_reply_is_not_taken_for_dead(autojump_clock: object) -> None:
    """While the bridge's speech queue is full it stops reading the app, pongs included: no pong is no proof
    the app is gone then."""
    from tests.harness import AppLog, scripted_app

    log = AppLog()

    async def app_script(ws: WebSocketConnection, log: AppLog) -> None:
        for i in range(300):
            await ws.send_message(relay.text(f"This is sentence number {i}. ", last=i == 299))

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(60)
        await caller.hang_up()

    cfg = settings(server__ping_interval_ms=2000, server__pong_timeout_ms=2000)
    result = await run_memory_call(fake_engines(), cfg, scripted_app(app_script, log), script)
    assert result.stats.end_reason is EndReason.PROVIDER_STOPPED


async def test_a_call_is_ended_at_the_maximum_call_duration(autojump_clock: object) -> None:
    app = ScriptedAgent(Timeline())

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_bridge_closed()

    result = await run_memory_call(fake_engines(), settings(server__max_call_duration_s=60), app.handle, script)
    assert result.stats.end_reason is EndReason.MAX_DURATION
    assert app.sessions[0].errors[-1].startswith("Session ended")


# -- bounded work ----------------------------------------------------------------------------


async def test_media_faster_than_real_time_is_dropped_and_counted(autojump_clock: object) -> None:
    """Six big frames used to take RSS from 64 to 205 MB; frames far ahead of real time are now dropped."""
    transcriber = FakeTranscriber()
    engines = fake_engines()
    engines.transcriber = transcriber
    app = ScriptedAgent(Timeline())
    provider = MediaStreamsProvider(stream_sid="MZ1", account_sid=ACCOUNT, call_sid="CA1")
    speechlike = np.full(8000 * 60, 0xA0, dtype=np.uint8).tobytes()  # a minute of loud mu-law
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[APP_URL] = app.handle
        server = bridge_server(settings(), engines, net.connect_app)
        server.keep_stats = True
        async with net.connect_bridge(server) as ws:
            await ws.send_message(provider.connected())
            await ws.send_message(provider.start())
            for _ in range(6):  # six frames of a minute each, all at once
                await ws.send_message(provider.media(speechlike, 0))
            for i in range(200):  # then 200 ordinary 20 ms frames, all at once
                await ws.send_message(provider.media(speechlike[:160], 20 * i))
            await ws.send_message(provider.stop())
            with trio.fail_after(10):
                await server.wait_idle()
        nursery.cancel_scope.cancel()
    stats = server.finished[0]
    assert stats.inbound_dropped >= 6 + 200 - 100  # at most the 2 s burst allowance got through
    assert sum(transcriber.calls) <= 16000 * 3  # nothing like six minutes of audio was recognised


def bursty(clip: Clip, seconds: float) -> Clip:
    """Speech in 100 ms bursts with 200 ms pauses: a pause long enough to start a speculation each time."""
    speech = clip.samples[clip.speech_start: clip.speech_end]
    out = []
    for i in range(int(seconds / 0.3)):
        burst = speech[(i * 800) % max(1, len(speech) - 800):][:800]
        out += [burst, np.zeros(1600, dtype=np.int16)]
    samples = np.concatenate(out)
    return Clip("bursty", "", samples, 0, len(samples))


async def test_bursty_speech_does_not_queue_speculative_recognitions(autojump_clock: object,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     clips: dict[str, Clip]) -> None:
    """100 ms on, 200 ms off used to queue 200 recognitions for 2 prompts; abandoned ones now leave the queue."""

    async def slow_worker(fn: Callable[[], Any], limiter: trio.CapacityLimiter | engines_module.Claim) -> Any:
        async with limiter:
            await trio.sleep(0.5)  # a decode of half a second, in simulated time
            return fn()

    monkeypatch.setattr(engines_module, "run_in_worker", slow_worker)
    transcriber = FakeTranscriber()
    engines = fake_engines()
    engines.transcriber = transcriber
    app = ScriptedAgent(Timeline(), AgentScript(greeting=""))  # the caller talks, the agent listens

    async def script(caller: SimulatedCaller) -> None:
        await caller.say(bursty(clips["agent-pass"], 30))
        await caller.pause(3)
        await caller.hang_up()

    # 160 ms: each 200 ms pause starts a speculation just before the speech resumes.
    result = await run_memory_call(engines, settings(vad__speculate_ms=160), app.handle, script)
    pauses = result.stats.speculations_wasted + result.stats.speculations_used
    assert pauses > 50  # the endpointer did see a probable end in almost every gap
    assert len(transcriber.calls) < pauses / 4  # but most speculations never ran


async def test_call_stats_stay_bounded(autojump_clock: object) -> None:
    """A long call records an event per mark echo and prompt: the timeline keeps the first ones, counts all,
    and cuts long texts (1,000 plays of 8 K URLs used to keep 24 MB)."""
    stats = CallStats()
    for _ in range(MAX_RECORDED_EVENTS * 3):
        stats.record("played", text="chunk")
    assert len(stats.events) == MAX_RECORDED_EVENTS and stats.count("played") == MAX_RECORDED_EVENTS * 3
    stats = CallStats()
    stats.record("play", source="http://x/" + "a" * 8000, loop=1)
    assert len(stats.events[0][2]["source"]) <= 200 and stats.events[0][2]["loop"] == 1


async def test_oversized_hints_and_greetings_are_refused_with_an_error(autojump_clock: object) -> None:
    """129 kB of hints held the ASR slot for 2.3 s per recognition; a 24,000-character greeting froze the loop."""
    from tests.harness import AppLog, scripted_app

    log = AppLog()

    async def app_script(ws: WebSocketConnection, log: AppLog) -> None:
        await trio.sleep(1)

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(2)
        await caller.hang_up()

    engines = fake_engines()
    params = {"hints": "word, " * 25_000, "welcomeGreeting": "x" * 24_000}
    await run_memory_call(engines, settings(), scripted_app(app_script, log), script, custom_parameters=params)
    errors = [f["description"] for f in log.of("error")]
    assert any("customParameters.hints' holds 150000 characters" in e for e in errors)
    assert any("customParameters.welcomeGreeting' holds 24000 characters" in e for e in errors)
    assert engines.synthesizer.texts == []  # nothing of the greeting was spoken
    assert engines.transcriber.hints == []  # the hints never reached a recognition
    # The same limits hold for the config's session defaults (call parameters stop at the codec's limit).
    from relay_bridge.settings import SessionSettings

    with pytest.raises(ValueError, match="hints must be at most 4096"):
        SessionSettings(hints="word, " * 1000)
    with pytest.raises(ValueError, match="welcome_greeting must be at most 4096"):
        SessionSettings(welcome_greeting="x" * 4097)


# -- logs ------------------------------------------------------------------------------------


def test_a_call_sid_with_a_newline_cannot_forge_a_log_line() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("relay_bridge.call.call", logging.INFO, __file__, 1, "[%s MZ1] call started",
                               ("CA1\nERROR bridge: forged",), None)
    line = formatter.format(record)
    assert "\n" not in line and "CA1\\nERROR bridge: forged" in line


async def test_transcripts_are_not_logged_at_info(autojump_clock: object, caplog: pytest.LogCaptureFixture,
                                                  clips: dict[str, Clip]) -> None:
    app = ScriptedAgent(Timeline())
    caplog.set_level(logging.INFO)
    logging.getLogger("relay_bridge.transcripts").setLevel(logging.WARNING)  # what logs.configure does at INFO
    try:
        async def script(caller: SimulatedCaller) -> None:
            await caller.say(clips["agent-pass"])
            await caller.wait_agent_done()
            await caller.hang_up()

        result = await run_memory_call(fake_engines(("a secret account number",)), settings(), app.handle, script)
    finally:
        logging.getLogger("relay_bridge.transcripts").setLevel(logging.NOTSET)
    assert result.stats.count("prompt") == 1
    assert "secret account number" not in caplog.text
    assert "turn 1: end of speech to prompt" in caplog.text  # the turn is logged, its words are not


async def test_a_peer_cannot_flood_the_log(autojump_clock: object, caplog: pytest.LogCaptureFixture) -> None:
    app = ScriptedAgent(Timeline())
    provider = MediaStreamsProvider(stream_sid="MZ1", account_sid=ACCOUNT, call_sid="CA1")
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        net.apps[APP_URL] = app.handle
        server = bridge_server(settings(), fake_engines(), net.connect_app)
        async with net.connect_bridge(server) as ws:
            await ws.send_message(provider.connected())
            await ws.send_message(provider.start())
            for i in range(500):
                await ws.send_message(provider.mark(f"never-sent-{i}"))
                await ws.send_message("not json")
            await ws.send_message(provider.stop())
            with trio.fail_after(10):
                await server.wait_idle()
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("echo of unknown mark" in w for w in warnings) == 10
    assert sum("invalid Media Streams" in w for w in warnings) == 10
    assert any("490 invalid provider frames, 490 unknown mark echoes" in w for w in warnings)


def test_logs_configure_keeps_transcripts_quiet_at_info_only() -> None:
    from relay_bridge import logs

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("INFO")
        assert not logging.getLogger("relay_bridge.transcripts").isEnabledFor(logging.INFO)
        logs.configure("INFO", log_transcripts=True)
        assert logging.getLogger("relay_bridge.transcripts").isEnabledFor(logging.INFO)
        logs.configure("DEBUG")
        assert logging.getLogger("relay_bridge.transcripts").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:], root.level = handlers, level
        logging.getLogger("relay_bridge.transcripts").setLevel(logging.NOTSET)


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_come_from_files_the_environment_or_systemd_credentials(tmp_path: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from relay_bridge.config import ConfigError

    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\npublic_url = "{PUBLIC_URL}"\ntwilio_auth_token_file = "{secret}"\n')
    assert load(cfg).server.twilio_auth_token == "from-a-file"
    monkeypatch.setenv("RELAY_BRIDGE_TELNYX_STREAM_TOKEN", "from-the-environment")
    assert load(cfg).server.telnyx_stream_token == "from-the-environment"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "telnyx_stream_token").write_text("from-systemd")
    monkeypatch.delenv("RELAY_BRIDGE_TELNYX_STREAM_TOKEN")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load(cfg).server.telnyx_stream_token == "from-systemd"
    cfg.write_text(f'[server]\npublic_url = "{PUBLIC_URL}"\ntwilio_auth_token = "inline"\n'
                   f'twilio_auth_token_file = "{secret}"\n')
    with pytest.raises(ConfigError, match="given twice"):
        load(cfg)
    cfg.write_text(f'[server]\ntelnyx_stream_token_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match=r"server\.telnyx_stream_token_file: cannot read"):
        load(cfg)


# -- process ---------------------------------------------------------------------------------


def test_abandoned_engine_work_is_waited_for_before_the_process_exits() -> None:
    """A decode abandoned by an ended call used to be killed mid-call into the native runtime at exit
    (SIGABRT, "terminate called without an active exception")."""
    import threading
    import time

    from relay_bridge.call.engines import run_in_worker, wait_engines_idle

    finished = threading.Event()

    def decode() -> None:
        time.sleep(0.3)
        finished.set()

    async def main() -> None:
        with trio.move_on_after(0.05):
            await run_in_worker(decode, trio.CapacityLimiter(1))

    trio.run(main)
    assert not finished.is_set()  # abandoned: still running after the run ended
    assert wait_engines_idle(5) and finished.is_set()


def test_a_pong_refused_on_a_closing_socket_is_not_a_failed_connection() -> None:
    from wsproto.utilities import LocalProtocolError

    from relay_bridge.protocols.wsquirks import closing_pongs_only

    pong = LocalProtocolError("Event Pong(payload=b'') cannot be sent in state ConnectionState.LOCAL_CLOSING.")
    assert closing_pongs_only(ExceptionGroup("x", [ExceptionGroup("y", [pong])]))
    assert not closing_pongs_only(ExceptionGroup("x", [pong, ValueError("a real failure")]))
