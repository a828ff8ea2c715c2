"""The HTTP client: limits, redirects, TLS, and the address policy that keeps app-chosen URLs off private networks."""

from __future__ import annotations

import base64
import ssl

import pytest
import trio
import trio.testing
import trustme

from relay_bridge.net.http import FetchPolicy, HttpError, address_problem, http_get, http_post_form, without_credentials
from relay_bridge.settings import host_allowed
from tests.httpserver import Received, RoutedSocketFactory, StaticResolver, answer, open_http_server, response

LOCAL = FetchPolicy(max_bytes=1000, timeout_s=10, allow_private=True)
PUBLIC = FetchPolicy(max_bytes=1000, timeout_s=10)


async def test_get_with_content_length() -> None:
    async with open_http_server(answer(response(200, b"RIFF data", [("Content-Type", "audio/wav")]))) as srv:
        with trio.fail_after(10):
            got = await http_get(srv.url("/media/a.wav?v=2"), LOCAL)
    assert (got.status, got.body, got.header("content-type")) == (200, b"RIFF data", "audio/wav")
    [req] = srv.requests
    assert (req.method, req.target) == ("GET", "/media/a.wav?v=2")
    assert req.headers["host"] == f"127.0.0.1:{srv.port}"
    assert req.headers["accept-encoding"] == "identity"
    assert "authorization" not in req.headers


async def test_chunked_body_is_reassembled() -> None:
    chunks = [b"abc", b"", b"defgh", b"x" * 300]
    async with open_http_server(answer(response(200, chunks=[c for c in chunks if c]))) as srv:
        with trio.fail_after(10):
            got = await http_get(srv.url("/c"), LOCAL)
    assert got.body == b"".join(chunks)


async def test_relative_and_absolute_redirects_are_followed() -> None:
    async def handler(req: Received, stream: trio.abc.Stream) -> None:
        if req.target == "/first":
            await stream.send_all(response(301, headers=[("Location", "second?x=1")]))
        elif req.target == "/second?x=1":
            await stream.send_all(response(307, headers=[("Location", f"http://127.0.0.1:{srv.port}/third")]))
        else:
            await stream.send_all(response(200, b"done"))

    async with open_http_server(handler) as srv:
        with trio.fail_after(10):
            got = await http_get(srv.url("/first"), LOCAL)
    assert got.body == b"done"
    assert got.url == srv.url("/third")
    assert [r.target for r in srv.requests] == ["/first", "/second?x=1", "/third"]


async def test_redirects_are_bounded() -> None:
    async with open_http_server(answer(response(302, headers=[("Location", "/again")]))) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="more than 2 redirects"):
            await http_get(srv.url("/loop"), FetchPolicy(max_bytes=1000, timeout_s=10, allow_private=True,
                                                         max_redirects=2))
    assert len(srv.requests) == 3


@pytest.mark.parametrize(("location", "needle"), [
    ("ftp://127.0.0.1/file", "only http and https"),
    ("http://localhost:1/x", "host localhost is not in the allowed hosts"),
])
async def test_each_redirect_is_checked_again(location: str, needle: str) -> None:
    policy = FetchPolicy(max_bytes=1000, timeout_s=10, allow_private=True, allowed_hosts=("127.0.0.1",))
    async with open_http_server(answer(response(302, headers=[("Location", location)]))) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match=needle):
            await http_get(srv.url("/r"), policy)
    assert len(srv.requests) == 1


async def test_a_public_server_is_fetched_with_the_address_rule_on() -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"cdn.example.com": ["93.184.216.34"]}))
    async with open_http_server(answer(response(200, b"public"))) as srv:
        trio.socket.set_custom_socket_factory(RoutedSocketFactory({"93.184.216.34": srv.port}))
        with trio.fail_after(10):
            got = await http_get("http://cdn.example.com/a.wav", PUBLIC)
    assert got.body == b"public"
    assert srv.requests[0].headers["host"] == "cdn.example.com"


