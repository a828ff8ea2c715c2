"""ConversationRelay WebSocket protocol, sans-IO, in both roles.

Theory of operation (protocols.md section 1). The bridge plays Twilio's part: it is the WebSocket
*client* of the customer's app, sends ``setup`` once, then ``prompt``, ``dtmf``, ``interrupt``,
``info`` and ``error``; the app sends ``text``, ``play``, ``sendDigits``, ``language`` and ``end``.

Every app frame is validated. An invalid one (not JSON, unknown ``type``, a missing or mistyped
field such as ``token: null``) is dropped and answered with an ``error`` frame of the observed form
``Invalid message received, code: 64107, <the raw frame>``; the session goes on. After 10
*consecutive* invalid frames the socket is closed with 1007 "Too many consecutive malformed
messages." (64105). Unknown extra fields are ignored (their rejection is unconfirmed, and ignoring
them keeps newer apps working). Strings are bounded (``MAX_*_CHARS``): one over its limit makes the
frame invalid in the same way, with a reason naming the limit, so no one frame can make the bridge
hold or work on an unbounded amount of text.

``RelayApp`` is the app's end, used by the example apps in ``relay_bridge.sim``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from relay_bridge.protocols.call_details import CallDetails
from relay_bridge.protocols.fields import FrameError, bounded_str, dumps, parse_object, show, utf8_safe
from relay_bridge.protocols.fields import field as get

# ConversationRelay error codes (protocols.md 2.7) of the errors the bridge reports.
INVALID_PARAMETER_CODE = 64101
INVALID_MESSAGE_CODE = 64107
CONVERSION_CODE = 64112  # media that cannot be fetched or played
MAX_CONSECUTIVE_INVALID = 10
CLOSE_NORMAL = (1000, "Closing websocket session")
CLOSE_MALFORMED = (1007, "Too many consecutive malformed messages.")
PLAY_LOOP_MAX = 1000
# Size limits on app input (Twilio publishes none). A token is a piece of a reply: 16 K characters is
# minutes of speech. URLs are rarely past 2 K; DTMF strings are short; language codes are BCP-47 tags.
MAX_TOKEN_CHARS = 16_384
MAX_SOURCE_CHARS = 8192
MAX_DIGITS_CHARS = 256
MAX_LANGUAGE_CHARS = 64
MAX_HANDOFF_CHARS = 65_536
SEND_DIGITS_RE = re.compile(r"[0-9w#*]+")


class Interruptible(StrEnum):
    """What caller input may cut agent speech (TwiML ``interruptible``; the same values say what input
    over agent speech is reported, ``reportInputDuringAgentSpeech``)."""

    NONE = "none"
    DTMF = "dtmf"
    SPEECH = "speech"
    ANY = "any"

    def allows(self, kind: Interruptible) -> bool:
        """Whether input of ``kind`` (``SPEECH`` or ``DTMF``) is covered."""
        return self is Interruptible.ANY or self is kind

    @classmethod
    def of_flag(cls, flag: bool) -> Interruptible:
        """A message's boolean ``interruptible``: true is any input, false none."""
        return cls.ANY if flag else cls.NONE


# --- app -> bridge ------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    token: str
    last: bool = False
    lang: str | None = None
    interruptible: bool | None = None
    preemptible: bool | None = None


@dataclass(frozen=True)
class Play:
    source: str
    loop: int = 1
    interruptible: bool | None = None
    preemptible: bool | None = None


@dataclass(frozen=True)
class SendDigits:
    digits: str


@dataclass(frozen=True)
class Language:
    tts_language: str | None
    transcription_language: str | None


@dataclass(frozen=True)
class End:
    handoff_data: str | None


@dataclass(frozen=True)
class InvalidAppFrame:
    reason: str
    reply: str  # the error frame to send back
    close: tuple[int, str] | None  # set when this frame tips the consecutive-invalid rule


AppMessage = Text | Play | SendDigits | Language | End


# --- bridge -> app ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Setup(CallDetails):
    """``setup``: the call's details (each provider's, ``CallDetails``) and the session's id. The
    Telnyx-only fields left None are left out, so Twilio's setup is unchanged (protocols.md 3.1)."""

    session_id: str

    @classmethod
    def of(cls, session_id: str, details: CallDetails) -> Setup:
        fields = {f.name: getattr(details, f.name) for f in dataclasses.fields(details)}
        return cls(session_id=session_id, **{**fields, "custom_parameters": dict(details.custom_parameters)})


@dataclass(frozen=True)
class Prompt:
    voice_prompt: str
    lang: str
    last: bool


@dataclass(frozen=True)
class DtmfDigit:
    digit: str


