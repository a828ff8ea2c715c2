"""Telnyx media streaming, sans-IO, in both roles.

Theory of operation (protocols.md section 5). Telnyx opens a WebSocket to the bridge and sends the
same kinds of JSON frames as Twilio Media Streams, in snake_case: ``connected`` (only ``version``),
``start`` (``stream_id`` and ``start.{user_id, call_control_id, call_session_id, from, to, tags,
client_state, custom_parameters, media_format}``), ``media``, ``dtmf``, ``mark`` echoes, ``stop``,
and ``error`` frames of its own. The bridge sends ``media`` and ``mark`` as Telnyx documents them
(no ``stream_id``, as pipecat does) and ``clear`` as ``{"event":"clear"}``.

Audio. ``media`` carries the RTP payload in the stream's codec: PCMU or PCMA at 8 kHz, or L16
(big-endian) at 8 or 16 kHz are accepted; anything else is refused at ``start`` with a reason
naming the field. The call runtime works on 8 kHz mu-law, so this codec converts at the edge:
``Media.payload`` is always 8 kHz mu-law, and ``media(ulaw)`` encodes into the stream's format. Two-
way audio needs ``bidirectionalMode="rtp"`` (``stream_bidirectional_mode: "rtp"``) with
``bidirectionalCodec``/``bidirectionalSamplingRate`` equal to ``codec`` and the stream's rate, since
replies are sent in the format ``start`` announced; Telnyx's default ``mp3`` mode is not spoken here.
Telnyx wants 20 ms to 30 s of audio per outbound RTP payload; the pacer's 20 ms frames meet that.

Ordering. Telnyx does not guarantee frame order, so media is reordered by ``media.chunk`` (per
track) with a hold-back of at most ``MAX_HOLD_FRAMES`` frames (60 ms at 20 ms a frame): a frame
that arrives early waits for the ones before it; once more than that many wait, the gap is given
up and counted as skipped; a frame that comes after its place was passed (late or duplicate) is
dropped and counted. Audio is converted in release order, so stateful filters see the stream in
order. Control frames (``dtmf``, ``mark``, ``error``) are not held: they are urgent and carry no
audio. ``stop`` first releases whatever media is held. Because one frame can release zero or
several events, the codec's entry point is ``feed(raw) -> list``.

Bad input never raises: it becomes ``InvalidFrame`` with a reason naming the field. Only the track
names Telnyx sends (``inbound``, ``outbound``) are taken, since each track holds a reorder buffer and
a transcoder. Custom parameters over the limits in ``fields`` are dropped, not the stream, with
the reasons in ``TelnyxStart.dropped_parameters``.
``TelnyxMediaProvider`` is Telnyx's end, used by the simulated caller.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from relay_bridge.audio.transcode import ENCODINGS, SAMPLE_RATES, EdgeTranscoder, bytes_per_ms
from relay_bridge.protocols.call_details import CallDetails
from relay_bridge.protocols.fields import (
    FrameError,
    base64_bytes,
    counter,
    custom_parameters,
    decimal,
    dumps,
    parse_object,
    show,
)
from relay_bridge.protocols.fields import field as get
from relay_bridge.protocols.media_streams import (
    DTMF_DIGITS,
    Clear,
    Connected,
    Dtmf,
    InvalidFrame,
    Mark,
    Media,
    MediaFormat,
    ProviderFrames,
    Stop,
    StreamState,
)

MAX_HOLD_FRAMES = 3
FIRST_NUMBER = 1  # Telnyx, like Twilio, numbers media messages (media.chunk) from 1
MIN_OUTBOUND_MS = 20  # rtp mode: each outbound payload holds 20 ms to 30 s of audio
MAX_OUTBOUND_MS = 30_000
CALL_STATUS = "active"  # Telnyx's setup.callStatus for a live call (lowercase, unlike Twilio)
TRACKS = ("inbound", "outbound")  # media.track as Telnyx sends it
MAX_TAGS = 64
MAX_TAG_CHARS = 256


@dataclass(frozen=True)
class TelnyxStart:
    """The ``start`` frame; ``stream_sid``/``call_sid``/``account_sid`` mirror Twilio's names for the runtime."""

    stream_id: str
    call_control_id: str
    call_session_id: str
    call_leg_id: str | None
    user_id: str | None
    from_: str
    to: str
    tags: tuple[str, ...]
    client_state: str | None
    custom_parameters: dict[str, Any]  # values may be any JSON type on Telnyx
    media_format: MediaFormat
    dropped_parameters: tuple[str, ...] = ()  # why each custom parameter left out was dropped

    provider: ClassVar[str] = "telnyx"

    def call_details(self) -> CallDetails:
        """The ``setup`` fields Telnyx's ConversationRelay sends for this stream (protocols.md 3.1).

        ``callSid`` mirrors ``callControlId``, ``accountSid`` is the account's UUID (``user_id``),
        ``callStatus`` is lowercase. ``direction`` and ``callerName`` may come from custom parameters,
        as on Twilio. The Twilio-only fields keep their defaults so Twilio-written apps still find them.
        """
        params = self.custom_parameters
        known = {attr: params[name] for name, attr in (("direction", "direction"), ("callerName", "caller_name"))
                 if isinstance(params.get(name), str)}
        return CallDetails(call_sid=self.call_control_id, account_sid=self.account_sid, from_=self.from_, to=self.to,
                           call_status=CALL_STATUS, custom_parameters=dict(params),
                           call_control_id=self.call_control_id, call_session_id=self.call_session_id,
                           call_leg_id=self.call_leg_id, **known)

    @staticmethod
    def new_session_id() -> str:
        return str(uuid.uuid4())  # Telnyx session ids are UUIDs

    @property
    def stream_sid(self) -> str:
        return self.stream_id

    @property
    def call_sid(self) -> str:
        return self.call_control_id

    @property
    def account_sid(self) -> str:
        return self.user_id or ""


