"""End of a session: what Twilio would post to the ``<Connect action>`` URL, and an optional redirect.

Over Media Streams, Twilio calls the ``<Connect action>`` URL itself when the stream ends, but
only with the standard call parameters: it knows nothing of the relay session, so ``SessionStatus``,
``SessionDuration`` and the app's ``HandoffData`` never reach the app that way (protocols.md §4.6).
The bridge posts them to ``handoff.callback_url``, with the §2.6 parameter names, signed like a
Twilio webhook when a token is configured so the app's existing Twilio validator accepts it.

After an app's ``end``, the bridge can also move the live call on to new TwiML by posting
``Url=<redirect_url>`` to the Call resource (§4.5), which replaces the ``<Connect><Stream>``. The
callback goes first, so the app already holds the handoff data when Twilio fetches the redirect.
Delivery never raises: failures are logged, and each request is time-bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from relay_bridge.net.http import HttpError, HttpResponse, http_post_form, without_credentials
from relay_bridge.protocols.signature import twilio_signature
from relay_bridge.settings import HandoffSettings

SESSION_STATUSES = ("ended", "completed", "failed")
ERROR_WEBSOCKET_ENDED = (64105, "Websocket ended")
ERROR_RTP_TIMEOUT = (64108, "RTP timeout")

Log = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class SessionReport:
    """How a relay session ended, as the ``<Connect action>`` callback reports it."""

    session_id: str
    call_sid: str
    account_sid: str
    status: str  # ended: the app sent end; completed: the caller hung up (stop); failed: an error
    duration_s: float
    handoff_data: str | None = None  # from the app's end, verbatim
    error_code: int | None = None  # with failed, e.g. 64105
    error_message: str = ""

    def __post_init__(self) -> None:
        if self.status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SESSION_STATUSES)}, got {self.status!r}")
        if (self.status == "failed") != (self.error_code is not None):
            raise ValueError("error_code must be given exactly when status is failed")

    @property
    def call_status(self) -> str:
        # After end or an error the call itself goes on with the next TwiML; only a hangup completes it.
        return "completed" if self.status == "completed" else "in-progress"

    def form(self) -> dict[str, str]:
        """The callback's form fields, named as Twilio names them."""
        fields = {
            "AccountSid": self.account_sid,
            "CallSid": self.call_sid,
            "CallStatus": self.call_status,
            "SessionId": self.session_id,
            "SessionStatus": self.status,
            "SessionDuration": str(max(0, round(self.duration_s))),
        }
        if self.handoff_data is not None:
            fields["HandoffData"] = self.handoff_data
        if self.error_code is not None:
            fields["ErrorCode"] = str(self.error_code)
            fields["ErrorMessage"] = self.error_message
        return fields


def calls_url(settings: HandoffSettings, call_sid: str) -> str:
    """The Call resource of ``call_sid`` (§4.5)."""
    base = settings.twilio_api_base.rstrip("/")
    account = quote(settings.twilio_account_sid, safe="")
    return f"{base}/2010-04-01/Accounts/{account}/Calls/{quote(call_sid, safe='')}.json"


async def post_callback(settings: HandoffSettings, report: SessionReport) -> HttpResponse:
    """POST the report to ``callback_url``, signed when ``callback_auth_token`` is set. Raises ``HttpError``."""
    fields = report.form()
    headers = {}
    if settings.callback_auth_token:
        # Twilio signs the URL as configured, minus any user:password, followed by the sorted fields.
        url = without_credentials(settings.callback_url)
        headers["X-Twilio-Signature"] = twilio_signature(settings.callback_auth_token, url, fields)
    return await http_post_form(settings.callback_url, fields, timeout_s=settings.timeout_ms / 1000,
                                headers=headers)


async def redirect_call(settings: HandoffSettings, call_sid: str) -> HttpResponse:
    """Ask Twilio to fetch new TwiML for the live call from ``redirect_url``. Raises ``HttpError``."""
    return await http_post_form(calls_url(settings, call_sid), {"Url": settings.redirect_url},
                                timeout_s=settings.timeout_ms / 1000,
                                auth=(settings.twilio_account_sid, settings.twilio_auth_token))


async def deliver_session_end(settings: HandoffSettings, report: SessionReport, *, log: Log,
                              redirect: bool = True) -> None:
    """Post the callback and, after an app ``end``, redirect the call, as configured. Never raises.

    ``redirect`` False skips the redirect (a call that did not come from Twilio)."""
    if settings.callback_url:
        await _attempt(log, "session callback to " + without_credentials(settings.callback_url),
                       post_callback(settings, report))
    if settings.redirects and redirect and report.status == "ended":
        if not report.call_sid:
            log.warning("cannot redirect the call: no CallSid")
            return
        await _attempt(log, f"redirect of call {report.call_sid} to {settings.redirect_url}",
                       redirect_call(settings, report.call_sid))


async def _attempt(log: Log, what: str, request: Awaitable[HttpResponse]) -> None:
    try:
        response = await request
    except HttpError as exc:
        log.warning("%s failed: %s", what, exc)
        return
    except Exception:  # our bug: it must not take the call's teardown (or the server) down with it
        log.exception("%s failed", what)
        return
    if 200 <= response.status < 300:
        log.info("%s: HTTP %d", what, response.status)
    else:
        log.warning("%s: HTTP %d %s: %.200s", what, response.status, response.reason,
                    response.body.decode("utf-8", "replace"))
