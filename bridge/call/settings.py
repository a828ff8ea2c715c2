"""Settings of a call: session behaviour (per call, the ConversationRelay way), playback, endpointing.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.engines.base import match_language
from bridge.speech.endpointer import EndpointerSettings

INTERRUPTIBLE_VALUES = ("none", "dtmf", "speech", "any")
EVENT_NAMES = ("speaker-events", "tokens-played")
DEBUG_NAMES = ("debugging", *EVENT_NAMES)


def require_at_least(settings: object, **minimums: float) -> None:
    """Raise ``ValueError`` naming the first field of ``settings`` below its minimum."""
    for name, low in minimums.items():
        value = getattr(settings, name)
        if value < low:
            raise ValueError(f"{name} must be at least {low:g}, got {value}")


def _check_interruptible(name: str, value: str) -> None:
    if value not in INTERRUPTIBLE_VALUES:
        raise ValueError(f"{name} must be one of {', '.join(INTERRUPTIBLE_VALUES)}, got {value!r}")


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

    def __post_init__(self) -> None:
        if not self.language:
            raise ValueError("language must not be empty")
        _check_interruptible("interruptible", self.interruptible)
        _check_interruptible("welcome_greeting_interruptible", self.welcome_greeting_interruptible)
        _check_names("debug", self.debug, DEBUG_NAMES)
        _check_names("events", self.events, EVENT_NAMES)

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
}
_BOOLEANS = {"true": True, "false": False}
_INTERRUPTIBLE_BOOLEANS = {"true": "any", "false": "none"}


LANGUAGE_ATTRIBUTES = ("language", "tts_language", "transcription_language")


def session_for_call(defaults: SessionSettings, parameters: dict[str, str],
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
        value: Any = raw.strip()
        if attr in LANGUAGE_ATTRIBUTES and declared and value:
            found = match_language(value, declared)
            if found is None:
                problems.append(f"{name} {value!r} is not a declared language ({', '.join(declared)}); "
                                f"using {getattr(defaults, attr)!r}")
                continue
            value = found
        if attr == "dtmf_detection":
            if raw.strip().lower() not in _BOOLEANS:
                problems.append(f"{name} must be true or false, got {raw!r}; using {defaults.dtmf_detection}")
                continue
            value = _BOOLEANS[raw.strip().lower()]
        elif attr in ("interruptible", "welcome_greeting_interruptible"):
            value = _INTERRUPTIBLE_BOOLEANS.get(raw.strip().lower(), raw.strip().lower())
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


@dataclass(frozen=True)
class CallSettings:
    session: SessionSettings = field(default_factory=SessionSettings)
    playback: PlaybackSettings = field(default_factory=PlaybackSettings)
    endpointer: EndpointerSettings = field(default_factory=EndpointerSettings)
