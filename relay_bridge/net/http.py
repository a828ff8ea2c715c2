"""A small HTTP/1.1 client (trio + h11) for media the app asks to play and for end-of-session callbacks.

Theory of operation. ``play`` sources are URLs chosen by the app, so a fetch is a request the
bridge makes on someone else's behalf: it must not reach the bridge host's own services or the
private network behind it (SSRF). Each URL, and each redirect target, is checked the same way:
http or https only, the host against the optional allowlist, then the host is resolved once and
*every* address it resolves to must be public (private, loopback, link-local, multicast, reserved
and unspecified ranges are refused, IPv4-mapped and NAT64 IPv6 addresses by their IPv4 part). The
socket then connects to one of those checked addresses, never to the name again, so a DNS answer
that changes between the check and the connect (rebinding) cannot slip through. TLS uses the
system trust store with SNI and host name verification.

Every request runs under one deadline (connect, TLS, redirects and body together) and the body is
capped: by Content-Length before any of it is read, and again as it streams (chunked bodies have
no length up front). Callback POSTs go to operator-configured URLs, so they skip the address rule
but keep the deadline. All failures are ``HttpError`` with a message that says what went wrong.

A URL is checked as text before it is parsed: it must be at most ``MAX_URL_CHARS`` long and hold no
control character (``urlsplit`` would silently drop tab, CR and LF and fetch a different URL), no
white space and no lone surrogate (which has no UTF-8 form, so it could neither be percent-encoded
nor logged). Other non-ASCII characters are percent-encoded as UTF-8, as browsers do.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

import h11
import trio

from relay_bridge.settings import host_allowed, normalize_host

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
RECEIVE_BYTES = 65536
MAX_POST_RESPONSE_BYTES = 64 * 1024  # callbacks' answers are only logged
USER_AGENT = "relay-bridge/0.1"
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 8192  # as common servers allow in a request line
TARGET_SAFE = "/?&=:;@!$'()*+,~%[]"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_ssl_context: ssl.SSLContext | None = None


class HttpError(Exception):
    """A request failed or was refused; the message says why."""


@dataclass(frozen=True)
class FetchPolicy:
    """What a GET may fetch: size and time limits, allowed hosts and addresses."""

    max_bytes: int
    timeout_s: float
    allowed_hosts: tuple[str, ...] = ()  # exact hosts and "*.example.com"; empty: any host
    allow_private: bool = False
    max_redirects: int = MAX_REDIRECTS
    ssl_context: ssl.SSLContext | None = None  # None: the system trust store


@dataclass(frozen=True)
class HttpResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # lower-case names
    body: bytes
    url: str  # the URL that answered, after redirects

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


def default_ssl_context() -> ssl.SSLContext:
    # Loading the trust store takes milliseconds; do it once per process.
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def address_problem(address: str) -> str | None:
    """Why ``address`` may not be fetched from without ``allow_private`` (None: it is public)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            problem = address_problem(str(embedded))
            return f"{problem} (as {ip})" if problem else None
    for attr, what in (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
                       ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                       ("is_private", "a private"), ("is_reserved", "a reserved")):
        if getattr(ip, attr):
            return f"{ip} is {what} address"
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # without brackets
    port: int
    target: str  # path and query, as sent in the request line
    host_header: str
    auth: tuple[str, str] | None  # user info in the URL


