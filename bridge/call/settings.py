"""Settings of a call: session behaviour (per call, the ConversationRelay way), playback, endpointing,
media for ``play`` and where the end of a session is reported.

``SessionSettings`` holds the ``<ConversationRelay>`` attributes that make sense for a local bridge.
Their defaults come from the config's ``[session]`` (snake_case keys); each call may override
them with Media Streams custom parameters named exactly like the TwiML attributes
(``<Parameter name="welcomeGreeting" value="Hi!"/>``), with the same values (booleans accepted where
TwiML accepts them). An invalid value is reported and the default kept.

Languages follow ConversationRelay's precedence (§2.5 of the protocol notes): ``language`` sets
both directions, ``tts_language`` / ``transcription_language`` override it when set. A call may only
use languages the config declares (``[[languages]]``); ``session_for_call`` refuses others.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.engines.base import match_language
from bridge.engines.whisper import MAX_HINTS_CHARS
from bridge.speech.endpointer import EndpointerSettings

INTERRUPTIBLE_VALUES = ("none", "dtmf", "speech", "any")
SENSITIVITY_VALUES = ("low", "medium", "high")
SPEECH_TIMEOUT_RANGE_MS = (600, 5000)
EVENT_NAMES = ("speaker-events", "tokens-played")
DEBUG_NAMES = ("debugging", *EVENT_NAMES)
# A welcome greeting is spoken text, like one text token (relay.MAX_TOKEN_CHARS bounds those).
MAX_GREETING_CHARS = 4096


def require_at_least(settings: object, **minimums: float) -> None:
    """Raise ``ValueError`` naming the first field of ``settings`` below its minimum."""
    for name, low in minimums.items():
        value = getattr(settings, name)
        if value < low:
            raise ValueError(f"{name} must be at least {low:g}, got {value}")


def _check_interruptible(name: str, value: str) -> None:
    if value not in INTERRUPTIBLE_VALUES:
        raise ValueError(f"{name} must be one of {', '.join(INTERRUPTIBLE_VALUES)}, got {value!r}")


def _speech_timeout_ms(value: str) -> int | None:
    if value == "auto":
        return None
    low, high = SPEECH_TIMEOUT_RANGE_MS
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValueError(f"speech_timeout must be \"auto\" or milliseconds from {low} to {high}, got {value!r}")
    return int(value)


def _check_names(name: str, value: str, allowed: tuple[str, ...]) -> None:
    unknown = [v for v in value.split() if v not in allowed]
    if unknown:
        raise ValueError(f"{name} may hold {', '.join(allowed)} (space-separated), got {' '.join(unknown)!r}")


@dataclass(frozen=True)
class SessionSettings:
    """How a ConversationRelay session behaves (the config's ``[session]``)."""

    language: str = "en-US"
    tts_language: str = ""  # "": language
    transcription_language: str = ""  # "": language
    hints: str = ""  # comma-separated phrases that bias recognition
    interruptible: str = "any"  # what caller input cuts agent speech: none | dtmf | speech | any
    dtmf_detection: bool = True
    welcome_greeting: str = ""
    welcome_greeting_interruptible: str = "any"
    debug: str = ""  # space-separated: debugging, speaker-events, tokens-played
    events: str = ""  # space-separated: speaker-events, tokens-played
    preemptible: bool = False  # a later text/play from the app cuts this session's speech
    partial_prompts: bool = False
    report_input_during_agent_speech: str = "none"  # none | dtmf | speech | any
    interrupt_sensitivity: str = "high"  # low | medium | high
    speech_timeout: str = "auto"  # "auto" or milliseconds of silence, 600..5000

    def __post_init__(self) -> None:
        if not self.language:
            raise ValueError("language must not be empty")
        _check_interruptible("interruptible", self.interruptible)
        _check_interruptible("welcome_greeting_interruptible", self.welcome_greeting_interruptible)
        _check_interruptible("report_input_during_agent_speech", self.report_input_during_agent_speech)
        if self.interrupt_sensitivity not in SENSITIVITY_VALUES:
            raise ValueError(f"interrupt_sensitivity must be one of {', '.join(SENSITIVITY_VALUES)}, "
                             f"got {self.interrupt_sensitivity!r}")
        _speech_timeout_ms(self.speech_timeout)
        if len(self.hints) > MAX_HINTS_CHARS:
            raise ValueError(f"hints must be at most {MAX_HINTS_CHARS} characters (Whisper reads no more), "
                             f"got {len(self.hints)}")
        if len(self.welcome_greeting) > MAX_GREETING_CHARS:
            raise ValueError(f"welcome_greeting must be at most {MAX_GREETING_CHARS} characters, "
                             f"got {len(self.welcome_greeting)}")
        _check_names("debug", self.debug, DEBUG_NAMES)
        _check_names("events", self.events, EVENT_NAMES)

    @property
    def speech_timeout_ms(self) -> int | None:
        """The end-of-speech silence for this session, or None for the configured default ("auto")."""
        return _speech_timeout_ms(self.speech_timeout)

    def reports(self, kind: str) -> bool:
        """Whether caller input of ``kind`` (speech, dtmf) that does not cut agent speech is reported."""
        return self.report_input_during_agent_speech in (kind, "any")

    def subscribed(self, event: str) -> bool:
        """Whether ``info`` messages of ``event`` (speaker-events, tokens-played) go to the app."""
        return event in self.events.split() or event in self.debug.split()

    @property
    def speech_language(self) -> str:
        """The language agent text is spoken in unless a token says otherwise."""
        return self.tts_language or self.language

    @property
    def recognition_language(self) -> str:
        """The language caller speech is recognised in ("multi": detected)."""
        return self.transcription_language or self.language


# TwiML attribute name -> SessionSettings field
TWIML_ATTRIBUTES = {
    "language": "language",
    "ttsLanguage": "tts_language",
    "transcriptionLanguage": "transcription_language",
    "hints": "hints",
    "interruptible": "interruptible",
    "dtmfDetection": "dtmf_detection",
    "welcomeGreeting": "welcome_greeting",
    "welcomeGreetingInterruptible": "welcome_greeting_interruptible",
    "debug": "debug",
    "events": "events",
    "preemptible": "preemptible",
    "partialPrompts": "partial_prompts",
    "reportInputDuringAgentSpeech": "report_input_during_agent_speech",
    "interruptSensitivity": "interrupt_sensitivity",
    "speechTimeout": "speech_timeout",
}
_BOOLEAN_FIELDS = ("dtmf_detection", "preemptible", "partial_prompts")
_INTERRUPTIBLE_FIELDS = ("interruptible", "welcome_greeting_interruptible", "report_input_during_agent_speech")
_BOOLEANS = {"true": True, "false": False}
_INTERRUPTIBLE_BOOLEANS = {"true": "any", "false": "none"}


LANGUAGE_ATTRIBUTES = ("language", "tts_language", "transcription_language")


def session_for_call(defaults: SessionSettings, parameters: dict[str, Any],
                     declared: Sequence[str] = ()) -> tuple[SessionSettings, list[str]]:
    """The call's session settings: ``defaults`` overridden by TwiML-named custom parameters.

    Returns the settings and one message per parameter that was refused (the default is kept).
    Parameters that name no session setting are the app's own and are left alone. With
    ``declared`` (the process's languages), a language parameter must name one of them; it is
    stored as declared ("es" or "es-es" becomes "es-ES").
    """
    settings, problems = defaults, []
    for name, attr in TWIML_ATTRIBUTES.items():
        if name not in parameters:
            continue
        raw = parameters[name]
        if not isinstance(raw, str):  # Telnyx custom parameters may be any JSON value: true, 5, ...
            raw = json.dumps(raw)
        value: Any = raw.strip()
        if attr in LANGUAGE_ATTRIBUTES and declared and value:
            found = match_language(value, declared)
            if found is None:
                problems.append(f"{name} {value!r} is not a declared language ({', '.join(declared)}); "
                                f"using {getattr(defaults, attr)!r}")
                continue
            value = found
        if attr in _BOOLEAN_FIELDS:
            if raw.strip().lower() not in _BOOLEANS:
                problems.append(f"{name} must be true or false, got {raw!r}; using {getattr(defaults, attr)}")
                continue
            value = _BOOLEANS[raw.strip().lower()]
        elif attr in _INTERRUPTIBLE_FIELDS:
            value = _INTERRUPTIBLE_BOOLEANS.get(raw.strip().lower(), raw.strip().lower())
        elif attr in ("interrupt_sensitivity", "speech_timeout"):
            value = raw.strip().lower()
        elif attr == "welcome_greeting":
            value = raw
        try:
            settings = dataclasses.replace(settings, **{attr: value})
        except ValueError as exc:
            problems.append(f"{name} {str(exc).partition(' ')[2]}; using {getattr(defaults, attr)!r}")
    return settings, problems


@dataclass(frozen=True)
class PlaybackSettings:
    """Outbound audio (the config's ``[playback]``)."""

    lead_ms: int = 300
    max_synthesized_ahead_ms: int = 3000

    def __post_init__(self) -> None:
        require_at_least(self, lead_ms=20, max_synthesized_ahead_ms=100)


# A DNS name or an IP literal, as it may appear in allowed_hosts (optionally behind "*.").
_HOST_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[?[0-9a-f:.]+\]?")


def normalize_host(host: str) -> str:
    """Hosts compare case-insensitively and without a trailing dot."""
    return host.strip().lower().rstrip(".")


def check_host_pattern(name: str, pattern: str) -> None:
    """An allowlist entry: an exact host (``media.example.com``) or a suffix (``*.example.com``)."""
    host = pattern.removeprefix("*.")
    if pattern != normalize_host(pattern) or not host or not _HOST_RE.fullmatch(host):
        raise ValueError(f"{name} must be a lowercase host name or *.domain, got {pattern!r}")


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` matches an entry; ``*.example.com`` matches subdomains, not example.com itself."""
    host = normalize_host(host)
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {url!r}")
    try:
        parts.port  # noqa: B018 -- parsing the port is the check
    except ValueError:
        raise ValueError(f"{name} has an invalid port: {url!r}") from None


@dataclass(frozen=True)
class PlaySettings:
    """Media fetched for the app's ``play`` messages (the config's ``[play]``)."""

    max_bytes: int = 16 * 1024 * 1024  # of the encoded file, as downloaded
    timeout_ms: int = 10_000  # for the whole download, redirects included
    max_duration_s: float = 600.0  # of the decoded audio
    allowed_hosts: tuple[str, ...] = ()  # empty: any host (the address rule still applies)
    allow_private: bool = False
    cache_bytes: int = 64 * 1024 * 1024  # of decoded 8 kHz audio, shared by all calls
    decode_timeout_ms: int = 5000  # wall-clock time for decoding one file

    def __post_init__(self) -> None:
        require_at_least(self, max_bytes=1, timeout_ms=1, max_duration_s=0.02, cache_bytes=0, decode_timeout_ms=1)
        for i, pattern in enumerate(self.allowed_hosts):
            check_host_pattern(f"allowed_hosts[{i}]", pattern)


@dataclass(frozen=True)
class HandoffSettings:
    """Where the end of a session is reported (the config's ``[handoff]``).

    ``callback_url`` receives what Twilio posts to a ``<Connect action>`` URL (SessionStatus,
    HandoffData, ...). With all three ``twilio_*``/``redirect_url`` keys set, a call whose app sent
    ``end`` is also redirected to ``redirect_url`` through Twilio's REST API.
    """

    callback_url: str = ""
    callback_auth_token: str = ""  # signs the callback with X-Twilio-Signature
    redirect_url: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    timeout_ms: int = 5000  # per request

    def __post_init__(self) -> None:
        for name in ("callback_url", "redirect_url", "twilio_api_base"):
            if getattr(self, name) or name == "twilio_api_base":
                check_http_url(name, getattr(self, name))
        if self.twilio_account_sid and not re.fullmatch(r"AC[0-9a-fA-F]{32}", self.twilio_account_sid):
            raise ValueError(f"twilio_account_sid must be AC and 32 hex digits, got {self.twilio_account_sid!r}")
        redirect = ("redirect_url", "twilio_account_sid", "twilio_auth_token")
        missing = [name for name in redirect if not getattr(self, name)]
        if 0 < len(missing) < len(redirect):
            given = [name for name in redirect if name not in missing]
            raise ValueError(f"{missing[0]} must be set when {given[0]} is (the redirect needs all of "
                             f"{', '.join(redirect)})")
        require_at_least(self, timeout_ms=1)

    @property
    def redirects(self) -> bool:
        return bool(self.redirect_url)

    @property
    def configured(self) -> bool:
        """Whether the end of a session is delivered anywhere."""
        return bool(self.callback_url) or self.redirects


@dataclass(frozen=True)
class CallSettings:
    session: SessionSettings = field(default_factory=SessionSettings)
    playback: PlaybackSettings = field(default_factory=PlaybackSettings)
    endpointer: EndpointerSettings = field(default_factory=EndpointerSettings)
    play: PlaySettings = field(default_factory=PlaySettings)
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
