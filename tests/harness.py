"""Whole calls in memory: the real server, the simulated caller and an app, over in-memory streams.

Run under trio's autojumping mock clock, a call of many seconds of audio takes milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import numpy as np
import trio
import trio.testing
from numpy.typing import NDArray
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_client_stream,
    wrap_server_stream,
)

from relay_bridge.call.engines import SpeechEngines
from relay_bridge.call.record import CallStats
from relay_bridge.config import Config, replace
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.protocols.wsquirks import closing_pongs_only
from relay_bridge.server import AppConnector, MediaStreamsServer, ServerSettings
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.timeline import Timeline

AppHandler = Callable[[WebSocketRequest], Awaitable[None]]
APP_URL = "ws://app.test/relay"
# `make fuzz` sets FUZZ=1: the fuzz suites then run many more examples, randomly
# chosen; `make test` runs a few, derandomised, so CI is repeatable.
FUZZING = os.environ.get("FUZZ") == "1"


def fuzz_settings(*, ci: int, fuzz: int, **options: Any) -> hypothesis.settings:
    """Hypothesis settings of a fuzz test: ``ci`` examples in the suite, ``fuzz`` under `make fuzz`."""
    return hypothesis.settings(max_examples=fuzz if FUZZING else ci, derandomize=not FUZZING, deadline=None,
                               **options)


def fake_engines(script: tuple[str, ...] = (), **synth: float) -> SpeechEngines:
    return SpeechEngines(FakeTranscriber(script=script), FakeSynthesizer(**synth))


def settings(**changes: object) -> Config:
    """The default config with the app at ``APP_URL``, unauthenticated streams allowed (the tests' peers
    carry no credentials unless a test gives them some) and ``section__key=value`` changes."""
    return replace(Config(server=ServerSettings(app_url=APP_URL, allow_unauthenticated=True)), **changes)


def bridge_server(cfg: Config, engines: SpeechEngines, connect: AppConnector | None = None) -> MediaStreamsServer:
    if connect is None:
        return MediaStreamsServer(cfg.server, cfg.call, engines)
    return MediaStreamsServer(cfg.server, cfg.call, engines, connect=connect)


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are in-memory stream pairs."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](16)
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        self.closed = True
        await self._receive.aclose()
        await trio.lowlevel.checkpoint()

    async def connect(self) -> trio.abc.Stream:
        if self.closed:
            raise OSError(111, "connection refused")
        client, server = trio.testing.memory_stream_pair()
        try:
            await self._send.send(server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise OSError(111, "connection refused") from None
        return client


def leaf(group: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` inside (nested) exception groups."""
    if isinstance(group, kind):
        return group
    if isinstance(group, BaseExceptionGroup):
        for exc in group.exceptions:
            found = leaf(exc, kind)
            if found is not None:
                return found
    return None


@dataclass
class MemoryNetwork:
    nursery: trio.Nursery
    apps: dict[str, AppHandler] = field(default_factory=dict)
    app_connections: int = 0
    app_headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)  # of each app connection

    @asynccontextmanager
    async def connect_app(self, url: str, timeout_s: float,
                          headers: list[tuple[bytes, bytes]] | None = None) -> AsyncIterator[WebSocketConnection]:
        handler = self.apps.get(url)
        if handler is None:
            raise OSError(111, f"connection refused: {url}")
        self.app_connections += 1
        self.app_headers.append(headers or [])
        client, server = trio.testing.memory_stream_pair()

        async def serve() -> None:
            async with trio.open_nursery() as n:
                request = await wrap_server_stream(n, server)
                await handler(request)
                n.cancel_scope.cancel()

        self.nursery.start_soon(serve)
        async with trio.open_nursery() as n:
            ws = await wrap_client_stream(n, client, "app.test", "/relay", extra_headers=headers)
            try:
                yield ws
            finally:
                await ws.aclose()
                n.cancel_scope.cancel()

    @asynccontextmanager
    async def connect_bridge(self, server: MediaStreamsServer | MemoryListener, path: str = "/media",
                             headers: list[tuple[bytes, bytes]] | None = None) -> AsyncIterator[WebSocketConnection]:
        """Connect to a server directly, or through a listener it serves."""
        if isinstance(server, MemoryListener):
            client = await server.connect()
        else:
            client, srv = trio.testing.memory_stream_pair()
            self.nursery.start_soon(server.handle_stream, srv)
        try:
            async with trio.open_nursery() as n:
                ws = await wrap_client_stream(n, client, "bridge.test", path, extra_headers=headers)
                try:
                    yield ws
                finally:
                    await ws.aclose()
                    n.cancel_scope.cancel()
        except Exception as exc:
            if not closing_pongs_only(exc):  # the bridge's ping met our close: the library's quirk, not a failure
                raise


