"""The HTTP request that opens a connection, read and judged before any WebSocket machinery runs.

A connection costs nothing but a pending-handshake place until its request head has arrived, within
a deadline and a size limit. Requests that are not WebSocket upgrades (a load balancer's health
check, a browser, a scanner) are answered at once and closed; upgrades are handed back with the
bytes already read, which ``PrefixedStream`` replays to the WebSocket library, so the server can
refuse one (wrong path, failed authentication, no capacity) with a plain HTTP status first.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import trio

MAX_HEAD_BYTES = 16 * 1024
RECEIVE_BYTES = 4096


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str  # path and query, as sent
    headers: list[tuple[bytes, bytes]]  # names lowercased
    raw: bytes  # every byte read so far, for the WebSocket library to read again

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str:
        key = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k == key), "")

    @property
    def is_websocket(self) -> bool:
        connection = {t.strip().lower() for t in self.header("connection").split(",")}
        return self.header("upgrade").strip().lower() == "websocket" and "upgrade" in connection


class BadRequest(Exception):
    """The peer sent something that is not an HTTP/1.1 request head within the limits."""


async def read_request_head(stream: trio.abc.Stream) -> RequestHead:
    """Read one request head (no body); ``BadRequest`` if it is malformed, too large or the peer left."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    raw = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(str(exc)) from None
        if isinstance(event, h11.Request):
            return RequestHead(method=event.method.decode("ascii", "replace"),
                               target=event.target.decode("latin-1"),
                               headers=[(k.lower(), v) for k, v in event.headers], raw=bytes(raw))
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise BadRequest(f"connection lost: {exc!r}") from None
            if not data:
                raise BadRequest("connection closed before a request")
            raw += data
            conn.receive_data(bytes(data))
        else:
            raise BadRequest(f"unexpected {type(event).__name__}")


def response(status: int, body: str | bytes, *, head_only: bool = False, extra: list[tuple[str, str]] | None = None,
             content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response."""
    conn = h11.Connection(h11.SERVER)
    # h11 must have seen a request before it writes a response.
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" if head_only else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    data = body.encode() if isinstance(body, str) else body
    headers = [("Content-Type", content_type), ("Content-Length", str(len(data))),
               ("Connection", "close"), *(extra or [])]
    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if not head_only:
        out += conn.send(h11.Data(data=data)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    return out


class PrefixedStream(trio.abc.Stream):
    """A stream that yields ``prefix`` before reading from ``stream``."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return bytes(data)
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()
