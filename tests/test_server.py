"""The server: path, signature, call limit, relayUrl allowlist and graceful shutdown."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketRequest

from relay_bridge import server as server_module
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.engines.schedule import LOAD_WINDOW_S, MIN_WAITS, Priority
from relay_bridge.protocols.signature import twilio_signature
from relay_bridge.server import MediaStreamsServer, ServerSettings, serve_media_streams
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.timeline import Timeline
from relay_bridge.speech.chunker import chunk_text
from tests.harness import (
    APP_URL,
    MemoryListener,
    MemoryNetwork,
    bridge_server,
    fake_engines,
    leaf,
    run_memory_call,
    settings,
)


async def handshake(server: MediaStreamsServer, path: str = "/media",
                    headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """Open a WebSocket to the server; return 101 or the rejection status."""
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        try:
            async with net.connect_bridge(server, path, headers):
                status = 101
        except BaseExceptionGroup as group:
            rejected = leaf(group, ConnectionRejected)
            if not isinstance(rejected, ConnectionRejected):
                raise
            status = rejected.status_code
        nursery.cancel_scope.cancel()
    return status


async def test_only_the_media_path_is_served(autojump_clock: object) -> None:
    server = bridge_server(settings(), fake_engines())
    assert await handshake(server, "/other") == 404
    assert await handshake(server, "/media") == 101


async def test_signature_is_checked_when_an_auth_token_is_configured(autojump_clock: object) -> None:
    token, url = "secret-token", "wss://voice.example.com/media"
    server = bridge_server(settings(server__twilio_auth_token=token, server__public_url=url), fake_engines())
    good = [(b"X-Twilio-Signature", twilio_signature(token, url).encode())]
    bad = [(b"X-Twilio-Signature", twilio_signature("other", url).encode())]
    assert await handshake(server, headers=good) == 101
    assert await handshake(server, headers=bad) == 403
    assert await handshake(server) == 403


async def test_a_signature_for_the_host_header_url_is_refused(autojump_clock: object) -> None:
    """Signatures are checked against public_url only: the Host header is the caller's to choose. Without
    public_url the URL used to be built from the Host header; a token without public_url is now refused."""
    with pytest.raises(ValueError, match="twilio_auth_token needs public_url"):
        ServerSettings(twilio_auth_token="secret-token")
    token, url = "secret-token", "wss://voice.example.com/media"
    server = bridge_server(settings(server__twilio_auth_token=token, server__public_url=url), fake_engines())
    sig = twilio_signature(token, "wss://bridge.test/media")  # what the request's own Host header gives
    assert await handshake(server, headers=[(b"X-Twilio-Signature", sig.encode())]) == 403


async def test_calls_over_the_limit_are_refused(autojump_clock: object) -> None:
    server = bridge_server(settings(server__max_calls=1), fake_engines())
    server.active_calls = 1
    assert await handshake(server) == 503


async def test_a_call_the_cores_cannot_carry_is_refused_and_counted(autojump_clock: object,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Admission control: five calls in progress have used 0.15 of a core each; a sixth would take the
    process past max_cpu_load, so its upgrade is refused with 503 (Twilio then runs the TwiML after
    <Connect>). Once the load has gone, calls are taken again."""
    cpu = [0.0]
    monkeypatch.setattr(server_module, "time", SimpleNamespace(process_time=lambda: cpu[0]))
    engines = fake_engines()
    engines.load.cores = 1
    server = bridge_server(settings(server__max_cpu_load=0.8, server__max_engine_wait_ms=0), engines)
    assert await handshake(server) == 101
    server._count_calls(+5)
    for _ in range(30):
        cpu[0] += 0.75
        engines.load.cpu(cpu[0], trio.current_time())
        await trio.sleep(1)
    assert await handshake(server) == 503  # 6 calls would use 90% of the core
    assert server.refused["load"] == 1
    server._count_calls(-5)
    await trio.sleep(LOAD_WINDOW_S)
    assert await handshake(server) == 101


async def test_a_call_is_refused_while_urgent_engine_work_waits_too_long(autojump_clock: object) -> None:
    """Recognitions the callers wait for queue behind long ones: the latency is gone already."""
    engines = fake_engines()
    server = bridge_server(settings(server__max_cpu_load=0, server__max_engine_wait_ms=300), engines)
    server._count_calls(+2)
    asr = engines.asr_scheduler
    async with trio.open_nursery() as nursery:  # one slot, and finals queue for it 0.5 s each
        async def hold(seconds: float, priority: Priority) -> None:
            async with asr.claim("a", priority):
                await trio.sleep(seconds)
        for _ in range(MIN_WAITS + 1):
            nursery.start_soon(hold, 0.5, Priority.FINAL)
    assert await handshake(server) == 503
    assert server.refused["load"] == 1