@pytest.mark.parametrize("location", ["http://inner.example.com/secret", "http://169.254.169.254/latest/meta-data/",
                                      "http://[::ffff:127.0.0.1]/"])
async def test_a_redirect_to_a_private_address_is_refused(location: str) -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"cdn.example.com": ["93.184.216.34"],
                                                            "inner.example.com": ["10.1.2.3"]}))
    async with open_http_server(answer(response(302, headers=[("Location", location)]))) as srv:
        trio.socket.set_custom_socket_factory(RoutedSocketFactory({"93.184.216.34": srv.port}))
        with trio.fail_after(10), pytest.raises(HttpError, match=r"refused: .* address"):
            await http_get("http://cdn.example.com/a.wav", PUBLIC)
    assert len(srv.requests) == 1


async def test_error_status_is_an_error() -> None:
    async with open_http_server(answer(response(404, b"nope", reason="Not Found"))) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match=r"HTTP 404 Not Found from http://127\.0\.0\.1"):
            await http_get(srv.url("/missing.wav"), LOCAL)


async def test_content_length_over_the_limit_is_refused_before_the_body() -> None:
    async def lie(req: Received, stream: trio.abc.Stream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
        await trio.sleep_forever()  # the client must not wait for a body it will refuse

    async with open_http_server(lie) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="body of 5000 bytes is over the limit of 1000"):
            await http_get(srv.url("/big"), LOCAL)


async def test_chunked_body_over_the_limit_is_cut_off_while_streaming() -> None:
    async with open_http_server(answer(response(200, chunks=[b"x" * 600, b"y" * 600]))) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="over the limit of 1000 bytes"):
            await http_get(srv.url("/big"), LOCAL)


async def test_body_exactly_at_the_limit_is_fine() -> None:
    async with open_http_server(answer(response(200, chunks=[b"x" * 999, b"y"]))) as srv:
        with trio.fail_after(10):
            assert len((await http_get(srv.url("/ok"), LOCAL)).body) == 1000


async def test_total_time_limit(autojump_clock: trio.testing.MockClock) -> None:
    async def stall(req: Received, stream: trio.abc.Stream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await trio.sleep_forever()

    async with open_http_server(stall) as srv:
        with pytest.raises(HttpError, match="no complete answer within 2500 ms"):
            await http_get(srv.url("/slow"), FetchPolicy(max_bytes=1000, timeout_s=2.5, allow_private=True))


async def test_connection_closed_before_a_response() -> None:
    async def hang_up(req: Received, stream: trio.abc.Stream) -> None:
        pass

    async with open_http_server(hang_up) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="closed the connection without a response"):
            await http_get(srv.url("/x"), LOCAL)


async def test_truncated_body_is_an_error() -> None:
    async with open_http_server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="invalid HTTP response"):
            await http_get(srv.url("/x"), LOCAL)


async def test_connection_refused() -> None:
    async with open_http_server(answer(b"")) as srv:
        port = srv.port
    with trio.fail_after(10), pytest.raises(HttpError, match=f"cannot connect to 127.0.0.1 port {port}"):
        await http_get(f"http://127.0.0.1:{port}/x", LOCAL)


@pytest.mark.parametrize("url", ["ftp://example.com/a.wav", "file:///etc/passwd", "data:audio/wav;base64,AAAA",
                                 "gopher://example.com/", "example.com/a.wav", "//example.com/a.wav"])
async def test_only_http_and_https(url: str) -> None:
    with pytest.raises(HttpError, match="only http and https URLs are allowed"):
        await http_get(url, PUBLIC)


@pytest.mark.parametrize("url", ["http:///path", "http://example.com:99999/", "http://example.com:port/"])
async def test_malformed_urls(url: str) -> None:
    with pytest.raises(HttpError, match=r"invalid URL|no host"):
        await http_get(url, PUBLIC)


