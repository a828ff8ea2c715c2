"""Who may open a stream: the provider credentials an upgrade request carries, checked before any work.

Twilio signs the upgrade with ``X-Twilio-Signature`` over the stream URL exactly as written in
TwiML (protocols.md 1.1). That URL is the operator's ``public_url``, never one built from the
request: the ``Host`` header is the caller's to choose, so a signature made for another host of the
same account would otherwise pass. Twilio's own validators accept the URL with and without the
scheme's default port, so both spellings are tried.

Telnyx has no documented signature for media streams; the operator sets a ``stream_auth_token``
on the Telnyx side and the bridge expects it as ``Authorization: Bearer <token>`` or a ``token``
query parameter. Every comparison is constant-time.

A request may authenticate as one provider; the stream it then opens must be that provider's
(checked once the first frames show which it is). Without credentials a request is let in only when
the operator allowed unauthenticated streams and configured no credentials at all.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from relay_bridge.protocols.signature import signature_valid

TWILIO = "twilio"
TELNYX = "telnyx"
DEFAULT_PORTS = {"wss": 443, "https": 443, "ws": 80, "http": 80}


@dataclass(frozen=True)
class Credentials:
    twilio_auth_token: str = ""
    public_url: str = ""
    telnyx_stream_token: str = ""
    allow_unauthenticated: bool = False

    @property
    def configured(self) -> bool:
        """Whether any provider's credentials are configured."""
        return bool(self.twilio_auth_token or self.telnyx_stream_token)

    @property
    def open(self) -> bool:
        """Whether streams may come without credentials: only when asked for and none are configured.

        Once any credentials are configured every stream must present some, whichever provider it is
        from: a provider left without credentials cannot open a stream.
        """
        return self.allow_unauthenticated and not self.configured


@dataclass(frozen=True)
class Verdict:
    """``provider`` is who the request proved to be ("" for nobody); ``refusal`` is why it is refused."""

    provider: str = ""
    refusal: str = ""

    def admits(self, provider: str, credentials: Credentials) -> bool:
        """Whether a stream of ``provider`` may go on under this verdict (its first frames are known)."""
        if self.provider:
            return self.provider == provider
        return credentials.open


def url_spellings(url: str) -> list[str]:
    """``url`` as written, and with the scheme's default port added or removed."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = userinfo + "@" if userinfo else ""
    spellings = [url]
    try:
        port = parts.port
    except ValueError:
        return spellings
    if default is None:
        return spellings
    if port is None:
        spellings.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif port == default:
        spellings.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return spellings


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _equal(expected: str, presented: str) -> bool:
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))


def telnyx_token(headers: list[tuple[bytes, bytes]], target: str) -> str | None:
    """The token a Telnyx upgrade presents (bearer header first), or None."""
    auth = _header(headers, b"authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    # By hand, not parse_qsl: that raises on too many fields, and a query is the peer's to make up.
    for pair in target.partition("?")[2].split("&"):
        key, _, value = pair.partition("=")
        if key == "token":
            return unquote_plus(value)
    return None


def authenticate(credentials: Credentials, headers: list[tuple[bytes, bytes]], target: str) -> Verdict:
    """Check an upgrade request's credentials (``target`` is its request target, path and query)."""
    signature = _header(headers, b"x-twilio-signature")
    if signature is not None:
        token = credentials.twilio_auth_token
        if not token:
            # Presented but not checkable: treated like no credentials at all.
            return Verdict() if credentials.open else Verdict(refusal="no Twilio auth token configured")
        if any(signature_valid(token, url, signature) for url in url_spellings(credentials.public_url)):
            return Verdict(provider=TWILIO)
        return Verdict(refusal="wrong X-Twilio-Signature")
    presented = telnyx_token(headers, target)
    if presented is not None and credentials.telnyx_stream_token:
        if _equal(credentials.telnyx_stream_token, presented):
            return Verdict(provider=TELNYX)
        return Verdict(refusal="wrong Telnyx stream token")
    if credentials.open:
        return Verdict()
    return Verdict(refusal="no credentials (X-Twilio-Signature, or a Telnyx stream token)")
