"""A small HTTP server for tests (trio + h11 on 127.0.0.1) that records every request it receives.

Each request is parsed with h11 and handed to a handler with the raw stream, so a test can answer
normally (``respond``), in chunks, slowly, with a lie in Content-Length, or not at all.
"""

from __future__ import annotations

import socket as stdlib_socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qsl

import h11
import trio
from trio._socket import _SocketType


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("ascii"), keep_blank_values=True, strict_parsing=True))


Handler = Callable[[Received, trio.abc.Stream], Awaitable[None]]


@dataclass
class TestServer:
    port: int
    requests: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # SNI seen in TLS handshakes
    _arrived: trio.Event = field(default_factory=trio.Event)

    def record(self, request: Received) -> None:
        self.requests.append(request)
        self._arrived.set()
        self._arrived = trio.Event()

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            await self._arrived.wait()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def response(status: int = 200, body: bytes = b"", headers: list[tuple[str, str]] | None = None, *,
             reason: str = "OK", chunks: list[bytes] | None = None) -> bytes:
    """A raw HTTP/1.1 response: with Content-Length, or chunked when ``chunks`` is given."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def respond(data: bytes, _request: Received, stream: trio.abc.Stream) -> None:
    await stream.send_all(data)


def answer(data: bytes) -> Handler:
    return partial(respond, data)


async def _read_request(stream: trio.abc.Stream) -> Received | None:
    conn = h11.Connection(our_role=h11.SERVER)
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            return None
    assert request is not None
    headers = {k.decode().lower(): v.decode() for k, v in request.headers}
    return Received(request.method.decode(), request.target.decode(), headers, body)


@asynccontextmanager
async def open_http_server(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[TestServer]:
    """Serve ``handler`` on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    server = TestServer(port=0)
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: server.server_names.append(name)  # type: ignore[assignment]

    async def handle(stream: trio.abc.Stream) -> None:
        try:
            received = await _read_request(stream)
            if received is not None:
                server.record(received)
                await handler(received, stream)
        except (trio.BrokenResourceError, h11.ProtocolError):
            pass  # the client gave up (a refused TLS handshake, a size limit hit mid-body)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        if tls is None:
            listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        else:
            listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, handle, 0, tls, host="127.0.0.1",
                                                    https_compatible=True))
        listener = listeners[0].transport_listener if tls else listeners[0]
        server.port = listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


class StaticResolver(trio.abc.HostnameResolver):
    """Names to fixed addresses, so tests can use real-looking host names; counts lookups."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def getaddrinfo(self, host: bytes | str | None, port: bytes | str | int | None, family: int = 0,
                          type: int = 0, proto: int = 0, flags: int = 0) -> list[tuple[
                              trio.socket.AddressFamily, trio.socket.SocketKind, int, str,
                              tuple[str, int] | tuple[str, int, int, int]]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        if name not in self.names:
            raise trio.socket.gaierror(trio.socket.EAI_NONAME, "Name or service not known")
        out: list[tuple[trio.socket.AddressFamily, trio.socket.SocketKind, int, str,
                        tuple[str, int] | tuple[str, int, int, int]]] = []
        for address in self.names[name]:
            if ":" in address:
                out.append((trio.socket.AF_INET6, trio.socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0)))
            else:
                out.append((trio.socket.AF_INET, trio.socket.SOCK_STREAM, 6, "", (address, int(port or 0))))
        return out

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError


class _RoutedSocket(_SocketType):
    def __init__(self, sock: stdlib_socket.socket, routes: dict[str, int]) -> None:
        super().__init__(sock)
        self.routes = routes

    async def connect(self, address: object) -> None:
        assert isinstance(address, tuple)
        await super().connect(("127.0.0.1", self.routes[address[0]]))


class RoutedSocketFactory(trio.abc.SocketFactory):
    """Sockets whose connects to the given (public) addresses land on local ports.

    This lets a test server stand in for a server on the public internet, so the address rule can
    be left on. It subclasses trio's socket class, as ``trio.SocketStream`` accepts nothing else.
    """

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = routes

    def socket(self, family: int = stdlib_socket.AF_INET, type: int = stdlib_socket.SOCK_STREAM,
               proto: int = 0) -> trio.socket.SocketType:
        return _RoutedSocket(stdlib_socket.socket(stdlib_socket.AF_INET, type, proto), self.routes)