async def test_non_ascii_is_percent_encoded_as_utf8_and_escapes_are_kept() -> None:
    async with open_http_server(answer(response(200, b"ok"))) as srv:
        with trio.fail_after(10):
            await http_get(srv.url("/hold%20music/ä.wav?q=a%20b&r=%41"), LOCAL)
    [req] = srv.requests
    assert req.target == "/hold%20music/%C3%A4.wav?q=a%20b&r=%41"


@pytest.mark.parametrize(("suffix", "needle"), [
    ("/\ud800.wav", r"contains a lone surrogate \(U\+D800 at position \d+\), which cannot be encoded"),
    ("/a.wav?x=\udfff", r"contains a lone surrogate \(U\+DFFF"),
    ("/a.wav\r\nX-Injected: 1", r"contains a control character \(U\+000D"),  # urlsplit would drop CR and LF
    ("/a\tb.wav", r"contains a control character \(U\+0009"),
    ("/a\x00.wav", r"contains a control character \(U\+0000"),
    ("/a\x7f.wav", r"contains a control character \(U\+007F"),
    ("/a\x85.wav", r"contains a control character \(U\+0085"),
    ("/hold music.wav", r"contains white space \(U\+0020 at position \d+\); spaces must be percent-encoded"),
    ("/a\u00a0.wav", r"contains white space \(U\+00A0"),
    ("/" + "a" * 9000, r"is 90\d\d characters long, over the limit of 8192"),
])
async def test_urls_that_cannot_be_sent_as_written_are_refused(suffix: str, needle: str) -> None:
    """Refused with an HttpError that says why, before any connection (formerly a lone surrogate escaped
    as a UnicodeEncodeError, and CR/LF and spaces were silently dropped or encoded)."""
    async with open_http_server(answer(response(200, b"ok"))) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="invalid URL '.*: it " + needle) as exc:
            await http_get(srv.url(suffix), LOCAL)
    assert srv.requests == []
    str(exc.value).encode("utf-8")  # the message itself can be logged and sent to the app


async def test_an_over_long_url_is_not_echoed_in_full() -> None:
    with pytest.raises(HttpError) as exc:
        await http_get("http://example.com/" + "a" * 20000, PUBLIC)
    assert len(str(exc.value)) < 400 and "(20019 characters)" in str(exc.value)


async def test_a_raw_utf8_redirect_location_is_percent_encoded_as_utf8() -> None:
    async def handler(req: Received, stream: trio.abc.Stream) -> None:
        if req.target == "/first":
            await stream.send_all(b"HTTP/1.1 302 Found\r\nLocation: /\xc5\x9b.wav\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n")
        else:
            await stream.send_all(response(200, b"done"))

    async with open_http_server(handler) as srv:
        with trio.fail_after(10):
            got = await http_get(srv.url("/first"), LOCAL)
    assert got.body == b"done"
    assert [r.target for r in srv.requests] == ["/first", "/%C5%9B.wav"]  # not the Latin-1 reading, %C3%85%C2%9B


async def test_bad_header_values_are_an_error_not_a_crash() -> None:
    with pytest.raises(HttpError, match="cannot send the request"):
        await http_post_form("http://127.0.0.1:9/cb", {}, timeout_s=5, headers={"X-Bad": "a\r\nb"})


async def test_credentials_in_a_play_url_are_refused() -> None:
    with pytest.raises(HttpError, match=r"credentials are not allowed: 'http://example\.com/a'"):
        await http_get("http://user:secret@example.com/a", PUBLIC)


