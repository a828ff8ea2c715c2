"""Twilio Media Streams, sans-IO, in both roles.

Theory of operation (protocols.md section 4). Twilio opens a WebSocket to the bridge and sends JSON
text frames with an ``event`` discriminator: ``connected`` (no sequence number), ``start`` (stream and
call identifiers, custom parameters, media format), then ``media`` every 20 ms (base64 mu-law 8 kHz),
``dtmf`` per keypress, ``mark`` echoes, and ``stop``. ``sequenceNumber`` is a string counter from
"1". The bridge sends ``media``, ``mark`` and ``clear``, each carrying the ``streamSid``.

The stream is a state machine ``awaiting_connected -> awaiting_start -> streaming -> stopped``.
``start`` is also accepted without a preceding ``connected``. Bad input from the provider never
raises: ``MediaStreamsBridge.receive`` returns ``InvalidFrame`` with a reason naming the field, and
the runtime logs and drops it (Twilio itself treats protocol errors as warnings and goes on).
Custom parameters come from whoever placed the call: one over the limits in ``fields`` is dropped,
not the stream, and ``Start.dropped_parameters`` says why, for the runtime to log.

``MediaStreamsProvider`` is the other end (what Twilio does), used by the simulated caller.
"""

from __future__ import annotations

import base64
import enum
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from relay_bridge.protocols.call_details import CallDetails
from relay_bridge.protocols.fields import (
    FrameError,
    base64_bytes,
    counter,
    custom_parameters,
    dumps,
    parse_object,
    show,
    utf8_safe,
)
from relay_bridge.protocols.fields import field as get


class StreamState(enum.Enum):
    AWAITING_CONNECTED = "awaiting_connected"
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


