"""Twilio Media Streams codec: frames from Twilio (validated), frames to Twilio, both roles."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_bridge.protocols.fields import MAX_CUSTOM_PARAMETERS, MAX_PARAMETER_NAME_CHARS, MAX_PARAMETER_VALUE_CHARS
from relay_bridge.protocols.media_streams import (
    Clear,
    Connected,
    Dtmf,
    InvalidFrame,
    Mark,
    Media,
    MediaFormat,
    MediaStreamsBridge,
    MediaStreamsProvider,
    Start,
    Stop,
    StreamState,
)

SID = "MZ00000000000000000000000000000001"
ACCOUNT = "AC00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"


def dumps(obj: Any) -> str:
    return json.dumps(obj)


def start_obj(**start_changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "accountSid": ACCOUNT,
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"relayUrl": "wss://app.example/ws", "lang": "en-US"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    obj["start"].update(start_changes)
    return obj


def media_obj(seq: int = 2, **media_changes: Any) -> dict[str, Any]:
    media = {"track": "inbound", "chunk": "1", "timestamp": "20",
             "payload": base64.b64encode(b"\xff" * 160).decode()}
    media.update(media_changes)
    return {"event": "media", "sequenceNumber": str(seq), "streamSid": SID, "media": media}


def without(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    target = obj
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return obj


def streaming() -> MediaStreamsBridge:
    b = MediaStreamsBridge()
    connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert isinstance(b.receive(dumps(connected)), Connected)
    assert isinstance(b.receive(dumps(start_obj())), Start)
    return b


# --- valid frames -----------------------------------------------------------------------------


def test_connected() -> None:
    b = MediaStreamsBridge()
    ev = b.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    assert ev == Connected(protocol="Call", version="1.0.0")
    assert b.state is StreamState.AWAITING_START


def test_connected_without_optional_fields() -> None:
    assert MediaStreamsBridge().receive('{"event":"connected"}') == Connected(protocol="", version="")


def test_start_fields() -> None:
    b = MediaStreamsBridge()
    b.receive('{"event":"connected"}')
    ev = b.receive(dumps(start_obj()))
    assert ev == Start(
        stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL, tracks=("inbound",),
        custom_parameters={"relayUrl": "wss://app.example/ws", "lang": "en-US"},
        media_format=MediaFormat(encoding="audio/x-mulaw", sample_rate=8000, channels=1),
    )
    assert b.state is StreamState.STREAMING
    assert b.stream_sid == SID
    assert b.last_sequence == 1


def test_start_without_connected_is_accepted() -> None:
    b = MediaStreamsBridge()
    assert isinstance(b.receive(dumps(start_obj())), Start)
    assert b.state is StreamState.STREAMING


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"customParameters": {}}, lambda s: s.custom_parameters == {}),
        ({"tracks": ["inbound", "outbound"]}, lambda s: s.tracks == ("inbound", "outbound")),
    ],
)
def test_start_optional_fields(changes: dict[str, Any], check: Any) -> None:
    b = MediaStreamsBridge()
    ev = b.receive(dumps(start_obj(**changes)))
    assert isinstance(ev, Start)
    assert check(ev)


def test_start_defaults_when_optional_fields_absent() -> None:
    obj = without(without(start_obj(), "start", "customParameters"), "start", "tracks")
    obj = without(obj, "streamSid")
    ev = MediaStreamsBridge().receive(dumps(obj))
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {}
    assert ev.tracks == ("inbound",)


def test_media() -> None:
    b = streaming()
    payload = bytes(range(160))
    ev = b.receive(dumps(media_obj(chunk="7", timestamp="140", payload=base64.b64encode(payload).decode())))
    assert ev == Media(track="inbound", number=7, timestamp_ms=140, payload=payload)


def test_media_tolerates_integer_counters_and_missing_track() -> None:
    b = streaming()
    obj = without(media_obj(chunk=3, timestamp=60), "media", "track")
    ev = b.receive(dumps(obj))
    assert isinstance(ev, Media)
    assert (ev.track, ev.number, ev.timestamp_ms) == ("inbound", 3, 60)


def test_media_empty_payload() -> None:
    ev = streaming().receive(dumps(media_obj(payload="")))
    assert isinstance(ev, Media)
    assert ev.payload == b""


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_digits(digit: str) -> None:
    b = streaming()
    frame = {"event": "dtmf", "sequenceNumber": "2", "streamSid": SID, "dtmf": {"track": "inbound_track",
                                                                                 "digit": digit}}
    assert b.receive(dumps(frame)) == Dtmf(digit=digit)


def test_mark() -> None:
    b = streaming()
    frame = {"event": "mark", "sequenceNumber": "2", "streamSid": SID, "mark": {"name": "c1-1"}}
    assert b.receive(dumps(frame)) == Mark(name="c1-1")


def test_stop() -> None:
    b = streaming()
    frame = {"event": "stop", "sequenceNumber": "2", "streamSid": SID,
             "stop": {"accountSid": ACCOUNT, "callSid": CALL}}
    assert b.receive(dumps(frame)) == Stop(account_sid=ACCOUNT, call_sid=CALL)
    assert b.state is StreamState.STOPPED


def test_stop_without_body() -> None:
    b = streaming()
    assert b.receive(dumps({"event": "stop", "streamSid": SID})) == Stop(account_sid="", call_sid="")


def test_unknown_extra_fields_ignored() -> None:
    b = streaming()
    obj = media_obj()
    obj["extra"] = {"x": 1}
    obj["media"]["other"] = True
    assert isinstance(b.receive(dumps(obj)), Media)


# --- invalid frames ---------------------------------------------------------------------------

AFTER_START = "after_start"
FRESH = "fresh"

INVALID: list[tuple[str, str, str | bytes, str]] = [
    # (id, when, raw frame, text the reason must contain)
    ("binary", FRESH, b'{"event":"connected"}', "binary"),
    ("binary-streaming", AFTER_START, b"\x00\x01", "binary"),
    ("not-json", FRESH, "{event: connected}", "not JSON"),
    ("empty", FRESH, "", "not JSON"),
    ("array", FRESH, '["connected"]', "JSON object"),
    ("string", FRESH, '"connected"', "JSON object"),
    ("null", FRESH, "null", "JSON object"),
    ("missing-event", FRESH, '{"streamSid":"MZ1"}', "'event'"),
    ("event-not-string", FRESH, '{"event":5}', "'event'"),
    ("unknown-event", AFTER_START, dumps({"event": "hangup", "streamSid": SID}), "hangup"),
    ("unknown-event-fresh", FRESH, '{"event":"foo"}', "foo"),
    ("media-before-start", FRESH, dumps(media_obj()), "before 'start'"),
    ("dtmf-before-start", FRESH, dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "1"}}),
     "before 'start'"),
    ("start-twice", AFTER_START, dumps(start_obj()), "'start' sent twice"),
    ("connected-twice", AFTER_START, '{"event":"connected"}', "'connected'"),
    ("missing-streamSid", AFTER_START, dumps(without(media_obj(), "streamSid")), "'streamSid'"),
    ("wrong-streamSid", AFTER_START, dumps({**media_obj(), "streamSid": "MZother"}), "'streamSid'"),
    ("streamSid-not-string", AFTER_START, dumps({**media_obj(), "streamSid": 1}), "'streamSid'"),
    ("media-missing-body", AFTER_START, dumps(without(media_obj(), "media")), "'media'"),
    ("media-body-not-object", AFTER_START, dumps({**media_obj(), "media": "x"}), "'media'"),
    ("bad-base64", AFTER_START, dumps(media_obj(payload="not base64!")), "media.payload"),
    ("bad-base64-padding", AFTER_START, dumps(media_obj(payload="/w")), "media.payload"),
    ("payload-not-string", AFTER_START, dumps(media_obj(payload=123)), "media.payload"),
    ("missing-payload", AFTER_START, dumps(without(media_obj(), "media", "payload")), "media.payload"),
    ("chunk-not-decimal", AFTER_START, dumps(media_obj(chunk="1a")), "media.chunk"),
    ("chunk-negative-string", AFTER_START, dumps(media_obj(chunk="-1")), "media.chunk"),
    ("chunk-float", AFTER_START, dumps(media_obj(chunk=1.5)), "media.chunk"),
    ("chunk-bool", AFTER_START, dumps(media_obj(chunk=True)), "media.chunk"),
    ("timestamp-not-decimal", AFTER_START, dumps(media_obj(timestamp="2.0")), "media.timestamp"),
    ("timestamp-missing", AFTER_START, dumps(without(media_obj(), "media", "timestamp")), "media.timestamp"),
    ("chunk-superscript", AFTER_START, dumps(media_obj(chunk="\u00b2")), "media.chunk"),
    ("sequence-not-decimal", AFTER_START, dumps({**media_obj(), "sequenceNumber": "x"}), "'sequenceNumber'"),
    ("sequence-superscript", AFTER_START, dumps({**media_obj(), "sequenceNumber": "\u00b3"}),
     "sequenceNumber"),
    ("dtmf-bad-digit", AFTER_START, dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "E"}}),
     "dtmf.digit"),
    ("dtmf-two-digits", AFTER_START, dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}}),
     "dtmf.digit"),
    ("dtmf-empty", AFTER_START, dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": ""}}),
     "dtmf.digit"),
    ("dtmf-missing-digit", AFTER_START, dumps({"event": "dtmf", "streamSid": SID, "dtmf": {}}), "dtmf.digit"),
    ("dtmf-digit-int", AFTER_START, dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": 1}}),
     "dtmf.digit"),
    ("mark-missing-name", AFTER_START, dumps({"event": "mark", "streamSid": SID, "mark": {}}), "mark.name"),
    ("mark-name-null", AFTER_START, dumps({"event": "mark", "streamSid": SID, "mark": {"name": None}}),
     "mark.name"),
    ("start-missing-body", FRESH, dumps(without(start_obj(), "start")), "'start'"),
    ("start-missing-streamSid", FRESH, dumps(without(start_obj(), "start", "streamSid")), "start.streamSid"),
    ("start-missing-accountSid", FRESH, dumps(without(start_obj(), "start", "accountSid")),
     "start.accountSid"),
    ("start-missing-callSid", FRESH, dumps(without(start_obj(), "start", "callSid")), "start.callSid"),
    ("start-streamSid-mismatch", FRESH, dumps({**start_obj(), "streamSid": "MZother"}), "'streamSid'"),
    ("start-missing-mediaFormat", FRESH, dumps(without(start_obj(), "start", "mediaFormat")),
     "start.mediaFormat"),
    ("start-unsupported-encoding", FRESH,
     dumps(start_obj(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 8000, "channels": 1})),
     "start.mediaFormat"),
    ("start-unsupported-rate", FRESH,
     dumps(start_obj(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1})),
     "start.mediaFormat"),
    ("start-stereo", FRESH,
     dumps(start_obj(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2})),
     "start.mediaFormat.channels"),
    ("start-rate-string", FRESH,
     dumps(start_obj(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1})),
     "start.mediaFormat.sampleRate"),
    ("start-encoding-missing", FRESH,
     dumps(start_obj(mediaFormat={"sampleRate": 8000, "channels": 1})), "start.mediaFormat.encoding"),
    ("start-params-not-object", FRESH, dumps(start_obj(customParameters=["a"])), "start.customParameters"),
    ("start-tracks-not-list", FRESH, dumps(start_obj(tracks="inbound")), "start.tracks"),
    # Peer input that json.loads takes but the bridge cannot carry (see relay_bridge/protocols/fields.py).
    ("chunk-thousands-of-digits", AFTER_START, dumps(media_obj(chunk="1" * 5000)), "media.chunk"),
    ("chunk-21-digits", AFTER_START, dumps(media_obj(chunk="1" * 21)), "media.chunk"),
    ("sequence-21-digits", AFTER_START, dumps({**media_obj(), "sequenceNumber": "9" * 21}), "sequenceNumber"),
    ("chunk-huge-integer", AFTER_START, dumps(media_obj(chunk="X")).replace('"X"', "1" * 5000), "number of 5000"),
    ("start-rate-huge-integer", FRESH,
     dumps(start_obj(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "X", "channels": 1}))
     .replace('"X"', "8" * 5000), "number of 5000"),
    ("nan", AFTER_START, dumps({**media_obj(), "extra": "X"}).replace('"X"', "NaN"), "NaN"),
    ("infinity", AFTER_START, dumps({**media_obj(), "extra": "X"}).replace('"X"', "-Infinity"), "Infinity"),
    ("float-overflow", AFTER_START, dumps({**media_obj(), "extra": "X"}).replace('"X"', "1e999"), "out of range"),
    ("lone-surrogate-mark", AFTER_START,
     dumps({"event": "mark", "streamSid": SID, "mark": {"name": "a\ud800"}}), "'mark.name' holds a lone surrogate"),
    ("lone-low-surrogate-param", FRESH, dumps(start_obj(customParameters={"greeting": "\udc00 hi"})),
     "'start.customParameters.greeting' holds a lone surrogate"),
    ("lone-surrogate-in-a-list", AFTER_START, dumps({**media_obj(), "extra": [1, ["x", "\uDBFF"]]}),
     "'extra[1][1]' holds a lone surrogate"),
    ("lone-surrogate-in-a-name", FRESH, dumps(start_obj(customParameters={"\ud800": "x"})),
     "a field name in 'start.customParameters' holds a lone surrogate"),
    ("nested-too-deep", AFTER_START, dumps({**media_obj(), "extra": json.loads("[" * 40 + "]" * 40)}),
     "'extra" + "[0]" * 31 + "' nests deeper than 32"),
    ("start-too-many-tracks", FRESH, dumps(start_obj(tracks=["inbound"] * 5)), "'start.tracks' holds 5 tracks"),
    ("start-track-not-string", FRESH, dumps(start_obj(tracks=[{"a": 1}])), "'start.tracks[0]'"),
    ("start-track-too-long", FRESH, dumps(start_obj(tracks=["x" * 33])), "'start.tracks[0]'"),
]


@pytest.mark.parametrize(
    ("when", "raw", "needle"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_frames(when: str, raw: str | bytes, needle: str) -> None:
    b = streaming() if when == AFTER_START else MediaStreamsBridge()
    state, sid, seq = b.state, b.stream_sid, b.invalid_frames
    ev = b.receive(raw)
    assert isinstance(ev, InvalidFrame), ev
    assert needle in ev.reason, ev.reason
    assert b.invalid_frames == seq + 1
    # An invalid frame changes no protocol state.
    assert (b.state, b.stream_sid) == (state, sid)
    if isinstance(raw, bytes):
        assert ev.raw == f"<{len(raw)} binary bytes>"
    else:
        assert ev.raw == raw[:200]


def test_frame_after_stop() -> None:
    b = streaming()
    assert isinstance(b.receive(dumps({"event": "stop", "streamSid": SID})), Stop)
    for frame in (media_obj(3), {"event": "stop", "streamSid": SID}, {"event": "connected"}, start_obj()):
        ev = b.receive(dumps(frame))
        assert isinstance(ev, InvalidFrame)
        assert "after 'stop'" in ev.reason
    assert b.state is StreamState.STOPPED


def test_invalid_raw_is_truncated() -> None:
    raw = "x" * 1000
    ev = MediaStreamsBridge().receive(raw)
    assert isinstance(ev, InvalidFrame)
    assert ev.raw == "x" * 200


def test_deeply_nested_json_is_an_invalid_frame() -> None:
    for raw in ("[" * 100_000, '{"a":' * 100_000):
        ev = streaming().receive(raw)
        assert isinstance(ev, InvalidFrame)


def test_valid_surrogate_pairs_and_nesting_up_to_the_limit_are_taken() -> None:
    b = streaming()
    assert b.receive(dumps({"event": "mark", "streamSid": SID, "mark": {"name": "\ud83d\ude00"}})) == Mark("\U0001f600")
    escaped = r'{"event":"mark","streamSid":"SID","mark":{"name":"\ud83d\ude00"}}'.replace("SID", SID)
    assert b.receive(escaped) == Mark("\U0001f600")
    deep = json.loads("[" * 31 + "]" * 31)  # 32 levels with the frame itself
    assert isinstance(b.receive(dumps({**media_obj(3), "extra": deep})), Media)


def test_invalid_frame_is_utf8_safe_whatever_the_input() -> None:
    # A str from a WebSocket is valid UTF-8, but the codec must not hand on one that is not.
    for raw in ("\ud800" * 300, '{"event":"connected","protocol":"\udfff"}', '{"event":"\ud800"}'):
        ev = MediaStreamsBridge().receive(raw)
        assert isinstance(ev, InvalidFrame)
        ev.raw.encode("utf-8")
        ev.reason.encode("utf-8")


def test_peer_values_in_reasons_are_cut_short() -> None:
    ev = streaming().receive(dumps({"event": "x" * 100_000, "streamSid": SID}))
    assert isinstance(ev, InvalidFrame)
    assert len(ev.reason) < 200
    assert "100000 characters" in ev.reason


# --- custom parameters: bounded, the stream goes on -------------------------------------------


def test_custom_parameter_that_is_not_a_string_is_dropped_not_the_stream() -> None:
    ev = MediaStreamsBridge().receive(dumps(start_obj(customParameters={"n": 5, "ok": "yes", "z": None})))
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {"ok": "yes"}
    assert ev.dropped_parameters == (
        "field 'start.customParameters.n' must be a string, got int: dropped",
        "field 'start.customParameters.z' must be a string, got null: dropped",
    )


def test_custom_parameters_over_the_limits_are_dropped_not_the_stream() -> None:
    params = {"greeting": "x" * (MAX_PARAMETER_VALUE_CHARS + 1), "k" * (MAX_PARAMETER_NAME_CHARS + 1): "v",
              "max": "y" * MAX_PARAMETER_VALUE_CHARS, "k" * MAX_PARAMETER_NAME_CHARS: "w"}
    params.update({f"p{i}": str(i) for i in range(1000)})
    b = MediaStreamsBridge()
    ev = b.receive(dumps(start_obj(customParameters=params)))
    assert isinstance(ev, Start)
    assert b.state is StreamState.STREAMING
    assert len(ev.custom_parameters) == MAX_CUSTOM_PARAMETERS - 2
    assert ev.custom_parameters["max"] == "y" * MAX_PARAMETER_VALUE_CHARS
    assert ev.custom_parameters["k" * MAX_PARAMETER_NAME_CHARS] == "w"
    assert list(ev.custom_parameters)[-1] == f"p{MAX_CUSTOM_PARAMETERS - 5}"  # the first ones are kept
    greeting, name, rest = ev.dropped_parameters
    assert greeting.startswith("field 'start.customParameters.greeting' holds 4097 characters, more than 4096")
    assert name.startswith("field 'start.customParameters': a parameter name of 257 characters")
    assert len(name) < 200
    assert rest == "field 'start.customParameters': 940 parameters past the first 64 dropped"


def test_stream_goes_on_after_invalid_frames() -> None:
    b = streaming()
    assert isinstance(b.receive("garbage"), InvalidFrame)
    assert isinstance(b.receive(dumps(media_obj(2, payload="!!"))), InvalidFrame)
    assert isinstance(b.receive(dumps(media_obj(3))), Media)
    assert b.invalid_frames == 2


# --- sequence numbers -------------------------------------------------------------------------


def test_sequence_gaps_counted() -> None:
    b = streaming()  # start is sequence 1
    for seq in (2, 3, 5, 6, 6, 10, 11):
        assert isinstance(b.receive(dumps(media_obj(seq))), Media)
    assert b.sequence_gaps == 3  # 3->5, 6->6, 6->10
    assert b.last_sequence == 11


def test_no_gap_for_contiguous_sequence() -> None:
    b = streaming()
    for seq in range(2, 50):
        b.receive(dumps(media_obj(seq)))
    assert b.sequence_gaps == 0
    assert b.last_sequence == 49


def test_frames_without_sequence_number_are_not_gaps() -> None:
    b = streaming()
    b.receive(dumps(without(media_obj(), "sequenceNumber")))
    b.receive(dumps(media_obj(2)))
    assert b.sequence_gaps == 0


# --- round trips ------------------------------------------------------------------------------


def test_provider_frames_parse() -> None:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    b = MediaStreamsBridge()
    assert b.receive(p.connected()) == Connected(protocol="Call", version="1.0.0")
    start = b.receive(p.start({"relayUrl": "wss://a.example/x", "name": "Zoë"}))
    assert start == Start(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL, tracks=("inbound",),
                          custom_parameters={"relayUrl": "wss://a.example/x", "name": "Zoë"},
                          media_format=MediaFormat("audio/x-mulaw", 8000, 1))
    payloads = [bytes([i]) * 160 for i in range(5)]
    for i, payload in enumerate(payloads):
        assert b.receive(p.media(payload, timestamp_ms=20 * i)) == Media(
            track="inbound", number=i + 1, timestamp_ms=20 * i, payload=payload)
    assert b.receive(p.dtmf("#")) == Dtmf("#")
    assert b.receive(p.mark("c1-1")) == Mark("c1-1")
    assert b.receive(p.stop()) == Stop(account_sid=ACCOUNT, call_sid=CALL)
    assert b.sequence_gaps == 0
    assert b.invalid_frames == 0
    assert b.last_sequence == p.sequence == 9


def test_provider_start_without_parameters() -> None:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    ev = MediaStreamsBridge().receive(p.start())
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {}


def test_provider_frames_are_twilio_shaped() -> None:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    assert "sequenceNumber" not in json.loads(p.connected())
    start = json.loads(p.start())
    assert start["sequenceNumber"] == "1"
    media = json.loads(p.media(b"\x7f", 0))
    assert media["sequenceNumber"] == "2"
    assert media["media"] == {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "fw=="}


def test_bridge_frames_parse_with_provider() -> None:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    b = MediaStreamsBridge()
    b.receive(p.start())
    payload = bytes(range(256))
    assert p.receive(b.media(payload)) == Media(track="outbound", number=0, timestamp_ms=0, payload=payload)
    assert p.receive(b.mark("c2-7")) == Mark("c2-7")
    assert p.receive(b.clear()) == Clear()


def test_bridge_frames_are_twilio_shaped() -> None:
    b = streaming()
    assert json.loads(b.media(b"\xff\xff")) == {"event": "media", "streamSid": SID,
                                                "media": {"payload": "//8="}}
    assert json.loads(b.mark("m")) == {"event": "mark", "streamSid": SID, "mark": {"name": "m"}}
    assert json.loads(b.clear()) == {"event": "clear", "streamSid": SID}


def test_bridge_cannot_send_before_start() -> None:
    b = MediaStreamsBridge()
    for send in (lambda: b.media(b""), lambda: b.mark("x"), b.clear):
        with pytest.raises(RuntimeError, match="start"):
            send()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\x00", "binary"),
        ("nope", "not JSON"),
        (dumps({"event": "media", "streamSid": "MZother", "media": {"payload": ""}}), "streamSid"),
        (dumps({"event": "start", "streamSid": SID}), "start"),
        (dumps({"event": "media", "streamSid": SID, "media": {"payload": "%%"}}), "media.payload"),
        (dumps({"event": "mark", "streamSid": SID, "mark": {}}), "mark.name"),
        (dumps({"event": "clear"}), "streamSid"),
    ],
)
def test_provider_rejects_invalid_bridge_frames(raw: str | bytes, needle: str) -> None:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    ev = p.receive(raw)
    assert isinstance(ev, InvalidFrame)
    assert needle in ev.reason


# --- never raises -----------------------------------------------------------------------------


@settings(derandomize=True, max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(), st.binary()))
def test_receive_never_raises_on_arbitrary_input(raw: str | bytes) -> None:
    for b in (MediaStreamsBridge(), streaming()):
        ev = b.receive(raw)
        assert isinstance(ev, InvalidFrame | Connected | Start | Media | Dtmf | Mark | Stop)
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    assert isinstance(p.receive(raw), InvalidFrame | Media | Mark | Clear)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
field_values = st.one_of(
    json_values, st.sampled_from(["1", "20", SID, "/w==", "#", "\u00b2", "audio/x-mulaw"])
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    event=st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", "x"]),
    top=st.dictionaries(
        st.sampled_from(["streamSid", "sequenceNumber", "protocol"]), field_values, max_size=3
    ),
    body=st.dictionaries(
        st.sampled_from(["streamSid", "accountSid", "callSid", "tracks", "customParameters", "mediaFormat",
                         "chunk", "timestamp", "payload", "track", "digit", "name"]),
        field_values, max_size=6),
)
def test_receive_never_raises_on_structured_junk(
    event: str, top: dict[str, Any], body: dict[str, Any]
) -> None:
    obj = {"event": event, **top, event: body}
    raw = dumps(obj)
    for b in (MediaStreamsBridge(), streaming()):
        b.receive(raw)
    MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL).receive(raw)
