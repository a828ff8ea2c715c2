"""What the conversation hears (events) and what it decides (actions): plain frozen dataclasses.

Events come from the call's stages: app messages are the relay codec's own types (``relay.Text``,
``relay.Play``, ``relay.SendDigits``, ``relay.Language``, ``relay.End``); the rest are here. Actions
are carried out by the call, in the order given, before the next event is handled.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from relay_bridge.protocols import relay
from relay_bridge.protocols.relay import Interruptible

# --- events: the caller's side (the hearing stage) ---------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    start: int  # 8 kHz sample position of the utterance's first voiced audio
    at: float = 0.0  # when that audio arrived, on the call's clock (estimated; 0: not known)


@dataclass(frozen=True)
class SpeechSustained:
    """The utterance has had enough voiced audio to count as a barge-in (``interruptSensitivity``)."""


@dataclass(frozen=True)
class SpeechEnded:
    """The end-of-speech wait has passed: the utterance is over; its recognition follows."""


@dataclass(frozen=True)
class Recognised:
    """The final recognition of an utterance, one per ``SpeechEnded``, in the same order."""

    text: str
    language: str  # recognised in (or detected); "" for the call's recognition language
    seconds: float  # of the utterance's audio
    speech_end: int = 0  # 8 kHz sample position where its speech ended
    speech_end_at: float = 0.0  # when the audio at speech_end arrived, on the call's clock (0: not known)


@dataclass(frozen=True)
class PartialRecognised:
    """The utterance in progress, recognised so far (partial prompts)."""

    text: str
    language: str


# --- events: the provider's side ---------------------------------------------------------------


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class MarkEcho:
    name: str


@dataclass(frozen=True)
class StreamStopped:
    """The provider sent ``stop``."""


# --- events: the agent's side (the speaker and the pacer) --------------------------------------


@dataclass(frozen=True)
class Rendered:
    """Audio for the chunk ``seq`` (mu-law, 8 kHz); ``repeat`` times in a row (``play`` loops)."""

    seq: int
    audio: bytes
    repeat: int = 1


@dataclass(frozen=True)
class RenderFailed:
    """The chunk ``seq`` produced no audio: a ``play`` source that cannot be played (``problem``), or a
    synthesis that failed (``problem`` empty: the speaker logged it)."""

    seq: int
    problem: str = ""


@dataclass(frozen=True)
class MarkSent:
    name: str


@dataclass(frozen=True)
class Rewound:
    """The pacer took back these sent marks when it held playback; it sends them again (renamed)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class FirstAudio:
    """The pacer sent the first frame of talk cycle ``cycle``."""

    cycle: int


Event = (relay.Text | relay.Play | relay.SendDigits | relay.Language | relay.End | SpeechStarted | SpeechSustained
         | SpeechEnded | Recognised | PartialRecognised | Dtmf | MarkEcho | StreamStopped | Rendered | RenderFailed
         | MarkSent | Rewound | FirstAudio)


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechChunk:
    """One piece of agent output, rendered to audio by the speaker: text to synthesise, DTMF digits,
    or a media URL to play. Chunks of a talk cycle are rendered in order, one at a time."""

    seq: int
    cycle: int
    text: str = ""
    digits: str = ""
    play: str = ""
    loop: int = 1
    language: str = ""  # the voice's language ("": the default voice)
    first: bool = False  # the first chunk of its cycle with words: the caller hears nothing until it is ready
    final: bool = False  # the last chunk of its cycle
    interruptible: Interruptible = Interruptible.ANY


@dataclass(frozen=True)
class SendToApp:
    message: relay.RelayMessage


@dataclass(frozen=True)
class Render:
    chunk: SpeechChunk


@dataclass(frozen=True)
class CancelRender:
    """Stop rendering chunk ``seq`` (its result is no longer wanted)."""

    seq: int


@dataclass(frozen=True)
class QueueAudio:
    cycle: int
    audio: bytes
    repeat: int = 1


@dataclass(frozen=True)
class QueueMark:
    name: str


@dataclass(frozen=True)
class ClearPlayback:
    """Drop the queued audio and marks; send ``clear`` if the provider may still hold agent audio
    (``unheard``: a mark is out and not echoed; the pacer also knows what it sent lately)."""

    unheard: bool


@dataclass(frozen=True)
class HoldPlayback:
    """Stop the agent now, keeping what the caller has not heard, until ``ReleasePlayback``."""


@dataclass(frozen=True)
class ReleasePlayback:
    """Go on playing from where ``HoldPlayback`` stopped (after a ``ClearPlayback``: what comes next)."""


@dataclass(frozen=True)
class Probe:
    """Recognise the utterance in progress as it goes on (``on``), to judge speech over the agent."""

    on: bool


@dataclass(frozen=True)
class RecogniseIn:
    language: str


class EndReason(enum.Enum):
    """Why a call ended, and what the session-ended report says about it (protocols.md 2.6)."""

    APP_ENDED = "app sent end"
    PROVIDER_STOPPED = "provider sent stop"
    PROVIDER_CLOSED = "provider socket closed"
    APP_CLOSED = "app socket closed"
    PROVIDER_SILENT = "provider went silent"
    PROVIDER_NO_PONG = "provider did not answer a ping"
    APP_NO_PONG = "app did not answer a ping"
    PROVIDER_STUCK = "provider stopped reading"
    APP_STUCK = "app stopped reading"
    APP_MALFORMED = "app sent too many malformed messages"
    MAX_DURATION = "maximum call duration reached"
    NO_APP_URL = "no app URL configured"
    APP_UNREACHABLE = "app unreachable"
    SHUTDOWN = "server shutting down"

    @property
    def status(self) -> str:
        """The session status: the app ended it, the call completed, or the session failed."""
        if self is EndReason.APP_ENDED:
            return "ended"
        if self in (EndReason.PROVIDER_STOPPED, EndReason.PROVIDER_CLOSED):
            return "completed"
        return "failed"


@dataclass(frozen=True)
class EndCall:
    reason: EndReason
    handoff_data: str | None = None


@dataclass(frozen=True)
class Note:
    """Something that happened, for the call's record (``name`` and ``data``) and its log (``message``,
    and ``transcript`` for the words, which go to the transcript log)."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    transcript: str = ""


@dataclass(frozen=True)
class Warn:
    """Bad input from a peer: logged as a warning, at most a few times per ``kind`` and call."""

    kind: str
    message: str


Action = (SendToApp | Render | CancelRender | QueueAudio | QueueMark | ClearPlayback | HoldPlayback
          | ReleasePlayback | Probe | RecogniseIn | EndCall | Note | Warn)