@dataclass(frozen=True)
class Interrupt:
    utterance_until_interrupt: str
    duration_until_interrupt_ms: float


@dataclass(frozen=True)
class Info:
    """An ``info`` event the bridge does not type (as an app reads them)."""

    name: str
    value: str


@dataclass(frozen=True)
class AgentSpeaking:
    """``info`` ``agentSpeaking``: the caller started (on) or stopped (off) hearing agent audio."""

    on: bool


@dataclass(frozen=True)
class ClientSpeaking:
    """``info`` ``clientSpeaking``: caller speech started (on) or ended (off)."""

    on: bool


@dataclass(frozen=True)
class TokensPlayed:
    """``info`` ``tokensPlayed``: the text of agent speech the caller has heard."""

    text: str


@dataclass(frozen=True)
class Error:
    description: str
    # The ConversationRelay error code (protocols.md 2.7), for the bridge's metrics; not sent (Twilio's
    # error frames carry a description only, which names the code where Twilio's does).
    code: int = dataclasses.field(default=0, compare=False)


RelayMessage = Setup | Prompt | DtmfDigit | Interrupt | Info | AgentSpeaking | ClientSpeaking | TokensPlayed | Error


def _optional_bool(obj: dict[str, Any], name: str) -> bool | None:
    value: bool | None = get(obj, name, bool, required=False)
    return value


def parse_app_message(obj: dict[str, Any]) -> AppMessage:
    kind = get(obj, "type", str)
    match kind:
        case "text":
            lang = bounded_str(obj, "lang", MAX_LANGUAGE_CHARS, required=False)
            token = bounded_str(obj, "token", MAX_TOKEN_CHARS)
            return Text(token=token, last=get(obj, "last", bool, required=False, default=False),
                        lang=lang or None, interruptible=_optional_bool(obj, "interruptible"),
                        preemptible=_optional_bool(obj, "preemptible"))
        case "play":
            source = bounded_str(obj, "source", MAX_SOURCE_CHARS)
            try:
                parts = urlsplit(source)
            except ValueError:  # e.g. an unclosed "[" of an IPv6 host
                raise FrameError(f"field 'source' is not a valid URL, got {show(source)}") from None
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise FrameError(f"field 'source' must be an http(s) URL, got {show(source)}")
            loop = get(obj, "loop", int, required=False, default=1)
            if not 0 <= loop <= PLAY_LOOP_MAX:
                raise FrameError(f"field 'loop' must be 0..{PLAY_LOOP_MAX}, got {loop}")
            return Play(source=source, loop=loop or PLAY_LOOP_MAX,
                        interruptible=_optional_bool(obj, "interruptible"),
                        preemptible=_optional_bool(obj, "preemptible"))
        case "sendDigits":
            digits = bounded_str(obj, "digits", MAX_DIGITS_CHARS)
            if not SEND_DIGITS_RE.fullmatch(digits):
                raise FrameError(f"field 'digits' may only hold 0-9, w, # and *, got {show(digits)}")
            return SendDigits(digits=digits)
        case "language":
            tts = bounded_str(obj, "ttsLanguage", MAX_LANGUAGE_CHARS, required=False)
            stt = bounded_str(obj, "transcriptionLanguage", MAX_LANGUAGE_CHARS, required=False)
            if not tts and not stt:
                raise FrameError("one of 'ttsLanguage' or 'transcriptionLanguage' is required")
            return Language(tts_language=tts or None, transcription_language=stt or None)
        case "end":
            return End(handoff_data=bounded_str(obj, "handoffData", MAX_HANDOFF_CHARS, required=False))
        case _:
            raise FrameError(f"unknown type {show(kind)}")


def serialize_relay_message(msg: RelayMessage) -> str:
    match msg:
        case Setup():
            obj: dict[str, Any] = {
                "type": "setup", "sessionId": msg.session_id, "accountSid": msg.account_sid,
                "parentCallSid": msg.parent_call_sid, "callSid": msg.call_sid}
            for key, value in (("callControlId", msg.call_control_id), ("callSessionId", msg.call_session_id),
                               ("callLegId", msg.call_leg_id)):
                if value is not None:
                    obj[key] = value
            obj.update({
                "from": msg.from_, "to": msg.to, "forwardedFrom": msg.forwarded_from, "callerName": msg.caller_name,
                "direction": msg.direction, "callType": msg.call_type, "callStatus": msg.call_status,
                "customParameters": msg.custom_parameters,
            })
            return dumps(obj)
        case Prompt():
            return dumps({"type": "prompt", "voicePrompt": msg.voice_prompt, "lang": msg.lang, "last": msg.last})
        case DtmfDigit():
            return dumps({"type": "dtmf", "digit": msg.digit})
        case Interrupt():
            ms = msg.duration_until_interrupt_ms
            return dumps({"type": "interrupt", "utteranceUntilInterrupt": msg.utterance_until_interrupt,
                          "durationUntilInterruptMs": int(ms) if float(ms).is_integer() else ms})
        case Info():
            return dumps({"type": "info", "name": msg.name, "value": msg.value})
        case AgentSpeaking():
            return dumps({"type": "info", "name": "agentSpeaking", "value": "on" if msg.on else "off"})
        case ClientSpeaking():
            return dumps({"type": "info", "name": "clientSpeaking", "value": "on" if msg.on else "off"})
        case TokensPlayed():
            return dumps({"type": "info", "name": "tokensPlayed", "value": msg.text})
        case Error():
            return dumps({"type": "error", "description": msg.description})