def _shown(url: str, limit: int = 200) -> str:
    """``url`` quoted and escaped for a message, cut short if long."""
    return repr(url) if len(url) <= limit else repr(url[:limit]) + f"... ({len(url)} characters)"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be requested as it is written (None: it can be parsed and encoded)."""
    if len(url) > MAX_URL_CHARS:
        return f"it is {len(url)} characters long, over the limit of {MAX_URL_CHARS}"
    for i, char in enumerate(url):
        code = f"U+{ord(char):04X} at position {i}"
        if unicodedata.category(char) == "Cs":
            return f"it contains a lone surrogate ({code}), which cannot be encoded"
        if unicodedata.category(char) == "Cc":
            return f"it contains a control character ({code})"
        if char.isspace():
            return f"it contains white space ({code}); spaces must be percent-encoded as %20"
    return None


def _parse(url: str) -> _Target:
    problem = url_problem(url)
    if problem is not None:
        raise HttpError(f"invalid URL {_shown(url)}: {problem}")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise HttpError(f"only http and https URLs are allowed, got {scheme + ':' if scheme else 'no scheme'} "
                        f"in {url!r}")
    if not parts.hostname:
        raise HttpError(f"URL has no host: {url!r}")
    host = normalize_host(parts.hostname)
    port = port or DEFAULT_PORTS[scheme]
    netloc_host = f"[{host}]" if ":" in host else host
    host_header = netloc_host if port == DEFAULT_PORTS[scheme] else f"{netloc_host}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # As browsers do: non-ASCII characters are percent-encoded as UTF-8 (url_problem has refused
    # controls, white space and lone surrogates, so nothing can inject headers); %XX escapes stay.
    target = quote(target, safe=TARGET_SAFE)
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    return _Target(scheme, host, port, target, host_header, auth)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed (Twilio signs webhook URLs without them)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def _resolve(target: _Target, *, check: bool) -> list[tuple[int, str]]:
    """(family, address) pairs for the host; with ``check``, every one of them must be public."""
    try:
        infos = await trio.socket.getaddrinfo(target.host, target.port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise HttpError(f"cannot resolve {target.host}: {exc.strerror or exc}") from None
    except UnicodeError:  # the name cannot be IDNA-encoded (e.g. a label over 63 characters)
        raise HttpError(f"cannot resolve {target.host}: not a valid host name") from None
    addresses: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if (family, address) not in addresses:
            addresses.append((family, address))
    if not addresses:
        raise HttpError(f"{target.host} resolved to no address")
    if check:
        for _, address in addresses:
            problem = address_problem(address)
            if problem:
                named = "" if address == target.host else f" ({target.host} resolves to it)"
                raise HttpError(f"refused: {problem}{named}")
    return addresses


async def _connect(target: _Target, addresses: list[tuple[int, str]],
                   ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    errors = []
    for family, address in addresses:
        try:
            sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        except OSError as exc:  # e.g. IPv6 disabled on this host
            errors.append(f"{address}: {exc.strerror or exc}")
            continue
        try:
            await sock.connect((address, target.port))
        except OSError as exc:
            sock.close()
            errors.append(f"{address}: {exc.strerror or exc}")
            continue
        stream: trio.abc.Stream = trio.SocketStream(sock)
        if target.scheme == "https":
            # SNI and certificate checks against the name in the URL, not the address connected to.
            tls = trio.SSLStream(stream, ssl_context or default_ssl_context(), server_hostname=target.host,
                                 https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as exc:
                await trio.aclose_forcefully(tls)
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
                raise HttpError(f"TLS with {target.host} failed: {cause}") from None
            stream = tls
        return stream
    raise HttpError(f"cannot connect to {target.host} port {target.port}: {'; '.join(errors)}")


async def _exchange(stream: trio.abc.Stream, request: h11.Request, body: bytes, *, max_bytes: int,
                    truncate: bool) -> tuple[h11.Response, bytes]:
    """Send one request and read its response; the body is capped at ``max_bytes``.

    With ``truncate`` a longer body is cut short instead of being an error.
    """
    conn = h11.Connection(our_role=h11.CLIENT)
    try:
        data = conn.send(request) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError as exc:
        raise HttpError(f"cannot send the request: {exc}") from None
    try:
        await stream.send_all(data)
        response: h11.Response | None = None
        parts: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                received = bytes(await stream.receive_some(RECEIVE_BYTES))
                if not received and response is None:
                    raise HttpError("the server closed the connection without a response")
                conn.receive_data(received)
            elif isinstance(event, h11.Response):
                response = event
                length = _content_length(event)
                if length is not None and length > max_bytes and not truncate:
                    raise HttpError(f"body of {length} bytes is over the limit of {max_bytes}")
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_bytes:
                    if truncate:
                        parts.append(bytes(event.data[: max_bytes - size]))
                        break
                    raise HttpError(f"body is over the limit of {max_bytes} bytes")
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise HttpError(f"connection failed: {exc.__cause__ or exc}") from None
    except h11.ProtocolError as exc:
        raise HttpError(f"invalid HTTP response: {exc}") from None
    assert response is not None  # h11 ends a message only after its response
    return response, b"".join(parts)


def _content_length(response: h11.Response) -> int | None:
    for name, value in response.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


def _request(method: str, target: _Target, headers: list[tuple[str, str]]) -> h11.Request:
    base = [("Host", target.host_header), ("User-Agent", USER_AGENT), ("Accept-Encoding", "identity"),
            ("Connection", "close")]
    if target.auth is not None:
        base.append(("Authorization", basic_auth(*target.auth)))
    try:
        return h11.Request(method=method, target=target.target, headers=base + headers)
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        raise HttpError(f"cannot send the request: {exc}") from None


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _utf8(value: str) -> str:
    """A header value read as Latin-1 (``_response``) re-read as UTF-8, which servers use for raw
    non-ASCII in a Location; Latin-1 stays when the bytes are not UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return value