@dataclass(frozen=True)
class ProviderError:
    """An ``error`` frame from Telnyx (the stream may continue or close after it)."""

    code: int | None
    title: str
    detail: str


TelnyxEvent = Connected | TelnyxStart | Media | Dtmf | Mark | Stop | ProviderError


def _optional_str(obj: dict[str, Any], name: str, path: str) -> str | None:
    value: str | None = get(obj, name, str, path=path, required=False)
    return value


def parse_media_format(start: dict[str, Any]) -> MediaFormat:
    fmt = get(start, "media_format", dict, path="start")
    media_format = MediaFormat(
        encoding=get(fmt, "encoding", str, path="start.media_format"),
        sample_rate=get(fmt, "sample_rate", int, path="start.media_format"),
        channels=get(fmt, "channels", int, path="start.media_format", required=False, default=1),
    )
    if media_format.encoding not in ENCODINGS:
        raise FrameError(f"field 'start.media_format.encoding' must be one of {', '.join(ENCODINGS)}, "
                         f"got {show(media_format.encoding)}")
    if media_format.sample_rate not in SAMPLE_RATES:
        raise FrameError(f"field 'start.media_format.sample_rate' must be 8000 or 16000, "
                         f"got {media_format.sample_rate}")
    if media_format.channels != 1:
        raise FrameError(f"field 'start.media_format.channels' must be 1, got {media_format.channels}")
    return media_format


def _parse_start(obj: dict[str, Any]) -> TelnyxStart:
    stream_id = get(obj, "stream_id", str)
    start = get(obj, "start", dict)
    tags = get(start, "tags", list, path="start", required=False, default=[])
    if len(tags) > MAX_TAGS:
        raise FrameError(f"field 'start.tags' holds {len(tags)} tags, more than {MAX_TAGS}")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise FrameError(f"field 'start.tags[{i}]' must be a string")
        if len(tag) > MAX_TAG_CHARS:
            raise FrameError(f"field 'start.tags[{i}]' holds {len(tag)} characters, more than {MAX_TAG_CHARS}")
    params, dropped = custom_parameters(start, "custom_parameters", "start", strings_only=False)
    return TelnyxStart(
        stream_id=stream_id,
        call_control_id=get(start, "call_control_id", str, path="start"),
        call_session_id=get(start, "call_session_id", str, path="start", required=False, default=""),
        call_leg_id=_optional_str(start, "call_leg_id", "start"),
        user_id=_optional_str(start, "user_id", "start"),
        from_=get(start, "from", str, path="start", required=False, default=""),
        to=get(start, "to", str, path="start", required=False, default=""),
        tags=tuple(tags),
        client_state=_optional_str(start, "client_state", "start"),
        custom_parameters=params,
        media_format=parse_media_format(start),
        dropped_parameters=dropped,
    )


