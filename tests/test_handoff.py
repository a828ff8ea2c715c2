"""End-of-session delivery: the <Connect action>-style callback, its signature, and the REST redirect."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging

import pytest
import trio
import trio.testing

from relay_bridge.net.handoff import SessionReport, deliver_session_end
from relay_bridge.settings import HandoffSettings
from tests.httpserver import Received, answer, open_http_server, response

ACCOUNT = "AC" + "a1" * 16
CALL = "CA" + "b2" * 16
SESSION = "VX" + "c3" * 16
LOG = logging.getLogger("tests.handoff")


def report(status: str = "ended", **kw: object) -> SessionReport:
    base: dict[str, object] = {"session_id": SESSION, "call_sid": CALL, "account_sid": ACCOUNT, "status": status,
                               "duration_s": 42.4}
    return SessionReport(**(base | kw))  # type: ignore[arg-type]


def expected_signature(token: str, url: str, fields: dict[str, str]) -> str:
    """Twilio's scheme, written out here independently of the bridge's own helper."""
    data = url + "".join(name + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@pytest.mark.parametrize(("rep", "fields"), [
    (report("ended", handoff_data='{"reason":"agent","q":"a&b=c"}'),
     {"CallStatus": "in-progress", "SessionStatus": "ended", "SessionDuration": "42",
      "HandoffData": '{"reason":"agent","q":"a&b=c"}'}),
    (report("ended", handoff_data=""), {"CallStatus": "in-progress", "SessionStatus": "ended",
                                        "SessionDuration": "42", "HandoffData": ""}),
    (report("completed", duration_s=0.6), {"CallStatus": "completed", "SessionStatus": "completed",
                                           "SessionDuration": "1"}),
    (report("failed", error_code=64105, error_message="Websocket ended"),
     {"CallStatus": "in-progress", "SessionStatus": "failed", "SessionDuration": "42", "ErrorCode": "64105",
      "ErrorMessage": "Websocket ended"}),
])
def test_report_fields(rep: SessionReport, fields: dict[str, str]) -> None:
    assert rep.form() == {"AccountSid": ACCOUNT, "CallSid": CALL, "SessionId": SESSION} | fields


@pytest.mark.parametrize(("kw", "needle"), [
    ({"status": "hungup"}, "status must be one of ended, completed, failed"),
    ({"status": "failed"}, "error_code must be given exactly when status is failed"),
    ({"status": "ended", "error_code": 64105}, "error_code must be given exactly when status is failed"),
])
def test_report_validation(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        report(**kw)  # type: ignore[arg-type]


async def test_callback_is_posted_and_signed() -> None:
    async with open_http_server(answer(response(200, b"<Response/>"))) as srv:
        url = srv.url("/cr/action?tenant=7")
        settings = HandoffSettings(callback_url=url, callback_auth_token="secret-token")
        rep = report("ended", handoff_data='{"to":"sales"}')
        with trio.fail_after(10):
            await deliver_session_end(settings, rep, log=LOG)
    [req] = srv.requests
    assert (req.method, req.target) == ("POST", "/cr/action?tenant=7")
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.form() == rep.form()
    assert req.headers["x-twilio-signature"] == expected_signature("secret-token", url, rep.form())
    assert "authorization" not in req.headers


async def test_callback_with_basic_auth_signs_the_url_without_credentials() -> None:
    async with open_http_server(answer(response(204))) as srv:
        settings = HandoffSettings(callback_url=f"http://app:pw@127.0.0.1:{srv.port}/action",
                                   callback_auth_token="tok")
        with trio.fail_after(10):
            await deliver_session_end(settings, report("completed"), log=LOG)
    [req] = srv.requests
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"app:pw").decode()
    assert req.headers["x-twilio-signature"] == expected_signature("tok", srv.url("/action"),
                                                                   report("completed").form())


async def test_unsigned_callback_without_token() -> None:
    async with open_http_server(answer(response(200))) as srv:
        with trio.fail_after(10):
            await deliver_session_end(HandoffSettings(callback_url=srv.url("/a")), report("completed"), log=LOG)
    assert "x-twilio-signature" not in srv.requests[0].headers


def redirecting(port: int, **kw: str) -> HandoffSettings:
    return HandoffSettings(redirect_url="https://app.example.com/after-relay?x=1", twilio_account_sid=ACCOUNT,
                           twilio_auth_token="rest-token", twilio_api_base=f"http://127.0.0.1:{port}/", **kw)


async def test_end_redirects_the_call_after_the_callback() -> None:
    async def handler(req: Received, stream: trio.abc.Stream) -> None:
        await stream.send_all(response(200, b'{"sid": "%s"}' % CALL.encode()))

    async with open_http_server(handler) as srv:
        settings = redirecting(srv.port, callback_url=srv.url("/action"))
        with trio.fail_after(10):
            await deliver_session_end(settings, report("ended", handoff_data="x"), log=LOG)
    callback, redirect = srv.requests
    assert callback.target == "/action"
    assert (redirect.method, redirect.target) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json")
    assert redirect.form() == {"Url": "https://app.example.com/after-relay?x=1"}
    assert redirect.headers["authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT}:rest-token".encode()).decode()
    assert redirect.headers["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize("rep", [report("completed"), report("failed", error_code=64105, error_message="x")])
async def test_no_redirect_unless_the_app_ended_the_session(rep: SessionReport) -> None:
    async with open_http_server(answer(response(200))) as srv:
        with trio.fail_after(10):
            await deliver_session_end(redirecting(srv.port), rep, log=LOG)
    assert srv.requests == []


async def test_no_redirect_for_a_call_that_did_not_come_from_twilio() -> None:
    async with open_http_server(answer(response(200))) as srv:
        with trio.fail_after(10):
            await deliver_session_end(redirecting(srv.port, callback_url=srv.url("/action")),
                                      report("ended", handoff_data="x"), log=LOG, redirect=False)
    assert [r.target for r in srv.requests] == ["/action"]  # the callback only


async def test_nothing_configured_sends_nothing(caplog: pytest.LogCaptureFixture) -> None:
    await deliver_session_end(HandoffSettings(), report(), log=LOG)
    assert caplog.records == []


async def test_error_answers_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with open_http_server(answer(response(401, b"bad credentials", reason="Unauthorized"))) as srv:
        with trio.fail_after(10):
            await deliver_session_end(redirecting(srv.port, callback_url=srv.url("/cb")), report(), log=LOG)
    assert len(srv.requests) == 2  # a failed callback does not stop the redirect
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"session callback to {srv.url('/cb')}: HTTP 401 Unauthorized: bad credentials",
        f"redirect of call {CALL} to https://app.example.com/after-relay?x=1: HTTP 401 Unauthorized: bad credentials",
    ]


async def test_unreachable_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async with open_http_server(answer(b"")) as srv:
        port = srv.port
    settings = HandoffSettings(callback_url=f"http://user:pw@127.0.0.1:{port}/cb")
    with trio.fail_after(10):
        await deliver_session_end(settings, report(), log=LOG)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(f"session callback to http://127.0.0.1:{port}/cb failed: cannot connect")
    assert "pw" not in record.getMessage()


async def test_delivery_is_time_bounded(autojump_clock: trio.testing.MockClock,
                                        caplog: pytest.LogCaptureFixture) -> None:
    async def stall(req: Received, stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    async with open_http_server(stall) as srv:
        settings = redirecting(srv.port, callback_url=srv.url("/cb"), timeout_ms=800)
        start = trio.current_time()
        await deliver_session_end(settings, report(), log=LOG)
        assert trio.current_time() - start == pytest.approx(1.6)
    assert [r.getMessage().rpartition(": ")[2] for r in caplog.records] == [
        f"no complete answer within 800 ms from {srv.url('/cb')}",
        f"no complete answer within 800 ms from http://127.0.0.1:{srv.port}/2010-04-01/Accounts/{ACCOUNT}/Calls/"
        f"{CALL}.json",
    ]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"callback_url": "ftp://x.example/cb"}, "callback_url must be an http:// or https:// URL"),
    ({"callback_url": "https://x.example:port/"}, "callback_url has an invalid port"),
    ({"twilio_api_base": ""}, "twilio_api_base must be an http:// or https:// URL"),
    ({"redirect_url": "https://app.example/next"}, "twilio_account_sid must be set when redirect_url is"),
    ({"twilio_account_sid": ACCOUNT, "twilio_auth_token": "t"}, "redirect_url must be set when twilio_account_sid"),
    ({"redirect_url": "https://a.example/", "twilio_account_sid": ACCOUNT},
     "twilio_auth_token must be set when redirect_url"),
    ({"twilio_account_sid": "AC123"}, "twilio_account_sid must be AC and 32 hex digits"),
    ({"timeout_ms": 0}, "timeout_ms must be at least 1"),
])
def test_settings_validation(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        HandoffSettings(**kw)  # type: ignore[arg-type]
