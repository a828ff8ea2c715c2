"""The operator's endpoints, on a listener of their own (``server.admin_listen``), over plain HTTP:

- ``GET /metrics``: the process's metrics in Prometheus's text format 0.0.4, which every Prometheus
  version reads (``relay_bridge.metrics``).
- ``GET /healthz``: 200 while the process is alive and its event loop responsive: a heartbeat task
  on the loop wakes every ``BEAT_S``; once it has woken more than ``STALL_S`` late (a loop blocked
  or too busy to run its tasks on time), or has not run for that long, it is 503 for
  ``STALL_MEMORY_S``. A loop stuck outright answers nothing (a probe's timeout says the same).
- ``GET /readyz``: 200 when a new call would be taken: the models are loaded, the server accepts
  calls, is not draining and is below capacity (``MediaStreamsServer.no_room``); else 503 and why.

Each request is one head read within ``REQUEST_TIMEOUT_S`` and one answer, then the connection is
closed; at most ``MAX_CONNECTIONS`` are served at once, more are closed at once. A failure in one
request is logged and ends that connection only. The listener has no
authentication: keep it on loopback or a private network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from relay_bridge.call.upgrade import BadRequest, read_request_head, response
from relay_bridge.metrics import Metrics
from relay_bridge.server import MediaStreamsServer

BEAT_S = 0.25  # how often the heartbeat runs
STALL_S = 1.0  # a heartbeat this late (or this long without one): the event loop is not keeping up
STALL_MEMORY_S = 10.0  # how long a stall keeps /healthz at 503, so a probe every few seconds sees it
REQUEST_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 64

logger = logging.getLogger(__name__)


class Admin:
    """What the endpoints report. ``server`` is None until the models are loaded and calls are served."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.server: MediaStreamsServer | None = None
        self.last_beat = trio.current_time()
        self.stalled_at = -STALL_MEMORY_S  # when the heartbeat last woke more than STALL_S late
        self.stall_s = 0.0  # by how much
        self._connections = 0

    async def heartbeat(self) -> None:
        while True:
            due = trio.current_time() + BEAT_S
            await trio.sleep_until(due)
            now = trio.current_time()
            if now - due > STALL_S:
                self.stalled_at, self.stall_s = now, now - due
            self.last_beat = now

    def health(self) -> tuple[int, str]:
        now = trio.current_time()
        silent = now - self.last_beat
        if silent > BEAT_S + STALL_S:
            return 503, f"event loop stalled: its heartbeat last ran {silent:.1f} s ago\n"
        if now - self.stalled_at < STALL_MEMORY_S:
            return 503, (f"event loop stalled: its heartbeat ran {self.stall_s:.1f} s late "
                         f"{now - self.stalled_at:.0f} s ago\n")
        return 200, "alive\n"

    def readiness(self) -> tuple[int, str]:
        if self.server is None:
            return 503, "not ready: loading models\n"
        no_room = self.server.no_room()
        if no_room is not None:
            return 503, f"not ready: {no_room[1]}\n"
        return 200, f"ready: {self.server.active_calls} call(s) in progress\n"

    async def handle(self, stream: trio.abc.Stream) -> None:
        if self._connections >= MAX_CONNECTIONS:
            await trio.aclose_forcefully(stream)
            return
        self._connections += 1
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                await stream.send_all(await self._answer(stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer left
        except Exception:
            logger.exception("admin request failed")
        finally:
            self._connections -= 1
            await trio.aclose_forcefully(stream)

    async def _answer(self, stream: trio.abc.Stream) -> bytes:
        try:
            head = await read_request_head(stream)
        except BadRequest:
            return response(400, "bad request\n")
        head_only = head.method == "HEAD"
        if head.method not in ("GET", "HEAD"):
            return response(405, "method not allowed\n", extra=[("Allow", "GET, HEAD")])
        if head.path == "/metrics":
            return response(200, self.metrics.exposition(), head_only=head_only, content_type=CONTENT_TYPE_PLAIN_0_0_4)
        if head.path == "/healthz":
            return response(*self.health(), head_only=head_only)
        if head.path == "/readyz":
            return response(*self.readiness(), head_only=head_only)
        return response(404, "not found: /metrics, /healthz and /readyz are served\n", head_only=head_only)


async def serve_admin(admin: Admin, listeners: Sequence[trio.abc.Listener[Any]],
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the endpoints on ``listeners`` (and run the heartbeat) until cancelled."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admin.heartbeat)
        await nursery.start(partial(trio.serve_listeners, admin.handle, list(listeners)))
        task_status.started()

