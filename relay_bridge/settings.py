"""Settings, at the bottom of the tree (loading the config imports no runtime): the server's, what a
call may cost, and a call's: session behaviour (per call, the ConversationRelay way), playback,
endpointing, media for ``play`` and where the end of a session is reported.

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

from relay_bridge.engines.base import match_language
from relay_bridge.engines.whisper import MAX_HINTS_CHARS
from relay_bridge.protocols.auth import Credentials
from relay_bridge.protocols.relay import Interruptible
from relay_bridge.speech.endpointer import EndpointerSettings

INTERRUPTIBLE_VALUES = tuple(Interruptible)
SENSITIVITY_VALUES = ("low", "medium", "high")
SPEECH_TIMEOUT_RANGE_MS = (600, 5000)
EOT_THRESHOLD_RANGE = (0.5, 0.9)  # TwiML eotThreshold
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


def _interruptible(settings: object, name: str) -> None:
    """Check ``settings.name`` is an ``Interruptible`` value and store it as one."""
    value = getattr(settings, name)
    if value not in INTERRUPTIBLE_VALUES:
        raise ValueError(f"{name} must be one of {', '.join(INTERRUPTIBLE_VALUES)}, got {value!r}")
    object.__setattr__(settings, name, Interruptible(value))


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
    interruptible: Interruptible = Interruptible.ANY  # what caller input cuts agent speech
    dtmf_detection: bool = True
    welcome_greeting: str = ""
    welcome_greeting_interruptible: Interruptible = Interruptible.ANY
    debug: str = ""  # space-separated: debugging, speaker-events, tokens-played
    events: str = ""  # space-separated: speaker-events, tokens-played
    preemptible: bool = False  # a later text/play from the app cuts this session's speech
    partial_prompts: bool = False
    report_input_during_agent_speech: Interruptible = Interruptible.NONE  # input over agent speech reported
    interrupt_sensitivity: str = "high"  # low | medium | high
    speech_timeout: str = "auto"  # "auto" or milliseconds of silence, 600..5000
    eot_threshold: float = 0.5  # the end-of-turn model's probability that ends a turn (turn_detection "smart")
    ignore_backchannel: bool = False  # acknowledgements over agent speech neither cut it nor become prompts
    echo_prompt_filtering: bool = False  # the agent's own voice coming back is neither a barge-in nor a prompt
    resume_after_false_barge_in: bool = True  # a barge-in that holds no words resumes the agent (config only)

    def __post_init__(self) -> None:
        if not self.language:
            raise ValueError("language must not be empty")
        for name in ("interruptible", "welcome_greeting_interruptible", "report_input_during_agent_speech"):
            _interruptible(self, name)
        if self.interrupt_sensitivity not in SENSITIVITY_VALUES:
            raise ValueError(f"interrupt_sensitivity must be one of {', '.join(SENSITIVITY_VALUES)}, "
                             f"got {self.interrupt_sensitivity!r}")
        _speech_timeout_ms(self.speech_timeout)
        low, high = EOT_THRESHOLD_RANGE
        if not low <= self.eot_threshold <= high:
            raise ValueError(f"eot_threshold must be from {low} to {high}, got {self.eot_threshold}")
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

    def reports(self, kind: Interruptible) -> bool:
        """Whether caller input of ``kind`` (speech, dtmf) that does not cut agent speech is reported."""
        return self.report_input_during_agent_speech.allows(kind)

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
    "eotThreshold": "eot_threshold",
    "ignoreBackchannel": "ignore_backchannel",
    "echoPromptFiltering": "echo_prompt_filtering",
}
_BOOLEAN_FIELDS = ("dtmf_detection", "preemptible", "partial_prompts", "ignore_backchannel", "echo_prompt_filtering")
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
        elif attr == "eot_threshold":
            try:
                value = float(raw.strip())
            except ValueError:
                problems.append(f"{name} must be a number, got {raw!r}; using {getattr(defaults, attr)}")
                continue
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
    backchannels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language code -> its own list


@dataclass(frozen=True)
class CallLimits:
    """What a call may cost (the ``[server]`` keys of the same names)."""

    max_duration_s: float = 14400.0  # Twilio's own maximum call length: 4 hours
    ping_interval_s: float = 10.0
    pong_timeout_s: float = 10.0
    send_timeout_s: float = 5.0


def split_listen(listen: str, key: str = "listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{key} must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def check_ws_url(url: str, name: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 host
        raise ValueError(f"{name} is not a valid URL ({exc}): {url!r}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{name} must be a ws:// or wss:// URL, got {url!r}")


@dataclass(frozen=True)
class ServerSettings:
    """The Media Streams server (the config's ``[server]``).

    The ``*_file`` keys name files holding a secret; the config loader reads them (and the
    environment, and systemd credentials) into the secret's own key, so the server only sees values.
    """

    listen: str = "127.0.0.1:8080"
    admin_listen: str = "127.0.0.1:9464"  # /metrics, /healthz, /readyz; "": off
    app_url: str = ""
    relay_url_allowlist: tuple[str, ...] = ()
    allow_unauthenticated: bool = False
    twilio_auth_token: str = ""
    twilio_auth_token_file: str = ""
    twilio_account_sid: str = ""
    public_url: str = ""
    telnyx_stream_token: str = ""
    telnyx_stream_token_file: str = ""
    app_connect_timeout_ms: int = 5000
    shutdown_grace_s: float = 30.0
    max_calls: int = 50
    max_cpu_load: float = 0.8
    max_engine_wait_ms: int = 300
    max_pending_handshakes: int = 64
    handshake_timeout_ms: int = 5000
    max_call_duration_s: float = 14400.0
    ping_interval_ms: int = 10000
    pong_timeout_ms: int = 10000
    send_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        split_listen(self.listen)
        if self.admin_listen:
            split_listen(self.admin_listen, "admin_listen")
            if self.admin_listen == self.listen:
                raise ValueError(f"admin_listen must differ from listen ({self.listen}): each is a listener of its own")
        if self.app_url:
            check_ws_url(self.app_url, "app_url")
        for i, url in enumerate(self.relay_url_allowlist):
            check_ws_url(url, f"relay_url_allowlist[{i}]")
        if self.twilio_auth_token and not self.public_url:
            raise ValueError("twilio_auth_token needs public_url: the wss:// URL of the TwiML <Stream>, which "
                             "Twilio signs (a URL built from request headers could be any host)")
        if self.public_url:
            check_ws_url(self.public_url, "public_url")
        if self.twilio_account_sid and not re.fullmatch(r"AC[0-9a-fA-F]{32}", self.twilio_account_sid):
            raise ValueError(f"twilio_account_sid must be AC and 32 hex digits, got {self.twilio_account_sid!r}")
        if not 0 <= self.max_cpu_load <= 1:
            raise ValueError(f"max_cpu_load must be from 0 (off) to 1, got {self.max_cpu_load}")
        require_at_least(self, max_engine_wait_ms=0, app_connect_timeout_ms=1, shutdown_grace_s=0, max_calls=1,
                         max_pending_handshakes=1, handshake_timeout_ms=1, max_call_duration_s=1, ping_interval_ms=100,
                         pong_timeout_ms=100, send_timeout_ms=100)

    @property
    def credentials(self) -> Credentials:
        return Credentials(twilio_auth_token=self.twilio_auth_token, public_url=self.public_url,
                           telnyx_stream_token=self.telnyx_stream_token,
                           allow_unauthenticated=self.allow_unauthenticated)

    @property
    def limits(self) -> CallLimits:
        return CallLimits(max_duration_s=self.max_call_duration_s, ping_interval_s=self.ping_interval_ms / 1000,
                          pong_timeout_s=self.pong_timeout_ms / 1000, send_timeout_s=self.send_timeout_ms / 1000)
