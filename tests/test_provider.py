"""Telling Twilio and Telnyx apart from the opening frames, and the codec interface both share."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay_bridge.protocols import media_streams as ms
from relay_bridge.protocols import telnyx_media as tx
from relay_bridge.protocols.provider import ProviderCodec, ProviderSniffer, sniff_provider

TWILIO_CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
TELNYX_CONNECTED = '{"event":"connected","version":"1.0.0"}'
TWILIO_START = ms.MediaStreamsProvider(stream_sid="MZ1", account_sid="AC1", call_sid="CA1").start()
TELNYX_START = tx.TelnyxMediaProvider(stream_id="s1", call_control_id="v3:x", call_session_id="cs",
                                      user_id="u").start()


@pytest.mark.parametrize(("frame", "provider"), [
    (json.loads(TWILIO_CONNECTED), "twilio"),
    ({"event": "connected", "protocol": "Call"}, "twilio"),
    (json.loads(TELNYX_CONNECTED), "telnyx"),
    ({"event": "connected", "version": "1.0.0", "x-telnyx-streaming-auth-token": "t"}, "telnyx"),
    ({"event": "connected"}, None),
    (json.loads(TWILIO_START), "twilio"),
    ({"event": "start", "start": {"streamSid": "MZ1"}}, "twilio"),
    (json.loads(TELNYX_START), "telnyx"),
    ({"event": "start"}, None),
    ({"event": "media", "streamSid": "MZ1"}, None),
    ({"event": "media", "stream_id": "s1"}, None),
])
def test_sniff_provider(frame: dict[str, Any], provider: str | None) -> None:
    assert sniff_provider(frame) == provider


@pytest.mark.parametrize(("frames", "provider", "codec_type"), [
    ([TWILIO_CONNECTED, TWILIO_START], "twilio", ms.MediaStreamsBridge),
    ([TWILIO_START], "twilio", ms.MediaStreamsBridge),
    ([TELNYX_CONNECTED, TELNYX_START], "telnyx", tx.TelnyxMediaBridge),
    ([TELNYX_START], "telnyx", tx.TelnyxMediaBridge),
    (['{"event":"connected"}', TWILIO_START], "twilio", ms.MediaStreamsBridge),
    (['{"event":"connected"}', TELNYX_START], "telnyx", tx.TelnyxMediaBridge),
])
def test_sniffer_builds_the_codec_and_replays_the_opening(frames: list[str], provider: str,
                                                          codec_type: type[Any]) -> None:
    sniffer = ProviderSniffer()
    events = [ev for frame in frames for ev in sniffer.feed(frame)]
    assert sniffer.provider == provider
    assert isinstance(sniffer.codec, codec_type)
    assert isinstance(events[-1], ms.Start | tx.TelnyxStart)
    assert [type(e) for e in events[:-1]] == [ms.Connected] * (len(frames) - 1)
    assert sniffer.codec.state is ms.StreamState.STREAMING


def test_after_deciding_frames_go_straight_to_the_codec() -> None:
    sniffer = ProviderSniffer()
    sniffer.feed(TELNYX_CONNECTED)
    codec = sniffer.codec
    assert isinstance(codec, tx.TelnyxMediaBridge)
    sniffer.feed(TELNYX_START)
    assert codec.stream_id == "s1"
    [ev] = sniffer.feed(TWILIO_START)  # a Twilio frame on a Telnyx stream is the codec's business now
    assert isinstance(ev, ms.InvalidFrame) and "'start' sent twice" in ev.reason


@pytest.mark.parametrize(("raw", "reason"), [
    ("nope", "not JSON"),
    (b"\x00", "binary frame"),
    ('{"event":"start","start":{}}', "missing field 'streamSid' (Twilio) or 'stream_id' (Telnyx)"),
    ('{"event":"media","streamSid":"MZ1"}', "'media' before 'start'"),
    ('{"no":"event"}', "missing field 'event'"),
    # What json.loads takes but cannot be carried on (see relay_bridge/protocols/fields.py).
    ('{"event":"connected","version":' + "1" * 5000 + "}", "number of 5000 characters"),
    ('{"event":"connected","version":"\\ud800"}', "'version' holds a lone surrogate"),
    ('{"event":"connected","version":' + "[" * 40 + "]" * 40 + "}", "nests deeper than 32"),
    ('{"event":"' + "x" * 100_000 + '"}', "(100000 characters) before 'start'"),
])
def test_frames_that_decide_nothing_are_invalid(raw: str | bytes, reason: str) -> None:
    sniffer = ProviderSniffer()
    [ev] = sniffer.feed(raw)
    assert isinstance(ev, ms.InvalidFrame) and reason in ev.reason
    assert sniffer.codec is None and sniffer.invalid_frames == 1
    assert isinstance(sniffer.feed(TWILIO_START)[-1], ms.Start)  # and the stream can still start


def test_a_refused_start_does_not_decide_the_provider() -> None:
    # A malformed Twilio-looking start used to tie the stream to the Twilio codec for good, so the
    # Telnyx stream that followed was refused frame by frame.
    sniffer = ProviderSniffer()
    assert sniffer.feed('{"event":"connected"}') == []
    bad_twilio = json.loads(TWILIO_START)
    del bad_twilio["start"]["mediaFormat"]
    [ev] = sniffer.feed(json.dumps(bad_twilio))
    assert isinstance(ev, ms.InvalidFrame) and "start.mediaFormat" in ev.reason
    assert (sniffer.codec, sniffer.provider, sniffer.invalid_frames) == (None, None, 1)
    connected, start = sniffer.feed(TELNYX_START)  # the kept bare connected is replayed
    assert connected == ms.Connected(protocol="", version="") and isinstance(start, tx.TelnyxStart)
    assert isinstance(sniffer.codec, tx.TelnyxMediaBridge)


def test_bare_connected_frames_are_bounded() -> None:
    sniffer = ProviderSniffer()
    assert sniffer.feed('{"event":"connected"}') == []
    assert sniffer.feed('{"event":"connected"}') == []
    [ev] = sniffer.feed('{"event":"connected"}')
    assert isinstance(ev, ms.InvalidFrame)


def test_both_codecs_drop_oversized_custom_parameters_the_same_way() -> None:
    params = {"greeting": "g" * 5000, "ok": "yes", **{f"p{i}": "v" for i in range(100)}}
    twilio = ms.MediaStreamsProvider(stream_sid="MZ1", account_sid="AC1", call_sid="CA1").start(params)
    telnyx = tx.TelnyxMediaProvider(stream_id="s1", call_control_id="v3:x", call_session_id="cs",
                                    user_id="u").start(params)
    starts = [ProviderSniffer().feed(frame)[-1] for frame in (twilio, telnyx)]
    assert isinstance(starts[0], ms.Start) and isinstance(starts[1], tx.TelnyxStart)
    assert starts[0].custom_parameters == starts[1].custom_parameters
    assert "greeting" not in starts[0].custom_parameters and starts[0].custom_parameters["ok"] == "yes"
    reasons = [[r.replace("customParameters", "custom_parameters") for r in s.dropped_parameters] for s in starts]
    assert reasons[0] == reasons[1] == [
        "field 'start.custom_parameters.greeting' holds 5000 characters, more than 4096: dropped",
        "field 'start.custom_parameters': 38 parameters past the first 64 dropped",
    ]


def test_both_codecs_share_the_interface() -> None:
    codecs: list[ProviderCodec] = [ms.MediaStreamsBridge(), tx.TelnyxMediaBridge()]
    for codec, start in zip(codecs, (TWILIO_START, TELNYX_START), strict=True):
        [event] = codec.feed(start)
        assert isinstance(event, ms.Start | tx.TelnyxStart)
        assert json.loads(codec.clear())["event"] == "clear"
        assert json.loads(codec.mark("m"))["mark"] == {"name": "m"}
        assert json.loads(codec.media(b"\xff" * 160))["event"] == "media"
        assert codec.invalid_frames == 0


def test_twilio_feed_wraps_receive() -> None:
    a, b = ms.MediaStreamsBridge(), ms.MediaStreamsBridge()
    for frame in (TWILIO_CONNECTED, TWILIO_START, "junk", '{"event":"stop","streamSid":"MZ1"}'):
        assert a.feed(frame) == [b.receive(frame)]