@dataclass
class CallResult:
    caller: SimulatedCaller
    server: MediaStreamsServer
    timeline: Timeline

    @property
    def stats(self) -> CallStats:
        assert self.server.finished, "the bridge did not finish the call"
        return self.server.finished[0]


async def run_memory_call(engines: SpeechEngines, cfg: Config, app: AppHandler | None,
                          script: Callable[[SimulatedCaller], Awaitable[None]], *,
                          custom_parameters: dict[str, Any] | None = None,
                          media: dict[str, NDArray[np.int16]] | None = None, **caller_options: Any) -> CallResult:
    """One whole call; ``caller_options`` go to ``SimulatedCaller`` (e.g. ``provider="telnyx"``).

    ``media`` pre-populates the server's play cache (URL -> 8 kHz samples), so a ``play`` of those
    URLs succeeds without any network.
    """
    timeline = Timeline()
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery)
        if app is not None:
            net.apps[cfg.server.app_url] = app
        server = bridge_server(cfg, engines, net.connect_app)
        server.keep_stats = True
        await server.prepare()
        for url, samples in (media or {}).items():
            server.media_cache.put(url, samples)
        caller = SimulatedCaller("ws://bridge.test/media", timeline, custom_parameters=custom_parameters,
                                 **caller_options)
        await caller.run(script, connect=lambda: net.connect_bridge(server))
        with trio.fail_after(10):
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    return CallResult(caller, server, timeline)


@dataclass
class AppLog:
    """Every frame a scripted app received, parsed, in order; and how its socket closed."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: str | None = None  # "CODE reason" once the bridge closed the socket
    _changed: trio.Event = field(default_factory=trio.Event)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def add(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        self._notify()

    def close(self, how: str) -> None:
        self.closed = how
        self._notify()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    def sequence(self) -> list[str]:
        """Frame types in order, ``info`` frames as ``name=value``."""
        return [f"{f['name']}={f['value']}" if f["type"] == "info" else f["type"] for f in self.frames]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first frame (already received or still to come) that ``predicate`` accepts.

        Raises ``AssertionError`` if the socket closes first, so a test waiting in vain fails instead of hanging.
        """
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            if self.closed is not None:
                raise AssertionError(f"the app socket closed ({self.closed}) before the frame awaited")
            await self._changed.wait()

    async def wait_closed(self) -> None:
        while self.closed is None:
            await self._changed.wait()


AppScript = Callable[[WebSocketConnection, AppLog], Awaitable[None]]


def scripted_app(script: AppScript, log: AppLog) -> AppHandler:
    """An app that runs ``script`` (it sends, and may wait on ``log``) while every frame it receives is
    recorded in ``log``; it stays connected until the bridge closes the socket."""

    async def handle(request: WebSocketRequest) -> None:
        ws = await request.accept()

        async def receive() -> None:
            try:
                while True:
                    log.add(json.loads(await ws.get_message()))
            except ConnectionClosed as exc:
                log.close(f"{exc.reason.code} {exc.reason.reason}" if exc.reason else "closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await log.wait_for(lambda f: f["type"] == "setup")
            with contextlib.suppress(ConnectionClosed):  # the call may end while the script still sends
                await script(ws, log)
            await log.wait_closed()

    return handle


def heard_through(utterance: str, played: list[str], chunks: list[str]) -> bool:
    """Whether ``utterance`` (an ``interrupt``'s) is the ``played`` chunks, then at most the first words of
    the next chunk of ``chunks``: the fragment the caller heard of the chunk the barge-in cut off."""
    whole = " ".join(played)
    if not utterance.startswith(whole):
        return False
    rest = utterance[len(whole) :].strip()
    following = chunks[len(played)] if len(played) < len(chunks) else ""
    return not rest or (following + " ").startswith(rest + " ")
