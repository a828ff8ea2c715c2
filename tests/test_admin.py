"""The operator's endpoints: /metrics moves as calls do, /healthz and /readyz say what they promise."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import WebSocketRequest, open_websocket_url

from relay_bridge.admin import STALL_MEMORY_S, STALL_S, Admin, serve_admin
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.loopback import run_loopback_call
from relay_bridge.metrics import Metrics
from relay_bridge.server import MediaStreamsServer, serve_media_streams
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline
from tests.harness import fake_engines, run_memory_call, settings
from tests.test_hold import reply_with_speech_over_it

UPGRADE = (b"GET /media HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def get(stream: trio.abc.Stream, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    """One request on ``stream``: the status, headers (lowercased names) and body."""
    await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
    raw = b""
    while chunk := await stream.receive_some():
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body.decode()


async def ask(admin: Admin, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    """A request answered by ``admin`` over an in-memory connection."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admin.handle, server)
        return await get(client, path, method)


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and labels (parsed by prometheus_client)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


async def scrape(admin: Admin) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = await ask(admin, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(body)


# --- whole calls on loopback, scraped over TCP ------------------------------------------------------


async def test_metrics_move_as_loopback_calls_do(clips: dict[str, Clip]) -> None:
    engines = SpeechEngines(FakeTranscriber(script=("what time is it",)), FakeSynthesizer())
    admin = Admin(engines.metrics)
    cfg = settings(server__app_url="", session__partial_prompts=True)

    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(20):
            await caller.wait_agent_done(quiet_s=0.4)
            await caller.say(clips["agent-pass"])
            await caller.wait_agent_done(quiet_s=0.4)
        await caller.hang_up()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(serve_admin, admin, listeners)
        port = listeners[0].socket.getsockname()[1]
        for _ in range(2):
            call = await run_loopback_call(engines, cfg, script)
            assert call.stats.end_reason is EndReason.PROVIDER_STOPPED
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            status, _, body = await get(stream, "/metrics")
        nursery.cancel_scope.cancel()
    assert status == 200
    scraped = samples(body)
    assert value(scraped, "relay_bridge_calls_total", reason="provider_stopped") == 2
    assert value(scraped, "relay_bridge_calls_total", reason="app_ended") == 0
    assert value(scraped, "relay_bridge_calls_active") == 0
    # One turn a call: its prompt, the app's first token after it, and the reply's first audio.
    for name in ("end_of_speech_to_prompt", "app_first_token", "first_token_to_audio"):
        assert value(scraped, f"relay_bridge_{name}_seconds_count") == 2, name
        assert 0 < value(scraped, f"relay_bridge_{name}_seconds_sum") < 2 * 3.0, name
    assert value(scraped, "relay_bridge_end_of_speech_to_prompt_seconds_bucket", le="+Inf") == 2
    decodes = sum(value(scraped, "relay_bridge_asr_decode_seconds_count", work=w)
                  for w in ("final", "speculative", "partial"))
    waits = sum(value(scraped, "relay_bridge_asr_queue_wait_seconds_count", work=w)
                for w in ("final", "speculative", "partial"))
    # Every decode waited for its slot first; end-of-turn decisions and work given up also wait.
    assert waits >= decodes >= 2 + value(scraped, "relay_bridge_partial_prompts_total")
    assert value(scraped, "relay_bridge_partial_prompts_total") >= 2  # the clip is 1.9 s long: partials
    assert value(scraped, "relay_bridge_tts_synthesis_seconds_count") >= 4  # greeting and reply, twice
    assert value(scraped, "relay_bridge_onset_to_clear_seconds_count") == 0  # nobody spoke over the agent
    assert value(scraped, "relay_bridge_inbound_frames_dropped_total") == 0
    assert value(scraped, "relay_bridge_outbound_frames_late_total") == 0
    assert value(scraped, "relay_bridge_error_messages_total", code="64107") == 0


# --- what each counter counts -----------------------------------------------------------------------


async def test_speech_over_the_agent_is_timed_from_its_onset_to_the_clear(autojump_clock: object,
                                                                        clips: dict[str, Clip]) -> None:
    session, result = await reply_with_speech_over_it(clips["agent-pass"], "stop please")
    assert len(session.interrupts) == 1
    scraped = await scrape(Admin(result.server.metrics))
    assert value(scraped, "relay_bridge_onset_to_clear_seconds_count") == 1
    # The hold clears at the first voiced frames the VAD confirms (speech_start_ms), well within 0.2 s.
    assert value(scraped, "relay_bridge_onset_to_clear_seconds_sum") < 0.2


async def test_app_failures_and_error_messages_are_counted(autojump_clock: object) -> None:
    engines = fake_engines()
    admin = Admin(engines.metrics)

    async def talk(caller: SimulatedCaller) -> None:
        await caller.pause(1.0)
        await caller.hang_up()

    async def app(request: WebSocketRequest) -> None:  # one frame that is not JSON, then the session ends
        ws = await request.accept()
        await ws.get_message()  # setup
        await ws.send_message("not json")
        await ws.send_message('{"type": "end"}')
        await trio.sleep(1)

    await run_memory_call(engines, settings(), app, talk)
    await run_memory_call(engines, settings(server__app_url="ws://nowhere.test/app"), None, talk)
    scraped = await scrape(admin)
    assert value(scraped, "relay_bridge_error_messages_total", code="64107") == 1
    assert value(scraped, "relay_bridge_calls_total", reason="app_ended") == 1
    assert value(scraped, "relay_bridge_calls_total", reason="app_unreachable") == 1
    assert value(scraped, "relay_bridge_app_connect_failures_total") == 1


# --- health and readiness ---------------------------------------------------------------------------


async def test_readyz_follows_start_up_capacity_and_drain() -> None:
    engines = fake_engines()
    admin = Admin(engines.metrics)
    assert (await ask(admin, "/readyz"))[:3:2] == (503, "not ready: loading models\n")
    assert (await ask(admin, "/healthz"))[0] == 200  # alive while the models load

    cfg = settings(server__max_calls=1, server__shutdown_grace_s=30.0, server__app_url="")
    agent = ScriptedAgent(Timeline(), AgentScript(greeting="Hello there."))
    ready: list[tuple[int, str]] = []
    async with trio.open_nursery() as nursery:
        app_port = await nursery.start(agent.serve, "127.0.0.1", 0)
        server_settings = dataclasses.replace(cfg.server, app_url=f"ws://127.0.0.1:{app_port}")
        server = MediaStreamsServer(server_settings, cfg.call, engines)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        shutdown = trio.Event()
        await nursery.start(serve_media_streams, server, listeners, shutdown)
        admin.server = server
        ready.append((await ask(admin, "/readyz"))[:3:2])
        port = listeners[0].socket.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/media"

        async with open_websocket_url(url):
            pass  # a stream that closes before its start: refused, counted as "start"

        async def script(caller: SimulatedCaller) -> None:
            await caller.wait_agent_audio()
            ready.append((await ask(admin, "/readyz"))[:3:2])  # the one call slot is taken
            async with await trio.open_tcp_stream("127.0.0.1", port) as other:  # a second call: no room
                await other.send_all(UPGRADE)
                assert (await other.receive_some()).startswith(b"HTTP/1.1 503 ")
            shutdown.set()
            await trio.sleep(0.2)
            ready.append((await ask(admin, "/readyz"))[:3:2])  # draining, the call still in progress
            await caller.hang_up()

        await SimulatedCaller(url, Timeline()).run(script)
        with trio.fail_after(10):
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    scraped = await scrape(admin)
    assert value(scraped, "relay_bridge_connections_refused_total", cause="start") == 1
    assert value(scraped, "relay_bridge_connections_refused_total", cause="capacity") == 1
    assert value(scraped, "relay_bridge_connections_refused_total", cause="auth") == 0
    assert ready == [(200, "ready: 0 call(s) in progress\n"),
                     (503, "not ready: 1 calls in progress (server.max_calls)\n"),
                     (503, "not ready: the server is shutting down\n")]


async def test_healthz_fails_after_the_event_loop_was_blocked_and_recovers_later(autojump_clock: object) -> None:
    admin = Admin(Metrics())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admin.heartbeat)
        await trio.sleep(5)
        assert (await ask(admin, "/healthz"))[:3:2] == (200, "alive\n")
        autojump_clock.jump(STALL_S + 1.0)  # type: ignore[attr-defined]  # time passes, no task runs: a blocked loop
        status, _, body = await ask(admin, "/healthz")
        assert status == 503 and body.startswith("event loop stalled: its heartbeat")
        await trio.sleep(1)
        status, _, body = await ask(admin, "/healthz")  # it has run since, late: still reported a while
        assert status == 503 and re.fullmatch(r"event loop stalled: its heartbeat ran 1\.\d s late 1 s ago\n", body)
        await trio.sleep(STALL_MEMORY_S)
        assert (await ask(admin, "/healthz"))[:3:2] == (200, "alive\n")
        nursery.cancel_scope.cancel()


def test_healthz_sees_a_really_blocked_loop() -> None:
    """The heartbeat or the request may run first after the block: either way the answer is 503."""
    async def main() -> tuple[int, str]:
        admin = Admin(Metrics())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admin.heartbeat)
            await trio.sleep(0.3)
            time.sleep(STALL_S + 0.6)  # noqa: ASYNC251 - the loop blocked: no task runs
            status, _, body = await ask(admin, "/healthz")
            nursery.cancel_scope.cancel()
        return status, body

    status, body = trio.run(main)
    assert status == 503 and body.startswith("event loop stalled"), body


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nothing", 404), ("POST", "/metrics", 405), ("HEAD", "/readyz", 503), ("HEAD", "/metrics", 200)])
async def test_other_requests_get_plain_answers(method: str, path: str, status: int) -> None:
    admin = Admin(Metrics())
    got, headers, body = await ask(admin, path, method)
    assert got == status and headers["connection"] == "close"
    assert body == "" if method == "HEAD" else body


async def test_a_bad_request_is_answered_400() -> None:
    admin = Admin(Metrics())
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admin.handle, server)
        await client.send_all(b"\x00\x01 nonsense\r\n\r\n")
        raw = b""
        while chunk := await client.receive_some():
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 400 ")