@dataclass(frozen=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class Connected:
    protocol: str
    version: str


# custom parameter -> CallDetails field, for the setup fields a Twilio stream does not carry itself
SETUP_PARAMETERS = {"from": "from_", "to": "to", "direction": "direction", "callerName": "caller_name",
                    "forwardedFrom": "forwarded_from", "parentCallSid": "parent_call_sid",
                    "callType": "call_type", "callStatus": "call_status"}


@dataclass(frozen=True)
class Start:
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    media_format: MediaFormat
    dropped_parameters: tuple[str, ...] = ()  # why each custom parameter left out was dropped

    provider: ClassVar[str] = "twilio"

    def call_details(self) -> CallDetails:
        """The ``setup`` fields Twilio's ConversationRelay sends for this call: known custom parameters
        (``from``, ``callerName``, ...) fill the fields the stream itself does not carry."""
        params = self.custom_parameters
        known = {attr: params[name] for name, attr in SETUP_PARAMETERS.items() if name in params}
        return CallDetails(call_sid=self.call_sid, account_sid=self.account_sid, custom_parameters=dict(params),
                           **known)

    @staticmethod
    def new_session_id() -> str:
        return "VX" + uuid.uuid4().hex


@dataclass(frozen=True)
class Media:
    track: str
    number: int  # media.chunk: the message's number in its track, from 1
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Stop:
    account_sid: str
    call_sid: str


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class InvalidFrame:
    reason: str
    raw: str

    @classmethod
    def of(cls, exc: FrameError, raw: str | bytes) -> InvalidFrame:
        """The event for a frame that failed validation, with the start of the frame for the logs."""
        shown = utf8_safe(raw[:200]) if isinstance(raw, str) else f"<{len(raw)} binary bytes>"
        return cls(reason=utf8_safe(str(exc)), raw=shown)


ProviderEvent = Connected | Start | Media | Dtmf | Mark | Stop
BridgeEvent = Media | Mark | Clear

SUPPORTED_ENCODING = "audio/x-mulaw"
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MAX_TRACKS = 4  # a stream has "inbound" and "outbound" at most
MAX_TRACK_CHARS = 32


def _parse_tracks(start: dict[str, Any]) -> tuple[str, ...]:
    tracks = get(start, "tracks", list, path="start", required=False, default=["inbound"])
    if len(tracks) > MAX_TRACKS:
        raise FrameError(f"field 'start.tracks' holds {len(tracks)} tracks, more than {MAX_TRACKS}")
    for i, track in enumerate(tracks):
        if not isinstance(track, str) or len(track) > MAX_TRACK_CHARS:
            raise FrameError(f"field 'start.tracks[{i}]' must be a track name of at most {MAX_TRACK_CHARS} "
                             "characters")
    return tuple(tracks)


def _parse_start(obj: dict[str, Any]) -> Start:
    start = get(obj, "start", dict)
    params, dropped = custom_parameters(start, "customParameters", "start", strings_only=True)
    fmt = get(start, "mediaFormat", dict, path="start")
    media_format = MediaFormat(
        encoding=get(fmt, "encoding", str, path="start.mediaFormat"),
        sample_rate=get(fmt, "sampleRate", int, path="start.mediaFormat"),
        channels=get(fmt, "channels", int, path="start.mediaFormat"),
    )
    if media_format.encoding != SUPPORTED_ENCODING:
        raise FrameError(f"field 'start.mediaFormat.encoding' must be {SUPPORTED_ENCODING!r}, "
                         f"got {show(media_format.encoding)}")
    if media_format.sample_rate != 8000:
        raise FrameError(f"field 'start.mediaFormat.sampleRate' must be 8000, got {media_format.sample_rate}")
    if media_format.channels != 1:
        raise FrameError(f"field 'start.mediaFormat.channels' must be 1, got {media_format.channels}")
    tracks = _parse_tracks(start)
    stream_sid = get(start, "streamSid", str, path="start")
    top_sid = obj.get("streamSid")
    if top_sid is not None and top_sid != stream_sid:
        raise FrameError("field 'streamSid' differs from 'start.streamSid'")
    return Start(
        stream_sid=stream_sid,
        account_sid=get(start, "accountSid", str, path="start"),
        call_sid=get(start, "callSid", str, path="start"),
        tracks=tracks,
        custom_parameters=params,
        media_format=media_format,
        dropped_parameters=dropped,
    )


@dataclass
class MediaStreamsBridge:
    """The bridge's end of a Media Streams WebSocket."""

    state: StreamState = StreamState.AWAITING_CONNECTED
    stream_sid: str | None = None
    last_sequence: int = 0
    sequence_gaps: int = 0
    invalid_frames: int = 0

    def receive(self, raw: str | bytes) -> ProviderEvent | InvalidFrame:
        try:
            return self._receive(raw)
        except FrameError as exc:
            self.invalid_frames += 1
            return InvalidFrame.of(exc, raw)

    def feed(self, raw: str | bytes) -> list[ProviderEvent | InvalidFrame]:
        """``receive`` as a list: the shape shared with codecs that may release several events per frame."""
        return [self.receive(raw)]

    def _receive(self, raw: str | bytes) -> ProviderEvent:
        obj = parse_object(raw)
        event = get(obj, "event", str)
        if self.state is StreamState.STOPPED:
            raise FrameError(f"'{event}' after 'stop'")
        if event == "connected":
            if self.state is not StreamState.AWAITING_CONNECTED:
                raise FrameError("'connected' sent twice")
            self.state = StreamState.AWAITING_START
            return Connected(protocol=str(obj.get("protocol", "")), version=str(obj.get("version", "")))
        if event == "start":
            if self.state is StreamState.STREAMING:
                raise FrameError("'start' sent twice")
            ev = _parse_start(obj)
            self._sequence(obj)
            self.stream_sid = ev.stream_sid
            self.state = StreamState.STREAMING
            return ev
        if event not in ("media", "dtmf", "mark", "stop"):
            raise FrameError(f"unknown event {show(event)}")
        if self.state is not StreamState.STREAMING:
            raise FrameError(f"'{event}' before 'start'")
        sid = get(obj, "streamSid", str)
        if sid != self.stream_sid:
            raise FrameError(f"field 'streamSid' is {show(sid)}, this stream is {show(self.stream_sid)}")
        self._sequence(obj)
        if event == "media":
            m = get(obj, "media", dict)
            return Media(
                track=get(m, "track", str, path="media", required=False, default="inbound"),
                number=counter(m, "chunk", "media"),
                timestamp_ms=counter(m, "timestamp", "media"),
                payload=base64_bytes(m, "payload", "media"),
            )
        if event == "dtmf":
            d = get(obj, "dtmf", dict)
            digit = get(d, "digit", str, path="dtmf")
            if digit not in DTMF_DIGITS:
                raise FrameError(f"field 'dtmf.digit' must be one of 0-9 * # A-D, got {show(digit)}")
            return Dtmf(digit=digit)
        if event == "mark":
            mk = get(obj, "mark", dict)
            return Mark(name=get(mk, "name", str, path="mark"))
        st = obj.get("stop")
        st = st if isinstance(st, dict) else {}
        self.state = StreamState.STOPPED
        return Stop(account_sid=str(st.get("accountSid", "")), call_sid=str(st.get("callSid", "")))

    def _sequence(self, obj: dict[str, Any]) -> None:
        if "sequenceNumber" not in obj:
            return
        seq = counter(obj, "sequenceNumber", "")
        if self.last_sequence and seq != self.last_sequence + 1:
            self.sequence_gaps += 1
        self.last_sequence = seq

    def _require_stream(self) -> str:
        if self.stream_sid is None:
            raise RuntimeError("no stream yet: 'start' has not been received")
        return self.stream_sid

    def media(self, payload: bytes) -> str:
        return dumps({"event": "media", "streamSid": self._require_stream(),
                      "media": {"payload": base64.b64encode(payload).decode("ascii")}})

    def mark(self, name: str) -> str:
        return dumps({"event": "mark", "streamSid": self._require_stream(), "mark": {"name": name}})

    def clear(self) -> str:
        return dumps({"event": "clear", "streamSid": self._require_stream()})


class ProviderFrames:
    """What a provider's end of a media stream writes the same way on Twilio and Telnyx, but for the
    names of the sequence and stream fields (camelCase on Twilio, snake_case on Telnyx)."""

    SEQUENCE_FIELD: ClassVar[str] = "sequenceNumber"
    STREAM_FIELD: ClassVar[str] = "streamSid"
    DTMF_TRACK: ClassVar[dict[str, str]] = {"track": "inbound_track"}
    sequence: int
    media_number: int  # of the last media message sent (media.chunk on the wire)

    @property
    def stream(self) -> str:
        raise NotImplementedError

    def _frame(self, event: str, **body: Any) -> str:
        self.sequence += 1
        return dumps({"event": event, self.SEQUENCE_FIELD: str(self.sequence), self.STREAM_FIELD: self.stream,
                      **body})

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        self.media_number += 1
        return self._frame("media", media={"track": "inbound", "chunk": str(self.media_number),
                                           "timestamp": str(timestamp_ms),
                                           "payload": base64.b64encode(payload).decode("ascii")})

    def dtmf(self, digit: str) -> str:
        return self._frame("dtmf", dtmf={**self.DTMF_TRACK, "digit": digit})

    def mark(self, name: str) -> str:
        return self._frame("mark", mark={"name": name})


@dataclass
class MediaStreamsProvider(ProviderFrames):
    """Twilio's end of a Media Streams WebSocket (used by the simulated caller)."""

    stream_sid: str
    account_sid: str
    call_sid: str
    sequence: int = 0
    media_number: int = 0

    @property
    def stream(self) -> str:
        return self.stream_sid

    def connected(self) -> str:
        return dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str] | None = None) -> str:
        return self._frame("start", start={
            "streamSid": self.stream_sid, "accountSid": self.account_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": custom_parameters or {},
            "mediaFormat": {"encoding": SUPPORTED_ENCODING, "sampleRate": 8000, "channels": 1},
        })

    def stop(self) -> str:
        return self._frame("stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid})

    def receive(self, raw: str | bytes) -> BridgeEvent | InvalidFrame:
        """Parse a frame from the bridge, validating it the way Twilio would."""
        try:
            obj = parse_object(raw)
            event = get(obj, "event", str)
            if event not in ("media", "mark", "clear"):
                raise FrameError(f"unknown event {show(event)}")
            sid = get(obj, "streamSid", str)
            if sid != self.stream_sid:
                raise FrameError(f"field 'streamSid' is {show(sid)}, expected {show(self.stream_sid)}")
            if event == "media":
                return Media(track="outbound", number=0, timestamp_ms=0,
                             payload=base64_bytes(get(obj, "media", dict), "payload", "media"))
            if event == "mark":
                return Mark(name=get(get(obj, "mark", dict), "name", str, path="mark"))
            return Clear()
        except FrameError as exc:
            return InvalidFrame.of(exc, raw)
