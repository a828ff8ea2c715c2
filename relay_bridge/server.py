"""The Media Streams server: accepts provider WebSockets at ``/media`` and runs one call each.

``serve_media_streams`` follows trio's ``serve_listeners`` shape: it accepts injected listeners
(tests pass in-memory or loopback ones), reports them through ``task_status.started`` once it is
accepting, and runs until ``shutdown`` is set. Shutdown stops accepting at once, lets calls in
progress finish for ``shutdown_grace_s``, then cancels them (each call's teardown still closes
its sockets). Calls run in a nursery of their own, outside the accept loop, for that reason.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
    wrap_server_stream,
)

from relay_bridge.audio.telephony import SAMPLE_RATE_HZ
from relay_bridge.call.call import TEARDOWN_TIMEOUT_S, Call
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.call.opening import open_call
from relay_bridge.call.record import CallStats
from relay_bridge.call.upgrade import BadRequest, PrefixedStream, RequestHead, read_request_head, response
from relay_bridge.conversation.events import EndReason
from relay_bridge.engines.schedule import LOAD_BUCKET_S
from relay_bridge.net.handoff import deliver_session_end
from relay_bridge.net.media import MediaCache
from relay_bridge.protocols.auth import TWILIO, Verdict, authenticate
from relay_bridge.protocols.printable import printable
from relay_bridge.protocols.provider import ProviderCodec, StartEvent
from relay_bridge.protocols.signature import twilio_signature
from relay_bridge.protocols.wsquirks import closing_pongs_only
from relay_bridge.settings import CallSettings, ServerSettings
from relay_bridge.speech.chunker import chunk_text

logger = logging.getLogger(__name__)

MEDIA_PATH = "/media"
MAX_MESSAGE_BYTES = 1 << 20
CLOSE_POLICY = (1008, "policy violation")
CLOSE_TRY_LATER = (1013, "too many calls")
CLOSE_GOING_AWAY = (1001, "shutting down")

AppConnector = Callable[[str, float, list[tuple[bytes, bytes]]], AbstractAsyncContextManager[WebSocketConnection]]


def connect_app(url: str, timeout_s: float,
                headers: list[tuple[bytes, bytes]]) -> AbstractAsyncContextManager[WebSocketConnection]:
    """Open the WebSocket to the ConversationRelay app (the bridge is its client, as Twilio is)."""
    return open_websocket_url(url, connect_timeout=timeout_s, disconnect_timeout=TEARDOWN_TIMEOUT_S,
                              max_message_size=MAX_MESSAGE_BYTES, extra_headers=headers)


@dataclass(frozen=True)
class _Opened:
    ws: WebSocketConnection
    codec: ProviderCodec
    start: StartEvent


class MediaStreamsServer:
    def __init__(self, settings: ServerSettings, call: CallSettings, engines: SpeechEngines,
                 connect: AppConnector = connect_app) -> None:
        self.settings = settings
        self.call_settings = call
        self.engines = engines
        self.metrics = engines.metrics
        self.connect = connect
        self.media_cache = MediaCache(call.play.cache_bytes)  # play sources, shared by all calls
        self.active_calls = 0  # calls holding a slot (admitted: authenticated, started)
        self.pending = 0  # connections not yet admitted
        self.calls_total = 0
        self.refused: Counter[str] = Counter()  # connections turned away, by cause
        self.accepting = True
        self.finished: list[CallStats] = []
        self.keep_stats = False  # tests and the simulator read finished calls' stats
        self._calls: set[Call] = set()
        self._idle = trio.Event()

    async def wait_idle(self) -> None:
        """Return once no call is in progress and no connection is waiting to be admitted."""
        while self.active_calls or self.pending:
            await self._idle.wait()

    def end_all(self, reason: EndReason) -> None:
        """End every call through its normal teardown (sockets closed properly)."""
        for call in list(self._calls):
            call.end(reason)

    async def sample_load(self) -> None:
        """Read the process's CPU time for admission control, once a second."""
        while True:
            self.engines.load.cpu(time.process_time(), trio.current_time())
            await trio.sleep(LOAD_BUCKET_S)

    def _count_calls(self, change: int) -> None:
        self.active_calls += change
        self.metrics.calls_active.set(self.active_calls)
        self.engines.load.calls(self.active_calls, trio.current_time())

    def _changed(self) -> None:
        if not self.active_calls and not self.pending:
            self._idle.set()
            self._idle = trio.Event()

    def _refuse(self, cause: str, message: str, *args: object) -> None:
        self._count_refusal(cause)
        logger.warning("refused a connection (%s): " + message, cause, *args)

    def _count_refusal(self, cause: str) -> None:
        self.refused[cause] += 1
        self.metrics.refused.labels(cause).inc()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """One connection. Nothing a peer does may escape into the accept loop: it would end every call.

        Admission before work: until its request has authenticated and its stream has sent ``start``, a
        connection holds only one of ``max_pending_handshakes`` places, for ``handshake_timeout_ms`` at
        most; only then does it take a call slot.
        """
        if self.pending >= self.settings.max_pending_handshakes:
            self._refuse("pending", "%d handshakes already pending (server.max_pending_handshakes)", self.pending)
            await trio.aclose_forcefully(stream)
            return
        self.pending += 1
        admitted = False
        try:
            async with trio.open_nursery() as conn:
                deadline = trio.current_time() + self.settings.handshake_timeout_ms / 1000
                opened = await self._admit(conn, stream, deadline)
                if opened is not None:
                    self.pending -= 1
                    self._count_calls(+1)
                    admitted = True
                    await self._run_call(opened)
                conn.cancel_scope.cancel()
        except Exception as exc:
            if closing_pongs_only(exc):
                logger.warning("a peer pinged a socket that was closing; the connection is closed")
            else:
                logger.exception("connection failed")
        finally:
            if admitted:
                self._count_calls(-1)
            else:
                self.pending -= 1
            self._changed()
            await trio.aclose_forcefully(stream)  # whatever happened above; closing twice is harmless

    async def _admit(self, conn: trio.Nursery, stream: trio.abc.Stream, deadline: float) -> _Opened | None:
        ws: WebSocketConnection | None = None
        close = CLOSE_POLICY
        with trio.move_on_at(deadline) as handshake:
            try:
                head = await read_request_head(stream)
            except BadRequest as exc:
                self._refuse("bad_request", "%s", exc)
                await _respond(stream, 400, "bad request\n")
                return None
            verdict = authenticate(self.settings.credentials, head.headers, head.target)
            refusal = self._check_head(head, verdict)
            if refusal is not None:
                await _respond(stream, *refusal, head_only=head.method == "HEAD")
                return None
            try:
                request = await wrap_server_stream(conn, PrefixedStream(stream, head.raw),
                                                   max_message_size=MAX_MESSAGE_BYTES)
                ws = await request.accept()
            except (ConnectionClosed, HandshakeError, trio.BrokenResourceError) as exc:
                self._refuse("handshake", "the WebSocket handshake failed: %r", exc)
                await trio.aclose_forcefully(stream)
                return None
            codec, start = await open_call(ws, timeout_s=self.settings.handshake_timeout_ms / 1000)
            if start is not None:
                problem = self._check_start(verdict, start.provider, start)
                if problem is None and not self.accepting:
                    self._refuse("draining", "the server is shutting down")
                    problem, close = "shutting down", CLOSE_GOING_AWAY
                elif problem is None and self.active_calls >= self.settings.max_calls:
                    self._refuse("capacity", "%d calls in progress (server.max_calls)", self.active_calls)
                    problem, close = "too many calls", CLOSE_TRY_LATER
                elif problem is not None:
                    self._refuse("auth", "%s", problem)
                if problem is None:
                    return _Opened(ws, codec, start)
            else:  # no usable "start" (the peer left, or a stream the bridge cannot serve): open_call logged why
                self._count_refusal("start")
        if handshake.cancelled_caught:
            self._refuse("timeout", "no %s within %d ms (server.handshake_timeout_ms)",
                         "'start'" if ws is not None else "request", self.settings.handshake_timeout_ms)
        if ws is None:
            await trio.aclose_forcefully(stream)
        else:
            with trio.move_on_after(TEARDOWN_TIMEOUT_S) as cleanup:
                cleanup.shield = True
                await ws.aclose(*close)
        return None

    def _check_head(self, head: RequestHead, verdict: Verdict) -> tuple[int, str] | None:
        """The HTTP status to answer with instead of upgrading, or None to go on."""
        if not head.is_websocket:
            # Load balancers' health checks, browsers and scanners: answered at once, nothing held.
            if head.method not in ("GET", "HEAD"):
                return 405, "method not allowed\n"
            if head.path == "/":
                return (200, "relay-bridge: accepting calls\n") if self.no_room() is None else \
                    (503, "relay-bridge: not accepting calls\n")
            if head.path == MEDIA_PATH:
                return 426, f"{MEDIA_PATH} takes WebSocket upgrades only\n"
            return 404, f"not found: only {MEDIA_PATH} is served\n"
        if head.path != MEDIA_PATH:
            self._refuse("path", "WebSocket for path %r (only %s is served)", head.path, MEDIA_PATH)
            return 404, f"not found: only {MEDIA_PATH} is served\n"
        if verdict.refusal:
            self._refuse("auth", "%s", verdict.refusal)
            return 403, "forbidden: missing or invalid credentials\n"
        no_room = self.no_room()
        if no_room is not None:
            cause, why = no_room
            self._refuse(cause, "%s", why)
            return 503, "too many calls\n"
        return None

    def no_room(self) -> tuple[str, str] | None:
        """Why a new call cannot be taken now (the cause and a message), or None.

        Past ``max_calls``, or past what the host carries (``ProcessLoad``): one more call, at what
        calls have cost lately, would use more than ``max_cpu_load`` of the cores, or callers'
        recognitions and replies' first chunks already wait longer than ``max_engine_wait_ms`` for an
        engine slot.
        """
        if not self.accepting:
            return "draining", "the server is shutting down"
        if self.active_calls >= self.settings.max_calls:
            return "capacity", f"{self.active_calls} calls in progress (server.max_calls)"
        now = trio.current_time()
        self.engines.load.cpu(time.process_time(), now)
        over = self.engines.load.fits_another(self.active_calls, now, max_load=self.settings.max_cpu_load,
                                              max_wait_s=self.settings.max_engine_wait_ms / 1000)
        if over is not None:
            return "load", f"{self.active_calls} calls in progress; {over}"
        return None

    def _check_start(self, verdict: Verdict, provider: str, start: StartEvent) -> str | None:
        """Why a stream's ``start`` may not go on, or None."""
        if not verdict.admits(provider, self.settings.credentials):
            return (f"a {provider} stream on a connection authenticated as {verdict.provider}" if verdict.provider
                    else f"an unauthenticated {provider} stream (credentials are configured)")
        wanted = self.settings.twilio_account_sid
        # SIDs are hex: compared without regard to case, in constant time.
        presented = start.account_sid.lower().encode("utf-8", "replace")
        if provider == TWILIO and wanted and not hmac.compare_digest(presented, wanted.lower().encode()):
            return f"a start for account {printable(start.account_sid)} (server.twilio_account_sid is another)"
        return None

    def app_url_for(self, params: dict[str, Any]) -> str:
        wanted = params.get("relayUrl", "")
        if wanted and isinstance(wanted, str):
            if wanted in self.settings.relay_url_allowlist:
                return wanted
            logger.warning("relayUrl %s is not in server.relay_url_allowlist; using the configured app",
                           printable(wanted))
        return self.settings.app_url

    def app_headers(self, url: str) -> list[tuple[bytes, bytes]]:
        """Headers of the bridge's own upgrade to the app: signed as Twilio signs it, when a token is set."""
        token = self.settings.twilio_auth_token
        if not token:
            return []
        return [(b"X-Twilio-Signature", twilio_signature(token, url).encode())]

    async def prepare(self) -> None:
        """Pre-synthesise the configured welcome greeting, so a call can start speaking it at once."""
        session = self.call_settings.session
        if not session.welcome_greeting:
            return
        try:
            await self.engines.presynthesize(chunk_text(session.welcome_greeting), SAMPLE_RATE_HZ,
                                             language=session.speech_language)
        except Exception:
            logger.exception("could not pre-synthesise the welcome greeting; calls will synthesise it")

    async def _run_call(self, opened: _Opened) -> None:
        ws = opened.ws
        self.calls_total += 1
        try:
            await self._serve_call(ws, opened.codec, opened.start)
        finally:
            with trio.move_on_after(TEARDOWN_TIMEOUT_S) as cleanup:
                cleanup.shield = True
                await ws.aclose()

    async def _serve_call(self, ws: WebSocketConnection, codec: ProviderCodec, start: StartEvent) -> None:
        call = Call(ws, self.engines, self.call_settings, start, codec, self.media_cache, limits=self.settings.limits)
        self._calls.add(call)
        try:
            url = self.app_url_for(start.custom_parameters)
            if not url:
                call.end(EndReason.NO_APP_URL)
                call.log.error("no app URL: set server.app_url (or --app-url); ending the call")
                return
            reached = False
            try:
                async with self.connect(url, self.settings.app_connect_timeout_ms / 1000,
                                        self.app_headers(url)) as app_ws:
                    reached = True
                    await call.run(app_ws)
            except (OSError, HandshakeError) as exc:
                call.end(EndReason.APP_UNREACHABLE, f"{url}: {exc!r}")
                if not reached:  # not a failure of a call already talking to the app
                    self.metrics.app_connect_failures.inc()
                call.log.error("cannot reach the app at %s (%r); ending the call", url, exc)
        finally:
            self._calls.discard(call)
            call.meter.finish(trio.current_time(), call.stats.end_reason, call.stats.ended_because,
                              call.stats.summary())
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