def _response(response: h11.Response, body: bytes, url: str) -> HttpResponse:
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers)
    return HttpResponse(response.status_code, response.reason.decode("latin-1"), headers, body, url)


async def http_get(url: str, policy: FetchPolicy) -> HttpResponse:
    """GET ``url`` under ``policy``, following redirects; a non-2xx final answer is an error."""
    original = url
    with trio.move_on_after(policy.timeout_s):
        for _ in range(policy.max_redirects + 1):
            target = _parse(url)
            if target.auth is not None:
                raise HttpError(f"URLs with credentials are not allowed: {without_credentials(url)!r}")
            if policy.allowed_hosts and not host_allowed(target.host, policy.allowed_hosts):
                raise HttpError(f"refused: host {target.host} is not in the allowed hosts")
            request = _request("GET", target, [("Accept", "*/*")])
            addresses = await _resolve(target, check=not policy.allow_private)
            stream = await _connect(target, addresses, policy.ssl_context)
            try:
                raw, body = await _exchange(stream, request, b"", max_bytes=policy.max_bytes, truncate=False)
            finally:
                await trio.aclose_forcefully(stream)
            response = _response(raw, body, url)
            if response.status in REDIRECT_STATUSES:
                location = response.header("location")
                if not location:
                    raise HttpError(f"HTTP {response.status} redirect without a Location from {url}")
                url = urljoin(url, _utf8(location.strip()))
                continue
            if not 200 <= response.status < 300:
                raise HttpError(f"HTTP {response.status} {response.reason} from {url}".rstrip())
            return response
        raise HttpError(f"more than {policy.max_redirects} redirects from {original}")
    raise HttpError(f"no complete answer within {policy.timeout_s * 1000:.0f} ms from {url}")


async def http_post_form(url: str, fields: Mapping[str, str], *, timeout_s: float,
                         auth: tuple[str, str] | None = None, headers: Mapping[str, str] | None = None,
                         ssl_context: ssl.SSLContext | None = None) -> HttpResponse:
    """POST ``fields`` as application/x-www-form-urlencoded; redirects are not followed.

    ``url`` comes from the operator's config, so no address rule applies. Credentials in the URL
    are used as HTTP basic auth unless ``auth`` is given. Any status is returned, not raised.
    """
    with trio.move_on_after(timeout_s):
        target = _parse(url)
        if auth is not None:
            target = _Target(target.scheme, target.host, target.port, target.target, target.host_header, auth)
        body = urlencode(list(fields.items())).encode("ascii")
        extra = [("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(body))),
                 ("Accept", "*/*"), *(headers or {}).items()]
        request = _request("POST", target, extra)
        addresses = await _resolve(target, check=False)
        stream = await _connect(target, addresses, ssl_context)
        try:
            raw, answer = await _exchange(stream, request, body, max_bytes=MAX_POST_RESPONSE_BYTES, truncate=True)
        finally:
            await trio.aclose_forcefully(stream)
        return _response(raw, answer, url)
    raise HttpError(f"no complete answer within {timeout_s * 1000:.0f} ms from {without_credentials(url)}")