def _parse_error(obj: dict[str, Any]) -> ProviderError:
    payload = get(obj, "payload", dict, required=False, default={})
    code = get(payload, "code", (int, str), path="payload", required=False)
    if isinstance(code, str):
        if not (code.isascii() and code.isdigit()):
            raise FrameError(f"field 'payload.code' must be a number, got {show(code)}")
        code = decimal(code, "payload.code")  # bounded: int() refuses 4,300 digits with a ValueError
    return ProviderError(code=code, title=get(payload, "title", str, path="payload", required=False, default=""),
                         detail=get(payload, "detail", str, path="payload", required=False, default=""))


@dataclass
class _Held:
    track: str
    number: int
    timestamp_ms: int
    payload: bytes  # still in the stream's format: converted when released, in order


@dataclass
class Reorderer:
    """Puts one track's media back in ``media.chunk`` order with a bounded hold-back."""

    max_hold: int = MAX_HOLD_FRAMES
    next_number: int | None = None
    late_dropped: int = 0  # arrived after its place was passed, or a duplicate
    skipped: int = 0  # media messages given up on (never arrived within the hold-back)
    _held: dict[int, _Held] = field(default_factory=dict)

    def push(self, frame: _Held) -> list[_Held]:
        if self.next_number is None:
            # A stream whose first frames are swapped must not lose message 1; a stream that starts
            # higher costs one hold-back at the start, then the gap below it is skipped.
            self.next_number = min(frame.number, FIRST_NUMBER)
        if frame.number < self.next_number or frame.number in self._held:
            self.late_dropped += 1
            return []
        self._held[frame.number] = frame
        out = self._release()
        while len(self._held) > self.max_hold:
            first = min(self._held)
            self.skipped += first - self.next_number
            self.next_number = first
            out += self._release()
        return out

    def flush(self) -> list[_Held]:
        """Release everything held, in order, giving up on the gaps."""
        out: list[_Held] = []
        while self._held:
            first = min(self._held)
            assert self.next_number is not None
            self.skipped += first - self.next_number
            self.next_number = first
            out += self._release()
        return out

    @property
    def holding(self) -> int:
        return len(self._held)

    def _release(self) -> list[_Held]:
        out = []
        while self.next_number in self._held:
            out.append(self._held.pop(self.next_number))
            self.next_number += 1
        return out