async def _respond(stream: trio.abc.Stream, status: int, body: str, *, head_only: bool = False) -> None:
    """Answer a request that will not be upgraded, then close the connection."""
    with trio.move_on_after(TEARDOWN_TIMEOUT_S) as cleanup:
        cleanup.shield = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(response(status, body, head_only=head_only))
    await trio.aclose_forcefully(stream)


async def serve_media_streams(server: MediaStreamsServer, listeners: Sequence[trio.abc.Listener[Any]],
                              shutdown: trio.Event | None = None,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept calls on ``listeners`` until ``shutdown`` is set, then drain them."""
    async with trio.open_nursery() as calls:
        async with trio.open_nursery() as accept:
            await accept.start(partial(trio.serve_listeners, server.handle_stream, list(listeners),
                                       handler_nursery=calls))
            await server.prepare()
            accept.start_soon(server.sample_load)
            task_status.started()
            if shutdown is None:
                await trio.sleep_forever()
            await shutdown.wait()
            accept.cancel_scope.cancel()  # serve_listeners closes the listeners as it exits
        grace = server.settings.shutdown_grace_s
        server.accepting = False
        logger.info("shutting down: %d call(s) in progress get up to %.0f s to finish", server.active_calls, grace)
        with trio.move_on_after(grace):
            await server.wait_idle()
        if server.active_calls:
            logger.warning("ending %d call(s) still in progress after %.0f s", server.active_calls, grace)
            server.end_all(EndReason.SHUTDOWN)
        # A backstop: teardown is itself time-bounded, so this only fires if something is stuck.
        calls.cancel_scope.deadline = trio.current_time() + 3 * TEARDOWN_TIMEOUT_S
