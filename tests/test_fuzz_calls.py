"""Whole calls under fuzzing: hostile frames from both sides, and a healthy call beside them.

Each example runs, in memory under the mock clock, one call whose provider and app both send a
Hypothesis-chosen mix of valid frames, mutated frames and garbage, and beside it one ordinary call
in the same server. The properties:

- nothing raises out of a call (the server's "connection failed" backstop never fires),
- every call ends, and the fuzzed one within its time bounds,
- the number of live tasks stays bounded while the fuzzed call runs,
- the healthy call is untouched: its greeting is paced out in full at 20 ms a frame, and it gets
  its prompt.

``make fuzz`` runs many more examples, randomly chosen, than ``make test``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from relay_bridge.call import engines
from relay_bridge.daemon import task_count
from relay_bridge.protocols import relay
from relay_bridge.protocols.media_streams import MediaStreamsProvider
from relay_bridge.protocols.telnyx_media import TelnyxMediaProvider
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline
from tests.harness import MemoryNetwork, bridge_server, fake_engines, fuzz_settings
from tests.harness import settings as bridge_settings

EXAMPLES = fuzz_settings(ci=25, fuzz=100,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HEALTHY_APP = "ws://healthy.test/relay"
FUZZED_APP = "ws://fuzzed.test/relay"
T = TypeVar("T")
MAX_TASKS = 400  # two calls' worth of tasks with generous room; an unbounded spawn blows far past it

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                      st.floats(allow_nan=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                          max_leaves=12)
hostile_text = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["\ud800", "a\nb", "\x00", "9" * 5000, "x" * 30_000, "[" * 5000, "{}", "null", "[]", '"'] ),
)


def mutate(frame: dict[str, Any], key_path: Sequence[str], value: Any) -> str:
    """``frame`` with the field at ``key_path`` replaced by ``value`` (or removed when value is ...)."""
    obj: Any = json.loads(json.dumps(frame))
    target = obj
    for key in key_path[:-1]:
        if not isinstance(target, dict) or key not in target:
            return json.dumps(obj)
        target = target[key]
    if isinstance(target, dict):
        if value is Ellipsis:
            target.pop(key_path[-1], None)
        else:
            target[key_path[-1]] = value
    return json.dumps(obj, ensure_ascii=True)


Action = tuple[str, Any]


@st.composite
def provider_actions(draw: st.DrawFn) -> list[Action]:
    """What a hostile provider does after its start: valid frames, mutated ones and garbage."""
    actions: list[Action] = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["media", "media", "burst", "dtmf", "mark", "mutated", "garbage", "binary",
                                     "stop"]))
        if kind == "media":
            actions.append((kind, draw(st.binary(min_size=0, max_size=400))))
        elif kind == "burst":
            actions.append((kind, draw(st.integers(160, 200_000))))
        elif kind == "dtmf":
            actions.append((kind, draw(st.sampled_from("0123456789*#ABCD"))))
        elif kind == "mark":
            actions.append((kind, draw(hostile_text)))
        elif kind == "mutated":
            base = draw(st.sampled_from(["media", "dtmf", "mark", "start", "connected"]))
            path = draw(st.sampled_from([["event"], ["media", "payload"], ["media", "chunk"], ["media", "track"],
                                         ["sequenceNumber"], ["streamSid"], ["stream_id"], ["dtmf", "digit"],
                                         ["mark", "name"], ["start", "customParameters"], ["start", "callSid"],
                                         ["start", "media_format"]]))
            actions.append((kind, (base, path, draw(st.one_of(json_value, hostile_text, st.just(Ellipsis))))))
        elif kind == "garbage":
            actions.append((kind, draw(hostile_text)))
        elif kind == "binary":
            actions.append((kind, draw(st.binary(max_size=64))))
        else:
            actions.append((kind, None))
    return actions


def render(codec: Any, action: Action) -> str | bytes:
    kind, arg = action
    if kind == "media":
        return str(codec.media(arg, 0))
    if kind == "burst":
        return str(codec.media(bytes([0xA0]) * arg, 0))
    if kind == "dtmf":
        return str(codec.dtmf(arg))
    if kind == "mark":
        return str(codec.mark(arg))
    if kind == "mutated":
        base, path, value = arg
        frame = {"media": lambda: codec.media(b"\xff" * 160, 0), "dtmf": lambda: codec.dtmf("1"),
                 "mark": lambda: codec.mark("m"), "start": codec.start, "connected": codec.connected}[base]()
        return mutate(json.loads(frame), path, value)
    if kind in ("garbage", "binary"):
        return arg  # type: ignore[no-any-return]
    return str(codec.stop())


@st.composite
def app_frames(draw: st.DrawFn) -> list[str | bytes]:
    """Frames a hostile app sends after setup."""
    frames: list[str | bytes] = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["text", "text", "play", "digits", "language", "end", "mutated", "garbage"]))
        if kind == "text":
            frames.append(relay.text(draw(hostile_text), last=draw(st.booleans())))
        elif kind == "play":
            frames.append(json.dumps({"type": "play", "source": draw(st.one_of(
                hostile_text, st.sampled_from(["http://127.0.0.1/x.wav", "file:///etc/passwd", "https://\ud800/"])))},
                ensure_ascii=True))
        elif kind == "digits":
            frames.append(json.dumps({"type": "sendDigits", "digits": draw(hostile_text)}, ensure_ascii=True))
        elif kind == "language":
            frames.append(json.dumps({"type": "language", "ttsLanguage": draw(hostile_text)}, ensure_ascii=True))
        elif kind == "end":
            frames.append(json.dumps({"type": "end", "handoffData": draw(json_value)}, ensure_ascii=True))
        elif kind == "mutated":
            base = json.loads(draw(st.sampled_from([relay.text("hi", last=True), relay.send_digits("12"),
                                                    relay.end("x")])))
            key = draw(st.sampled_from(["type", "token", "last", "lang", "interruptible", "preemptible", "digits",
                                        "handoffData", "loop"]))
            frames.append(mutate(base, [key], draw(st.one_of(json_value, hostile_text, st.just(Ellipsis)))))
        else:
            frames.append(draw(hostile_text))
    return frames


def sendable(frame: str | bytes) -> str | bytes:
    """A WebSocket text frame must be UTF-8: a peer cannot send a lone surrogate raw, only \\u-escaped."""
    if isinstance(frame, bytes):
        return frame
    try:
        frame.encode()
    except UnicodeEncodeError:
        try:
            return json.dumps(json.loads(frame), ensure_ascii=True)
        except (ValueError, RecursionError):
            return frame.encode("utf-8", "backslashreplace").decode()
    return frame


async def inline(fn: Callable[[], T], limiter: trio.CapacityLimiter | engines.Claim) -> T:
    """Engine work on the event loop: under the mock clock a worker thread would let time race ahead."""
    async with limiter:
        await trio.lowlevel.checkpoint()
        return fn()


def healthy_caller_script(clip: Clip) -> Any:
    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done()
        await caller.say(clip)
        await caller.wait_agent_done()
        await caller.hang_up()

    return script


async def fuzzed_call(net: MemoryNetwork, server: Any, provider: Sequence[Action], app: Sequence[str | bytes],
                      telnyx: bool) -> None:
    async def app_handler(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        try:
            await ws.get_message()  # setup
            for frame in app:
                await ws.send_message(sendable(frame))
                await trio.sleep(0.05)
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    net.apps[FUZZED_APP] = app_handler
    codec: Any = TelnyxMediaProvider(stream_id="s1", call_control_id="v3:c1", call_session_id="cs1", user_id="u1") \
        if telnyx else MediaStreamsProvider(stream_sid="MZ9", account_sid="AC" + "9" * 32, call_sid="CA9")
    async with net.connect_bridge(server) as ws:
        try:
            await ws.send_message(codec.connected())
            await ws.send_message(codec.start({"relayUrl": FUZZED_APP}))
            for action in provider:
                await ws.send_message(sendable(render(codec, action)))
                await trio.sleep(0.02)
            await trio.sleep(1)
            await ws.send_message(codec.stop())
        except ConnectionClosed:
            pass


@pytest.mark.parametrize("telnyx", [False, True], ids=["twilio", "telnyx"])
@EXAMPLES
@given(data=st.data())
def test_fuzzed_calls_never_raise_and_leave_a_healthy_call_alone(telnyx: bool, data: st.DataObject,
                                                                 clips: dict[str, Clip],
                                                                 caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    provider = data.draw(provider_actions(), label="provider")
    app = data.draw(app_frames(), label="app")
    monkeypatch.setattr(engines, "run_in_worker", inline)  # as under the autojump_clock fixture (conftest)
    caplog.clear()
    peak: list[int] = [0]

    async def main() -> None:
        cfg = bridge_settings(server__app_url=HEALTHY_APP, server__relay_url_allowlist=(FUZZED_APP,),
                              server__handshake_timeout_ms=2000)
        healthy = ScriptedAgent(Timeline(), AgentScript(greeting="Hello there, this is a paced greeting."))
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(nursery)
            net.apps[HEALTHY_APP] = healthy.handle
            server = bridge_server(cfg, fake_engines(), net.connect_app)
            server.keep_stats = True

            async def watch() -> None:
                while True:
                    peak[0] = max(peak[0], task_count())
                    await trio.sleep(0.05)

            nursery.start_soon(watch)
            caller = SimulatedCaller("ws://bridge.test/media", Timeline())
            with trio.fail_after(120):
                async with trio.open_nursery() as calls:
                    calls.start_soon(caller.run, healthy_caller_script(clips["agent-pass"]),
                                     lambda: net.connect_bridge(server))
                    calls.start_soon(fuzzed_call, net, server, provider, app, telnyx)
                await server.wait_idle()
            nursery.cancel_scope.cancel()
        assert len(healthy.sessions) == 1 and len(healthy.sessions[0].prompts) == 1
        arrivals = np.diff(caller.ear.media_arrivals)
        assert len(caller.ear.media_arrivals) > 50
        # Paced at 20 ms: the only gap longer than a frame is the caller's turn between greeting and reply.
        assert int(np.count_nonzero(arrivals > 0.0401)) <= 1, np.sort(arrivals)[-3:]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and "connection failed" in r.getMessage()]
    assert failures == [], failures[0].exc_text if failures else ""
    assert peak[0] < MAX_TASKS


# -- before authentication -------------------------------------------------------------------

header_names = st.sampled_from([b"Host", b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"Sec-WebSocket-Version",
                                b"X-Twilio-Signature", b"Authorization", b"Content-Length", b"Transfer-Encoding",
                                b"X-Other"])
header_values = st.one_of(st.sampled_from([b"websocket", b"Upgrade", b"13", b"dGhlIHNhbXBsZSBub25jZQ==",
                                           b"Bearer tx-token", b"Bearer", b"chunked", b"0", b"-1"]),
                          st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b))
targets = st.one_of(st.sampled_from(["/media", "/", "/media?token=tx-token", "*", "/media?" + "&".join(["a=1"] * 200)]),
                    st.text(max_size=60).map(lambda t: "/" + t.replace(" ", "%20")))


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))  # not HTTP at all
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "G\x00T", ""]))
    target = draw(targets)
    lines = [f"{method} {target} HTTP/1.1".encode("utf-8", "surrogateescape")]
    lines += [name + b": " + value for name, value in draw(st.lists(st.tuples(header_names, header_values),
                                                                    max_size=10))]
    if draw(st.booleans()):
        lines += [b"Host: bridge.test", b"Upgrade: websocket", b"Connection: Upgrade",
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + draw(st.binary(max_size=40))


@EXAMPLES
@given(head=request_heads())
def test_any_request_before_authentication_is_answered_or_closed(head: bytes,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()

    async def main() -> bytes:
        cfg = bridge_settings(server__allow_unauthenticated=False, server__telnyx_stream_token="tx-token",
                              server__twilio_auth_token="tw-token", server__public_url="wss://voice.test/media",
                              server__handshake_timeout_ms=1000)
        server = bridge_server(cfg, fake_engines())
        client, srv = trio.testing.memory_stream_pair()
        answer = b""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, srv)
            await client.send_all(head)
            with trio.fail_after(10):
                while data := await client.receive_some(65536):
                    answer += data
        assert server.pending == 0 and server.active_calls == 0
        return answer

    answer = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:80]
    assert "connection failed" not in caplog.text