@dataclass
class TelnyxMediaBridge:
    """The bridge's end of a Telnyx media streaming WebSocket."""

    max_hold: int = MAX_HOLD_FRAMES
    state: StreamState = StreamState.AWAITING_CONNECTED
    stream_id: str | None = None
    media_format: MediaFormat | None = None
    invalid_frames: int = 0
    errors_received: int = 0
    _tracks: dict[str, tuple[Reorderer, EdgeTranscoder]] = field(default_factory=dict)
    _outbound: EdgeTranscoder | None = None

    # -- inbound ------------------------------------------------------------------------------

    def feed(self, raw: str | bytes) -> list[TelnyxEvent | InvalidFrame]:
        """Parse one frame; return the events it releases (none, one, or several after a gap fills)."""
        try:
            return self._feed(raw)
        except FrameError as exc:
            self.invalid_frames += 1
            return [InvalidFrame.of(exc, raw)]

    def flush(self) -> list[TelnyxEvent | InvalidFrame]:
        """Release any held media now, giving up on missing messages (e.g. the stream went quiet)."""
        return [ev for track in list(self._tracks) for ev in self._release(track, self._tracks[track][0].flush())]

    def _feed(self, raw: str | bytes) -> list[TelnyxEvent | InvalidFrame]:
        obj = parse_object(raw)
        event = get(obj, "event", str)
        if self.state is StreamState.STOPPED:
            raise FrameError(f"'{event}' after 'stop'")
        if event == "error":
            self._check_stream(obj)
            error = _parse_error(obj)
            self.errors_received += 1  # only once it parsed: a refused frame changes nothing
            return [error]
        if event == "connected":
            if self.state is not StreamState.AWAITING_CONNECTED:
                raise FrameError("'connected' sent twice")
            self.state = StreamState.AWAITING_START
            return [Connected(protocol="", version=str(obj.get("version", "")))]
        if event == "start":
            if self.state is StreamState.STREAMING:
                raise FrameError("'start' sent twice")
            self._sequence(obj)
            start = _parse_start(obj)
            self.stream_id = start.stream_id
            self.media_format = start.media_format
            self._outbound = EdgeTranscoder(start.media_format.encoding, start.media_format.sample_rate)
            self.state = StreamState.STREAMING
            return [start]
        if event not in ("media", "dtmf", "mark", "stop"):
            raise FrameError(f"unknown event {show(event)}")
        if self.state is not StreamState.STREAMING:
            raise FrameError(f"'{event}' before 'start'")
        self._check_stream(obj)
        self._sequence(obj)
        if event == "media":
            return self._media(get(obj, "media", dict))
        if event == "dtmf":
            digit = get(get(obj, "dtmf", dict), "digit", str, path="dtmf")
            if digit not in DTMF_DIGITS:
                raise FrameError(f"field 'dtmf.digit' must be one of 0-9 * # A-D, got {show(digit)}")
            return [Dtmf(digit=digit)]
        if event == "mark":
            return [Mark(name=get(get(obj, "mark", dict), "name", str, path="mark"))]
        stop = get(obj, "stop", dict, required=False, default={})
        held = self.flush()
        self.state = StreamState.STOPPED
        return [*held, Stop(account_sid=str(stop.get("user_id", "")), call_sid=str(stop.get("call_control_id", "")))]

    def _check_stream(self, obj: dict[str, Any]) -> None:
        # Telnyx stamps stream_id on its frames; a frame for another stream is refused, one without is taken.
        sid = get(obj, "stream_id", str, required=False)
        if sid is not None and self.stream_id is not None and sid != self.stream_id:
            raise FrameError(f"field 'stream_id' is {show(sid)}, this stream is {show(self.stream_id)}")

    def _sequence(self, obj: dict[str, Any]) -> None:
        # Only checked for form: frames may legitimately arrive out of order, so gaps mean nothing.
        if "sequence_number" in obj:
            counter(obj, "sequence_number", "")

    def _media(self, m: dict[str, Any]) -> list[TelnyxEvent | InvalidFrame]:
        assert self.media_format is not None
        track = get(m, "track", str, path="media", required=False, default="inbound")
        if track not in TRACKS:
            # Each track name gets its own reorder buffer and transcoder: only Telnyx's own are taken.
            raise FrameError(f"field 'media.track' must be 'inbound' or 'outbound', got {show(track)}")
        frame = _Held(track=track, number=counter(m, "chunk", "media"), timestamp_ms=counter(m, "timestamp", "media"),
                      payload=base64_bytes(m, "payload", "media"))
        if self.media_format.encoding == "L16" and len(frame.payload) % 2:
            raise FrameError(f"field 'media.payload' holds {len(frame.payload)} bytes; L16 needs whole 16-bit samples")
        if track not in self._tracks:
            fmt = self.media_format
            self._tracks[track] = (Reorderer(self.max_hold), EdgeTranscoder(fmt.encoding, fmt.sample_rate))
        return self._release(track, self._tracks[track][0].push(frame))

    def _release(self, track: str, frames: list[_Held]) -> list[TelnyxEvent | InvalidFrame]:
        edge = self._tracks[track][1]
        return [Media(track=f.track, number=f.number, timestamp_ms=f.timestamp_ms, payload=edge.to_ulaw(f.payload))
                for f in frames]

    # -- statistics ---------------------------------------------------------------------------

    @property
    def late_dropped(self) -> int:
        """Media frames dropped because they came after their place (late or duplicated)."""
        return sum(r.late_dropped for r, _ in self._tracks.values())

    @property
    def skipped(self) -> int:
        """Chunks given up on because they had not arrived within the hold-back."""
        return sum(r.skipped for r, _ in self._tracks.values())

    # -- outbound -----------------------------------------------------------------------------

    def _require_stream(self) -> EdgeTranscoder:
        if self._outbound is None:
            raise RuntimeError("no stream yet: 'start' has not been received")
        return self._outbound

    def media(self, payload: bytes) -> str:
        """A ``media`` frame for 8 kHz mu-law ``payload``, encoded into the stream's format."""
        wire = self._require_stream().from_ulaw(payload)
        return dumps({"event": "media", "media": {"payload": base64.b64encode(wire).decode("ascii")}})

    def mark(self, name: str) -> str:
        self._require_stream()
        return dumps({"event": "mark", "mark": {"name": name}})

    def clear(self) -> str:
        self._require_stream()
        return dumps({"event": "clear"})


