"""A call's two sockets and its lifetime: sends within a deadline, keep-alives, and who ended the call.

``Lifetime`` records the first reason the call ended for and cancels the call's scope. A ``Link`` is one
socket: every send must complete within ``send_timeout_s`` (a peer that stops reading ends the call
as failed instead of holding it), a closed socket ends the call, and a ping every
``ping_interval_s`` must be answered within ``pong_timeout_s`` (a half-open socket) unless this call
held that peer's reader up meanwhile (``held``: its events waited for room in the inbox, so the
socket's library could not read the pong either). These are the only places a closed socket is
handled. ``AppLink`` also queues messages to the app for one writer task, so the conversation never
waits on the app.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from relay_bridge.call.record import CallStats
from relay_bridge.conversation.events import EndReason
from relay_bridge.protocols import relay
from relay_bridge.settings import CallLimits

APP_QUEUE_MAX = 256  # messages to the app not yet sent; more means the app stopped reading
CLOSED = {"provider": EndReason.PROVIDER_CLOSED, "app": EndReason.APP_CLOSED}
STUCK = {"provider": EndReason.PROVIDER_STUCK, "app": EndReason.APP_STUCK}
NO_PONG = {"provider": EndReason.PROVIDER_NO_PONG, "app": EndReason.APP_NO_PONG}


class Lifetime:
    def __init__(self, record: CallStats) -> None:
        self.scope = trio.CancelScope()
        self._record = record

    def end(self, reason: EndReason, detail: str = "") -> None:
        """End the call; the first reason given is the one kept (in the call's record)."""
        if self._record.end_reason is None:
            self._record.end_reason, self._record.end_detail = reason, detail
        self.scope.cancel()


def close_code(exc: ConnectionClosed) -> str:
    return str(exc.reason.code) if exc.reason else "?"


class Link:
    def __init__(self, ws: WebSocketConnection, side: str, lifetime: Lifetime, limits: CallLimits,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.ws = ws
        self.side = side
        self._lifetime = lifetime
        self._limits = limits
        self._log = log
        self.stuck = False  # a send timed out: the socket may hold half a frame
        self._held_until = -math.inf  # when its reader last stopped waiting on this call; inf while it waits

    async def send(self, frame: str) -> None:
        if self.stuck:
            return
        try:
            with trio.fail_after(self._limits.send_timeout_s):
                await self.ws.send_message(frame)
        except ConnectionClosed as exc:
            self._lifetime.end(CLOSED[self.side], close_code(exc))
        except trio.TooSlowError:
            self.stuck = True
            self._log.warning("a send to the %s took over %.1f s; ending the call", self.side,
                              self._limits.send_timeout_s)
            self._lifetime.end(STUCK[self.side])

    def closed_by_peer(self, exc: ConnectionClosed) -> None:
        self._lifetime.end(CLOSED[self.side], close_code(exc))

    @contextmanager
    def held(self) -> Iterator[None]:
        """The peer's reader waits on this call (for room in the inbox)."""
        self._held_until = math.inf
        try:
            yield
        finally:
            self._held_until = trio.current_time()

    async def keep_alive(self) -> None:
        while True:
            await trio.sleep(self._limits.ping_interval_s)
            sent_at = trio.current_time()
            with trio.move_on_after(self._limits.pong_timeout_s) as waited:
                try:
                    await self.ws.ping()
                except ConnectionClosed as exc:
                    self.closed_by_peer(exc)
                    return
            if waited.cancelled_caught and self._held_until >= sent_at:
                self._log.debug("no pong from the %s yet, but its reader was held up by this call", self.side)
            elif waited.cancelled_caught:
                self._log.warning("no pong from the %s within %.1f s; ending the call", self.side,
                                  self._limits.pong_timeout_s)
                self._lifetime.end(NO_PONG[self.side])
                return


class AppLink(Link):
    def __init__(self, ws: WebSocketConnection, lifetime: Lifetime, limits: CallLimits,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__(ws, "app", lifetime, limits, log)
        self._queue: deque[relay.RelayMessage | str] = deque()
        self._added = trio.Event()
        self.close = relay.CLOSE_NORMAL

    async def send_message(self, msg: relay.RelayMessage | str) -> None:
        await self.send(msg if isinstance(msg, str) else relay.serialize_relay_message(msg))

    def queue(self, msg: relay.RelayMessage | str) -> None:
        """Send ``msg`` after those queued before it, without waiting."""
        if len(self._queue) >= APP_QUEUE_MAX:
            self._log.warning("%d messages to the app are waiting to be sent; ending the call", APP_QUEUE_MAX)
            self._lifetime.end(EndReason.APP_STUCK)
            return
        self._queue.append(msg)
        self._added.set()

    async def write(self) -> None:
        while True:
            while not self._queue:
                self._added = trio.Event()
                await self._added.wait()
            await self.send_message(self._queue[0])
            self._queue.popleft()

    async def flush(self) -> None:
        """Send what is still queued (at teardown: what the app is still owed)."""
        while self._queue and not self.ws.closed and not self.stuck:
            await self.send_message(self._queue.popleft())
