"""The Media Streams server: accepts provider WebSockets at ``/media`` and runs one call each.

``serve_media_streams`` follows trio's ``serve_listeners`` shape: it accepts injected listeners
(tests pass in-memory or loopback ones), reports them through ``task_status.started`` once it is
accepting, and runs until ``shutdown`` is set. Shutdown stops accepting at once, lets calls in
progress finish for ``shutdown_grace_s``, then cancels them (each call's teardown still closes
its sockets). Calls run in a nursery of their own, outside the accept loop, for that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    wrap_server_stream,
)

from bridge.call.engines import SpeechEngines
from bridge.call.handoff import deliver_session_end
from bridge.call.media import MediaCache
from bridge.call.session import TEARDOWN_TIMEOUT_S, Call, CallStats, open_call
from bridge.call.settings import CallSettings, require_at_least
from bridge.call.speaker import OUTPUT_RATE
from bridge.protocols.signature import signature_valid
from bridge.speech.chunker import chunk_text

logger = logging.getLogger(__name__)

MEDIA_PATH = "/media"
HANDSHAKE_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 1 << 20

AppConnector = Callable[[str, float], AbstractAsyncContextManager[WebSocketConnection]]


def connect_app(url: str, timeout_s: float) -> AbstractAsyncContextManager[WebSocketConnection]:
    """Open the WebSocket to the ConversationRelay app (the bridge is its client, as Twilio is)."""
    return open_websocket_url(url, connect_timeout=timeout_s, disconnect_timeout=TEARDOWN_TIMEOUT_S,
                              max_message_size=MAX_MESSAGE_BYTES)


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def check_ws_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{name} must be a ws:// or wss:// URL, got {url!r}")


@dataclass(frozen=True)
class ServerSettings:
    """The Media Streams server (the config's ``[server]``)."""

    listen: str = "127.0.0.1:8080"
    app_url: str = ""
    relay_url_allowlist: tuple[str, ...] = ()
    twilio_auth_token: str = ""
    public_url: str = ""
    app_connect_timeout_ms: int = 5000
    shutdown_grace_s: float = 30.0
    max_calls: int = 50

    def __post_init__(self) -> None:
        split_listen(self.listen)
        if self.app_url:
            check_ws_url(self.app_url, "app_url")
        for i, url in enumerate(self.relay_url_allowlist):
            check_ws_url(url, f"relay_url_allowlist[{i}]")
        require_at_least(self, app_connect_timeout_ms=1, shutdown_grace_s=0, max_calls=1)


class MediaStreamsServer:
    def __init__(self, settings: ServerSettings, call: CallSettings, engines: SpeechEngines,
                 connect: AppConnector = connect_app) -> None:
        self.settings = settings
        self.call_settings = call
        self.engines = engines
        self.connect = connect
        self.media_cache = MediaCache(call.play.cache_bytes)  # play sources, shared by all calls
        self.active_calls = 0
        self.calls_total = 0
        self.rejected = 0
        self.finished: list[CallStats] = []
        self.keep_stats = False  # tests and the simulator read finished calls' stats
        self._calls: set[Call] = set()
        self._idle = trio.Event()

    async def wait_idle(self) -> None:
        """Return once no call is in progress."""
        while self.active_calls:
            await self._idle.wait()

    def end_all(self, reason: str) -> None:
        """End every call through its normal teardown (sockets closed properly)."""
        for call in list(self._calls):
            call.end(reason)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """One connection. Nothing a peer does may escape into the accept loop: it would end every call."""
        self.active_calls += 1  # counted before any await, so concurrent handshakes respect max_calls
        try:
            async with trio.open_nursery() as conn:
                await self._handle_connection(conn, stream)
                conn.cancel_scope.cancel()
        except Exception:
            logger.exception("connection failed")
        finally:
            self.active_calls -= 1
            if not self.active_calls:
                self._idle.set()
                self._idle = trio.Event()

    async def _handle_connection(self, conn: trio.Nursery, stream: trio.abc.Stream) -> None:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                request = await wrap_server_stream(conn, stream, max_message_size=MAX_MESSAGE_BYTES)
        except (trio.TooSlowError, ConnectionClosed, HandshakeError, trio.BrokenResourceError) as exc:
            logger.warning("connection dropped before the WebSocket handshake: %r", exc)
            await stream.aclose()
            return
        status = self._check_request(request)
        if status is not None:
            self.rejected += 1
            await request.reject(status[0], body=status[1].encode())
            return
        ws = await request.accept()
        self.calls_total += 1
        try:
            await self._serve_call(ws)
        finally:
            with trio.move_on_after(TEARDOWN_TIMEOUT_S) as cleanup:
                cleanup.shield = True
                await ws.aclose()

    def _check_request(self, request: WebSocketRequest) -> tuple[int, str] | None:
        path = request.path.split("?", 1)[0]
        if path != MEDIA_PATH:
            logger.warning("refused a WebSocket for path %r (only %s is served)", request.path, MEDIA_PATH)
            return 404, f"not found: only {MEDIA_PATH} is served\n"
        token = self.settings.twilio_auth_token
        if token:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            # wsproto moves Host out of the header list into the request event.
            host = request._event.host
            url = self.settings.public_url or f"wss://{host}{request.path}"
            signature = headers.get("x-twilio-signature", "")
            if not signature or not signature_valid(token, url, signature):
                logger.warning("refused a WebSocket with a %s X-Twilio-Signature",
                               "wrong" if signature else "missing")
                return 403, "invalid X-Twilio-Signature\n"
        if self.active_calls > self.settings.max_calls:  # this connection is already counted
            logger.warning("refused a call: %d calls in progress (server.max_calls)", self.active_calls)
            return 503, "too many calls\n"
        return None

    def app_url_for(self, params: dict[str, Any]) -> str:
        wanted = params.get("relayUrl", "")
        if wanted and isinstance(wanted, str):
            if wanted in self.settings.relay_url_allowlist:
                return wanted
            logger.warning("relayUrl %r is not in server.relay_url_allowlist; using the configured app", wanted)
        return self.settings.app_url

    async def prepare(self) -> None:
        """Pre-synthesise the configured welcome greeting, so a call can start speaking it at once."""
        session = self.call_settings.session
        if not session.welcome_greeting:
            return
        try:
            await self.engines.presynthesize(chunk_text(session.welcome_greeting), OUTPUT_RATE,
                                             language=session.speech_language)
        except Exception:
            logger.exception("could not pre-synthesise the welcome greeting; calls will synthesise it")

    async def _serve_call(self, ws: WebSocketConnection) -> None:
        codec, start = await open_call(ws)
        if start is None:
            return
        call = Call(ws, self.engines, self.call_settings, start, codec, self.media_cache)
        self._calls.add(call)
        try:
            url = self.app_url_for(start.custom_parameters)
            if not url:
                call.end("no app URL configured")
                call.log.error("no app URL: set server.app_url (or --app-url); ending the call")
                return
            try:
                async with self.connect(url, self.settings.app_connect_timeout_ms / 1000) as app_ws:
                    await call.run(app_ws)
            except (OSError, HandshakeError) as exc:
                call.end(f"app unreachable at {url}: {exc!r}")
                call.log.error("cannot reach the app at %s (%r); ending the call", url, exc)
        finally:
            self._calls.discard(call)
            call.log.info("call ended: %s; %s", call.stats.end_reason or "unknown", call.stats.summary())
            if self.call_settings.handoff.configured:
                # Before the provider socket closes: a REST redirect must land while the stream still holds
                # the call, or Twilio moves on to the TwiML after <Connect>.
                handoff = self.call_settings.handoff
                with trio.move_on_after(2 * handoff.timeout_ms / 1000 + 1) as cleanup:  # callback + redirect
                    cleanup.shield = True
                    await deliver_session_end(handoff, call.session_report(), log=call.log,
                                              redirect=call.provider == "twilio")
            if self.keep_stats:
                self.finished.append(call.stats)


async def serve_media_streams(server: MediaStreamsServer, listeners: Sequence[trio.abc.Listener[Any]],
                              shutdown: trio.Event | None = None,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept calls on ``listeners`` until ``shutdown`` is set, then drain them."""
    async with trio.open_nursery() as calls:
        async with trio.open_nursery() as accept:
            await accept.start(partial(trio.serve_listeners, server.handle_stream, list(listeners),
                                       handler_nursery=calls))
            await server.prepare()
            task_status.started()
            if shutdown is None:
                await trio.sleep_forever()
            await shutdown.wait()
            accept.cancel_scope.cancel()  # serve_listeners closes the listeners as it exits
        grace = server.settings.shutdown_grace_s
        logger.info("shutting down: %d call(s) in progress get up to %.0f s to finish", server.active_calls, grace)
        with trio.move_on_after(grace):
            await server.wait_idle()
        if server.active_calls:
            logger.warning("ending %d call(s) still in progress after %.0f s", server.active_calls, grace)
            server.end_all("server shutting down")
        # A backstop: teardown is itself time-bounded, so this only fires if something is stuck.
        calls.cancel_scope.deadline = trio.current_time() + 3 * TEARDOWN_TIMEOUT_S