@pytest.mark.parametrize(("host", "needle"), [
    ("10.0.0.5", "10.0.0.5 is a private address"),
    ("172.16.9.1", "172.16.9.1 is a private address"),
    ("192.168.1.1", "192.168.1.1 is a private address"),
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("127.8.9.10", "127.8.9.10 is a loopback address"),
    ("169.254.169.254", "169.254.169.254 is a link-local address"),
    ("0.0.0.0", "0.0.0.0 is an unspecified address"),
    ("224.0.0.1", "224.0.0.1 is a multicast address"),
    ("240.0.0.1", "240.0.0.1 is a"),
    ("100.64.0.1", "100.64.0.1 is not a public address"),
    ("[::1]", "::1 is a loopback address"),
    ("[::]", ":: is an unspecified address"),
    ("[fe80::1]", "fe80::1 is a link-local address"),
    ("[fc00::1]", "fc00::1 is a private address"),
    ("[ff02::1]", "ff02::1 is a multicast address"),
    ("[::ffff:10.0.0.5]", "10.0.0.5 is a private address (as ::ffff:a00:5)"),
    ("[::ffff:127.0.0.1]", "127.0.0.1 is a loopback address (as ::ffff:7f00:1)"),
    ("[64:ff9b::a9fe:a9fe]", "169.254.169.254 is a link-local address"),
    ("[2002:c0a8:101::1]", "192.168.1.1 is a private address"),
])
async def test_literal_non_public_addresses_are_refused(host: str, needle: str) -> None:
    with pytest.raises(HttpError) as exc:
        await http_get(f"http://{host}/a.wav", PUBLIC)
    assert f"refused: {needle}" in str(exc.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    with trio.fail_after(10), pytest.raises(HttpError, match=r"is a loopback address \(localhost resolves to it\)"):
        await http_get("http://localhost/a.wav", PUBLIC)


async def test_a_name_with_any_private_address_is_refused() -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"mixed.example.com": ["93.184.216.34", "10.9.8.7"]}))
    with pytest.raises(HttpError, match=r"refused: 10\.9\.8\.7 is a private address \(mixed\.example\.com resolves"):
        await http_get("http://mixed.example.com/a.wav", PUBLIC)


async def test_unresolvable_name() -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({}))
    with pytest.raises(HttpError, match=r"cannot resolve nowhere\.example\.com"):
        await http_get("http://nowhere.example.com/a.wav", PUBLIC)


async def test_a_host_name_that_cannot_be_encoded_is_an_http_error() -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({}))
    with pytest.raises(HttpError, match="not a valid host name"):  # a DNS label is at most 63 characters
        await http_get(f"http://{'a' * 64}.example.com/a.wav", PUBLIC)


async def test_connects_to_the_checked_address_without_a_second_lookup() -> None:
    resolver = StaticResolver({"media.example.com": ["127.0.0.1"]})
    trio.socket.set_custom_hostname_resolver(resolver)
    async with open_http_server(answer(response(200, b"ok"))) as srv:
        with trio.fail_after(10):
            got = await http_get(srv.url("/a", host="media.example.com"), LOCAL)
    assert got.body == b"ok"
    assert resolver.lookups == ["media.example.com"]
    assert srv.requests[0].headers["host"] == f"media.example.com:{srv.port}"


@pytest.mark.parametrize(("host", "allowed"), [
    ("media.example.com", True), ("MEDIA.Example.com.", True), ("a.b.cdn.example.net", True),
    ("cdn.example.net", False), ("example.com", False), ("evil-media.example.com", False),
    ("media.example.com.evil.io", False), ("xcdn.example.net", False),
])
def test_allowlist_matching(host: str, allowed: bool) -> None:
    assert host_allowed(host, ("media.example.com", "*.cdn.example.net")) is allowed


async def test_allowlist_refuses_other_hosts_before_any_lookup() -> None:
    resolver = StaticResolver({"other.example.org": ["93.184.216.34"]})
    trio.socket.set_custom_hostname_resolver(resolver)
    policy = FetchPolicy(max_bytes=1000, timeout_s=10, allowed_hosts=("*.example.com",))
    with pytest.raises(HttpError, match=r"refused: host other\.example\.org is not in the allowed hosts"):
        await http_get("https://other.example.org/a.wav", policy)
    assert resolver.lookups == []


