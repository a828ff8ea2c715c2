"""What the call runtime needs from a provider codec, and telling providers apart from the first frames.

Twilio Media Streams and Telnyx media streaming both open the socket with ``connected`` and
``start`` (protocols.md 4.2 and 5.2), but in different dialects: Twilio's ``connected`` carries
``protocol: "Call"`` and its ``start`` a ``streamSid``; Telnyx's ``connected`` has only ``version``
and its ``start`` a ``stream_id``. ``ProviderSniffer`` reads frames until one of them decides, then
builds that provider's codec, feeds it every frame seen so far, and from then on passes frames
straight through. A bare ``{"event":"connected"}`` decides nothing; it is kept and replayed. Nor
does a frame that the codec it names refuses (a malformed ``start``): a refused frame changes
nothing, so the stream is not tied to the wrong codec by one bad frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from relay_bridge.protocols import media_streams as ms
from relay_bridge.protocols import telnyx_media as tx
from relay_bridge.protocols.fields import FrameError, parse_object, show

Provider = Literal["twilio", "telnyx"]
ProviderEvent = ms.ProviderEvent | tx.TelnyxEvent | ms.InvalidFrame
StartEvent = ms.Start | tx.TelnyxStart
MAX_UNDECIDED_FRAMES = 2


class OutboundCodec(Protocol):
    """Frames the bridge sends: ``payload`` is always 8 kHz mu-law, the codec encodes it for the wire."""

    def media(self, payload: bytes) -> str: ...

    def mark(self, name: str) -> str: ...

    def clear(self) -> str: ...


class ProviderCodec(OutboundCodec, Protocol):
    """The bridge's end of a provider's media socket."""

    invalid_frames: int

    def feed(self, raw: str | bytes) -> Sequence[ProviderEvent]: ...


def sniff_provider(obj: dict[str, Any]) -> Provider | None:
    """Which provider sent this opening frame; None if it does not say."""
    event = obj.get("event")
    if event == "connected":
        if "protocol" in obj:
            return "twilio"
        return "telnyx" if "version" in obj else None
    if event == "start":
        start = obj.get("start")
        if "streamSid" in obj or (isinstance(start, dict) and "streamSid" in start):
            return "twilio"
        if "stream_id" in obj:
            return "telnyx"
    return None


def new_codec(provider: Provider) -> ProviderCodec:
    return ms.MediaStreamsBridge() if provider == "twilio" else tx.TelnyxMediaBridge()


@dataclass
class ProviderSniffer:
    """Feeds frames to the right provider codec once the opening frames say which provider it is."""

    provider: Provider | None = None
    codec: ProviderCodec | None = None
    invalid_frames: int = 0  # frames refused before a codec existed
    _pending: list[str] = field(default_factory=list)

    def feed(self, raw: str | bytes) -> list[ProviderEvent]:
        if self.codec is not None:
            return list(self.codec.feed(raw))
        try:
            obj = parse_object(raw)
            provider = sniff_provider(obj)
            if provider is None:
                event = obj.get("event")
                if event == "start":
                    raise FrameError("missing field 'streamSid' (Twilio) or 'stream_id' (Telnyx)")
                if not isinstance(event, str):
                    raise FrameError("missing field 'event'")
                if event != "connected":
                    raise FrameError(f"{show(event)} before 'start'")
                if len(self._pending) >= MAX_UNDECIDED_FRAMES:
                    raise FrameError("'connected' sent twice")
        except FrameError as exc:
            self.invalid_frames += 1
            return [ms.InvalidFrame.of(exc, raw)]
        assert isinstance(raw, str)  # parse_object refuses binary frames
        if provider is None:
            self._pending.append(raw)
            return []
        codec = new_codec(provider)
        replayed = [event for frame in self._pending for event in codec.feed(frame)]
        events = list(codec.feed(raw))
        if events and all(isinstance(event, ms.InvalidFrame) for event in events):
            self.invalid_frames += 1
            return events
        self.provider, self.codec, self._pending = provider, codec, []
        return [*replayed, *events]
