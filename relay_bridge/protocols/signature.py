"""``X-Twilio-Signature``: HMAC-SHA1, keyed by the account's auth token, over the URL exactly as
written in TwiML (for a WebSocket upgrade there are no POST parameters), base64-encoded."""

from __future__ import annotations

import base64
import hashlib
import hmac


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    data = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_valid(auth_token: str, url: str, signature: str) -> bool:
    # Compare bytes: compare_digest refuses non-ASCII str, and a forged header may hold anything.
    return hmac.compare_digest(twilio_signature(auth_token, url).encode(), signature.encode("utf-8", "surrogatepass"))
