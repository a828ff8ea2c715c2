"""X-Twilio-Signature: HMAC-SHA1 over the URL (plus sorted POST params), base64."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from relay_bridge.protocols.signature import signature_valid, twilio_signature

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
# The worked example on Twilio's "Webhooks security" page (twilio.com/docs/usage/security).
DOCS_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
               "From": "+12349013030", "To": "+18005551212"}
DOCS_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
# The vector in the official SDKs' RequestValidator tests (twilio-php, twilio-csharp, twilio-python):
# same token and URL, but Caller/From are +14158675309.
SDK_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
              "From": "+14158675309", "To": "+18005551212"}
SDK_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilio_docs_vector() -> None:
    assert twilio_signature(TOKEN, URL, DOCS_PARAMS) == DOCS_SIGNATURE


def test_twilio_sdk_vector() -> None:
    assert twilio_signature(TOKEN, URL, SDK_PARAMS) == SDK_SIGNATURE


def test_sdk_mixed_case_url_vector() -> None:
    # The URL is signed exactly as written (twilio-csharp TestValidateDictionaryMixedCase).
    assert twilio_signature(TOKEN, "https://MyCompany.com/myapp.php?foo=1&bar=2", SDK_PARAMS) == (
        "g9IN/x4Cft2g517EjYvEvM/W7LU=")


def test_params_sorted_by_name_regardless_of_order() -> None:
    reordered = dict(reversed(list(SDK_PARAMS.items())))
    assert twilio_signature(TOKEN, URL, reordered) == SDK_SIGNATURE


def test_no_params_signs_the_url_alone() -> None:
    url = "wss://bridge.example.com/media"
    expected = base64.b64encode(hmac.new(b"tok", url.encode(), hashlib.sha1).digest()).decode()
    assert twilio_signature("tok", url) == expected
    assert twilio_signature("tok", url, {}) == expected


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("54321", URL, SDK_PARAMS),
        (TOKEN, URL + "&x=1", SDK_PARAMS),
        (TOKEN, URL.replace("https", "http"), SDK_PARAMS),
        (TOKEN, URL, {**SDK_PARAMS, "Digits": "9999"}),
        (TOKEN, URL, {k: v for k, v in SDK_PARAMS.items() if k != "To"}),
    ],
)
def test_any_change_changes_the_signature(token: str, url: str, params: dict[str, str]) -> None:
    assert twilio_signature(token, url, params) != SDK_SIGNATURE


URL_WS = "wss://bridge.example.com/media"


def test_signature_valid_true() -> None:
    sig = twilio_signature("secret", URL_WS)
    assert signature_valid("secret", URL_WS, sig)


@pytest.mark.parametrize(
    ("token", "url", "signature"),
    [
        ("other", URL_WS, twilio_signature("secret", URL_WS)),
        ("secret", URL_WS + "?x=1", twilio_signature("secret", URL_WS)),
        ("secret", "wss://bridge.example.com/Media", twilio_signature("secret", URL_WS)),
        ("secret", URL_WS, ""),
        ("secret", URL_WS, twilio_signature("secret", URL_WS)[:-1]),
        ("secret", URL_WS, twilio_signature("secret", URL_WS) + "="),
        ("secret", URL_WS, "not a signature"),
    ],
)
def test_signature_valid_false(token: str, url: str, signature: str) -> None:
    assert not signature_valid(token, url, signature)


def test_signature_valid_with_non_ascii_header_is_false_not_an_error() -> None:
    # The server decodes header bytes as latin-1, so a forged header can hold any character.
    assert signature_valid("secret", URL_WS, "é" * 28) is False