@pytest.mark.parametrize(("relay_url", "allowed", "expected"), [
    ("ws://other.test/app", ("ws://other.test/app",), "ws://other.test/app"),
    ("ws://evil.test/app", ("ws://other.test/app",), APP_URL),
])
async def test_relay_url_is_honoured_only_when_allowlisted(autojump_clock: object, relay_url: str,
                                                           allowed: tuple[str, ...], expected: str) -> None:
    reached: list[str] = []

    def app_at(url: str):  # type: ignore[no-untyped-def]
        async def handle(request: WebSocketRequest) -> None:
            reached.append(url)
            ws = await request.accept()
            await ws.get_message()
        return handle

    cfg = settings(server__relay_url_allowlist=allowed)

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(0.2)
        await caller.hang_up()

    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        for url in {APP_URL, relay_url}:
            net.apps[url] = app_at(url)
        server = bridge_server(cfg, fake_engines(), net.connect_app)
        caller = SimulatedCaller("ws://bridge.test/media", Timeline(), custom_parameters={"relayUrl": relay_url})
        await caller.run(script, connect=lambda: net.connect_bridge(server))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert reached == [expected]


@dataclass
class ServedBridge:
    """The real server behind an in-memory listener, serving until ``shutdown`` is set."""

    server: MediaStreamsServer
    net: MemoryNetwork
    listener: MemoryListener
    shutdown: trio.Event
    served: trio.Event

    async def call(self, script: Callable[[SimulatedCaller], Awaitable[None]]) -> None:
        caller = SimulatedCaller("ws://bridge.test/media", Timeline())
        await caller.run(script, connect=lambda: self.net.connect_bridge(self.listener))


async def serve_bridge(nursery: trio.Nursery, grace_s: float) -> ServedBridge:
    net = MemoryNetwork(nursery)
    net.apps[APP_URL] = ScriptedAgent(Timeline()).handle
    server = bridge_server(settings(server__shutdown_grace_s=grace_s), fake_engines(), net.connect_app)
    server.keep_stats = True
    bridge = ServedBridge(server, net, MemoryListener(), trio.Event(), trio.Event())

    async def serve() -> None:
        await serve_media_streams(server, [bridge.listener], bridge.shutdown)
        bridge.served.set()

    nursery.start_soon(serve)
    await trio.sleep(0.1)
    return bridge


async def test_shutdown_stops_accepting_and_drains_calls(autojump_clock: object) -> None:
    """On shutdown the listener closes at once; a call in progress may finish within the grace."""
    refused: list[bool] = []
    async with trio.open_nursery() as nursery:
        bridge = await serve_bridge(nursery, grace_s=5)

        async def script(caller: SimulatedCaller) -> None:
            await caller.wait_agent_done()
            bridge.shutdown.set()
            await caller.pause(0.5)
            try:
                await bridge.listener.connect()
            except OSError:
                refused.append(True)
            await caller.pause(1.0)  # the call goes on during the grace period
            await caller.hang_up()

        await bridge.call(script)
        with trio.fail_after(6):
            await bridge.served.wait()
        nursery.cancel_scope.cancel()
    assert bridge.server.finished[0].end_reason is EndReason.PROVIDER_STOPPED
    assert bridge.listener.closed and refused == [True]


async def test_shutdown_ends_calls_after_the_grace_period(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        bridge = await serve_bridge(nursery, grace_s=2)

        async def script(caller: SimulatedCaller) -> None:
            await caller.wait_agent_done()
            started = trio.current_time()
            bridge.shutdown.set()
            with trio.fail_after(10):
                await caller.wait_bridge_closed()
            assert 1.9 <= trio.current_time() - started <= 3.0

        await bridge.call(script)
        with trio.fail_after(5):
            await bridge.served.wait()
        nursery.cancel_scope.cancel()
    assert bridge.server.active_calls == 0
    assert bridge.server.finished[0].end_reason is EndReason.SHUTDOWN


async def test_a_call_with_no_start_frame_is_closed(autojump_clock: object) -> None:
    server = bridge_server(settings(), fake_engines())
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        async with net.connect_bridge(server) as ws:
            await ws.send_message('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            with trio.fail_after(15):
                await server.wait_idle()
            assert ws.closed is not None
        nursery.cancel_scope.cancel()
    assert server.active_calls == 0


async def test_no_app_url_ends_the_call(autojump_clock: object) -> None:
    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(5):
            await caller.wait_bridge_closed()

    result = await run_memory_call(fake_engines(), settings(server__app_url=""), None, script)
    assert result.stats.end_reason is EndReason.NO_APP_URL


async def test_the_configured_welcome_greeting_is_synthesised_before_any_call(autojump_clock: object) -> None:
    synth = FakeSynthesizer()
    engines = SpeechEngines(FakeTranscriber(), synth)
    greeting = "Welcome to the relay bridge. How can I help you today?"
    cfg = settings(session__welcome_greeting=greeting)
    ready: list[str] = []

    async def script(caller: SimulatedCaller) -> None:
        ready.extend(synth.texts)  # what was synthesised before the call started
        await caller.wait_agent_done()
        await caller.hang_up()

    app = ScriptedAgent(Timeline(), AgentScript(greeting=""))
    result = await run_memory_call(engines, cfg, app.handle, script)
    assert ready == chunk_text(greeting) and len(ready) > 1
    assert synth.texts == ready  # the call spoke the greeting without synthesising it again
    played = [d["text"] for _, n, d in result.stats.events if n == "played"]
    assert played == [c.strip() for c in chunk_text(greeting)]