@dataclass
class RelayBridge:
    """The bridge's end of the app WebSocket: validates app frames, counts consecutive failures."""

    consecutive_invalid: int = 0
    invalid_total: int = 0

    def receive(self, raw: str | bytes) -> AppMessage | InvalidAppFrame:
        try:
            msg = parse_app_message(parse_object(raw))
        except FrameError as exc:
            self.consecutive_invalid += 1
            self.invalid_total += 1
            # The frame is echoed: a str from a socket is valid UTF-8, but one passed in need not be.
            text = utf8_safe(raw) if isinstance(raw, str) else raw.decode("utf-8", "replace")
            reply = serialize_relay_message(
                Error(f"Invalid message received, code: {INVALID_MESSAGE_CODE}, {text}", INVALID_MESSAGE_CODE))
            close = CLOSE_MALFORMED if self.consecutive_invalid >= MAX_CONSECUTIVE_INVALID else None
            return InvalidAppFrame(reason=utf8_safe(str(exc)), reply=reply, close=close)
        self.consecutive_invalid = 0
        return msg


# --- the app's end (simulation) -------------------------------------------------------------


def parse_relay_message(raw: str | bytes) -> RelayMessage:
    """Parse a frame from the relay (as an app would); raises ``FrameError``."""
    obj = parse_object(raw)
    kind = get(obj, "type", str)
    match kind:
        case "setup":
            telnyx = "callControlId" in obj
            return Setup(
                session_id=get(obj, "sessionId", str), call_sid=get(obj, "callSid", str),
                account_sid=get(obj, "accountSid", str), from_=get(obj, "from", str), to=get(obj, "to", str),
                direction=get(obj, "direction", str), caller_name=get(obj, "callerName", str),
                # Telnyx's example setup leaves these three out; Twilio always sends them.
                forwarded_from=get(obj, "forwardedFrom", str, required=not telnyx, default=""),
                parent_call_sid=get(obj, "parentCallSid", str, required=not telnyx, default=""),
                call_type=get(obj, "callType", str, required=not telnyx, default="PSTN"),
                call_status=get(obj, "callStatus", str),
                custom_parameters=get(obj, "customParameters", dict),
                call_control_id=get(obj, "callControlId", str, required=False),
                call_session_id=get(obj, "callSessionId", str, required=False),
                call_leg_id=get(obj, "callLegId", str, required=False),
            )
        case "prompt":
            return Prompt(voice_prompt=get(obj, "voicePrompt", str), lang=get(obj, "lang", str),
                          last=get(obj, "last", bool))
        case "dtmf":
            return DtmfDigit(digit=get(obj, "digit", str))
        case "interrupt":
            return Interrupt(utterance_until_interrupt=get(obj, "utteranceUntilInterrupt", str),
                             duration_until_interrupt_ms=float(get(obj, "durationUntilInterruptMs", (int, float))))
        case "info":
            return Info(name=get(obj, "name", str), value=get(obj, "value", str))
        case "error":
            return Error(description=get(obj, "description", str))
        case _:
            raise FrameError(f"unknown type {show(kind)}")


def text(token: str, *, last: bool = False, lang: str | None = None, interruptible: bool | None = None,
         preemptible: bool | None = None) -> str:
    obj: dict[str, Any] = {"type": "text", "token": token, "last": last}
    for key, value in (("lang", lang), ("interruptible", interruptible), ("preemptible", preemptible)):
        if value is not None:
            obj[key] = value
    return dumps(obj)


def send_digits(digits: str) -> str:
    return dumps({"type": "sendDigits", "digits": digits})


def end(handoff_data: str | None = None) -> str:
    obj: dict[str, Any] = {"type": "end"}
    if handoff_data is not None:
        obj["handoffData"] = handoff_data
    return dumps(obj)