async def test_allowlisted_host_is_still_subject_to_the_address_rule() -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"media.example.com": ["127.0.0.1"]}))
    policy = FetchPolicy(max_bytes=1000, timeout_s=10, allowed_hosts=("media.example.com",))
    with pytest.raises(HttpError, match=r"127\.0\.0\.1 is a loopback address"):
        await http_get("http://media.example.com/a.wav", policy)


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_https_with_sni_and_verification(ca: trustme.CA) -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"media.example.com": ["127.0.0.1"]}))
    policy = FetchPolicy(max_bytes=1000, timeout_s=10, allow_private=True, ssl_context=client_tls(ca))
    async with open_http_server(answer(response(200, b"secure")), tls=server_tls(ca, "media.example.com")) as srv:
        with trio.fail_after(10):
            got = await http_get(srv.url("/a.wav", host="media.example.com", scheme="https"), policy)
    assert got.body == b"secure"
    assert srv.server_names == ["media.example.com"]


async def test_https_refuses_a_certificate_for_another_name(ca: trustme.CA) -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"media.example.com": ["127.0.0.1"]}))
    policy = FetchPolicy(max_bytes=1000, timeout_s=10, allow_private=True, ssl_context=client_tls(ca))
    async with open_http_server(answer(response(200, b"x")), tls=server_tls(ca, "other.example.com")) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match=r"TLS with media\.example\.com failed: .*certificate"):
            await http_get(srv.url("/a.wav", host="media.example.com", scheme="https"), policy)
    assert srv.requests == []


async def test_https_refuses_an_untrusted_certificate(ca: trustme.CA) -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({"media.example.com": ["127.0.0.1"]}))
    async with open_http_server(answer(response(200, b"x")), tls=server_tls(ca, "media.example.com")) as srv:
        with trio.fail_after(10), pytest.raises(HttpError, match="certificate verify failed"):
            await http_get(srv.url("/a.wav", host="media.example.com", scheme="https"), LOCAL)  # system trust


# -- POST -----------------------------------------------------------------------------------


async def test_post_form_with_basic_auth() -> None:
    async with open_http_server(answer(response(201, b'{"sid": "CA1"}'))) as srv:
        with trio.fail_after(10):
            got = await http_post_form(srv.url("/hook?a=1"), {"Url": "https://app.example/next?x=1&y=2", "Z": "é"},
                                       timeout_s=10, auth=("AC123", "tok:en"), headers={"X-Extra": "1"})
    assert (got.status, got.body) == (201, b'{"sid": "CA1"}')
    [req] = srv.requests
    assert (req.method, req.target) == ("POST", "/hook?a=1")
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tok:en").decode()
    assert req.headers["x-extra"] == "1"
    assert req.body == b"Url=https%3A%2F%2Fapp.example%2Fnext%3Fx%3D1%26y%3D2&Z=%C3%A9"
    assert req.form() == {"Url": "https://app.example/next?x=1&y=2", "Z": "é"}


async def test_post_uses_credentials_in_the_url_and_may_reach_private_addresses() -> None:
    async with open_http_server(answer(response(204))) as srv:
        url = f"http://hook%40user:p%3Ass@127.0.0.1:{srv.port}/cb"
        with trio.fail_after(10):
            got = await http_post_form(url, {"A": "1"}, timeout_s=10)
    assert got.status == 204
    assert srv.requests[0].headers["authorization"] == "Basic " + base64.b64encode(b"hook@user:p:ss").decode()
    assert srv.requests[0].headers["host"] == f"127.0.0.1:{srv.port}"
    assert without_credentials(url) == f"http://127.0.0.1:{srv.port}/cb"


async def test_post_returns_errors_and_redirects_without_following() -> None:
    async with open_http_server(answer(response(302, b"moved", [("Location", "/elsewhere")]))) as srv:
        with trio.fail_after(10):
            got = await http_post_form(srv.url("/cb"), {}, timeout_s=10)
    assert (got.status, got.header("location"), len(srv.requests)) == (302, "/elsewhere", 1)


async def test_post_time_limit(autojump_clock: trio.testing.MockClock) -> None:
    async def stall(req: Received, stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    async with open_http_server(stall) as srv:
        with pytest.raises(HttpError, match="no complete answer within 1500 ms"):
            await http_post_form(srv.url("/cb"), {"A": "1"}, timeout_s=1.5)