@dataclass
class TelnyxMediaProvider(ProviderFrames):
    """Telnyx's end of a media streaming WebSocket (used by the simulated caller).

    Payloads are in the stream's format both ways; the caller converts.
    """

    stream_id: str
    call_control_id: str
    call_session_id: str
    user_id: str
    encoding: str = "PCMU"
    sample_rate: int = 8000
    from_: str = ""
    to: str = ""
    call_leg_id: str | None = None
    sequence: int = 0
    media_number: int = 0
    SEQUENCE_FIELD: ClassVar[str] = "sequence_number"
    STREAM_FIELD: ClassVar[str] = "stream_id"
    DTMF_TRACK: ClassVar[dict[str, str]] = {}

    @property
    def stream(self) -> str:
        return self.stream_id

    def connected(self) -> str:
        return dumps({"event": "connected", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, Any] | None = None) -> str:
        start: dict[str, Any] = {
            "user_id": self.user_id, "call_control_id": self.call_control_id,
            "call_session_id": self.call_session_id, "from": self.from_, "to": self.to, "tags": [],
            "client_state": "", "custom_parameters": custom_parameters or {},
            "media_format": {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1},
        }
        if self.call_leg_id is not None:
            start["call_leg_id"] = self.call_leg_id
        return self._frame("start", start=start)

    def stop(self) -> str:
        return self._frame("stop", stop={"user_id": self.user_id, "call_control_id": self.call_control_id})

    def error(self, code: int, title: str, detail: str) -> str:
        return dumps({"event": "error", "stream_id": self.stream_id,
                      "payload": {"code": code, "title": title, "detail": detail}})

    def receive(self, raw: str | bytes) -> Media | Mark | Clear | InvalidFrame:
        """Parse a frame from the bridge, validating it as a bidirectional ``rtp`` stream would."""
        try:
            obj = parse_object(raw)
            event = get(obj, "event", str)
            if event not in ("media", "mark", "clear"):
                raise FrameError(f"unknown event {show(event)}")
            if "streamSid" in obj:
                raise FrameError("field 'streamSid' is Twilio's; Telnyx frames do not carry it")
            sid = get(obj, "stream_id", str, required=False)
            if sid is not None and sid != self.stream_id:
                raise FrameError(f"field 'stream_id' is {show(sid)}, expected {show(self.stream_id)}")
            if event == "media":
                payload = base64_bytes(get(obj, "media", dict), "payload", "media")
                per_ms = bytes_per_ms(self.encoding, self.sample_rate)
                if len(payload) % per_ms or not MIN_OUTBOUND_MS <= len(payload) // per_ms <= MAX_OUTBOUND_MS:
                    raise FrameError(f"field 'media.payload' holds {len(payload)} bytes; {self.encoding} at "
                                     f"{self.sample_rate} Hz needs whole milliseconds, 20 ms to 30 s")
                return Media(track="outbound", number=0, timestamp_ms=0, payload=payload)
            if event == "mark":
                return Mark(name=get(get(obj, "mark", dict), "name", str, path="mark"))
            return Clear()
        except FrameError as exc:
            return InvalidFrame.of(exc, raw)
