"""Telnyx media streaming codec: every frame field, bad input, reordering, both roles."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_bridge.audio.g711 import alaw_encode, l16_encode, ulaw_encode
from relay_bridge.audio.transcode import EdgeTranscoder
from relay_bridge.protocols import relay
from relay_bridge.protocols.fields import MAX_CUSTOM_PARAMETERS, MAX_PARAMETER_VALUE_CHARS
from relay_bridge.protocols.media_streams import (
    Clear,
    Connected,
    Dtmf,
    InvalidFrame,
    Mark,
    Media,
    MediaFormat,
    Stop,
    StreamState,
)
from relay_bridge.protocols.telnyx_media import (
    MAX_HOLD_FRAMES,
    ProviderError,
    TelnyxMediaBridge,
    TelnyxMediaProvider,
    TelnyxStart,
)

SID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
USER = "3E6F995F-85F7-4705-9741-53B116D28237"
CCID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
SESSION = "ff55a038-6f5d-11ef-9692-02420aeffb1f"


def start_obj(**start_changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event": "start", "sequence_number": "1", "stream_id": SID,
        "start": {
            "user_id": USER, "call_control_id": CCID, "call_session_id": SESSION, "from": "+13122010094",
            "to": "+13122123456", "tags": ["TAG1", "TAG2"], "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
            "custom_parameters": {"customer_id": "customer_123", "vip": True},
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
    obj["start"].update(start_changes)
    return obj


def media_obj(chunk: int = 1, payload: bytes = b"\x7f" * 160, seq: int | None = None, **changes: Any) -> dict[str, Any]:
    media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * chunk),
             "payload": base64.b64encode(payload).decode()}
    media.update(changes)
    return {"event": "media", "sequence_number": str(seq if seq is not None else chunk + 1), "stream_id": SID,
            "media": media}


def bad_media(**changes: Any) -> dict[str, Any]:
    obj = media_obj(1)
    obj["media"].update(changes)
    return obj


def without(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    target = obj
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return obj


def streaming(encoding: str = "PCMU", rate: int = 8000, **kwargs: Any) -> TelnyxMediaBridge:
    b = TelnyxMediaBridge(**kwargs)
    assert b.feed('{"event":"connected","version":"1.0.0"}') == [Connected(protocol="", version="1.0.0")]
    fmt = {"encoding": encoding, "sample_rate": rate, "channels": 1}
    [ev] = b.feed(json.dumps(start_obj(media_format=fmt)))
    assert isinstance(ev, TelnyxStart)
    return b


def only(events: list[Any]) -> Any:
    assert len(events) == 1, events
    return events[0]


# --- valid frames -----------------------------------------------------------------------------


def test_start_fields() -> None:
    b = TelnyxMediaBridge()
    ev = only(b.feed(json.dumps(start_obj())))
    assert ev == TelnyxStart(
        stream_id=SID, call_control_id=CCID, call_session_id=SESSION, call_leg_id=None, user_id=USER,
        from_="+13122010094", to="+13122123456", tags=("TAG1", "TAG2"), client_state="aGF2ZSBhIG5pY2UgZGF5ID1d",
        custom_parameters={"customer_id": "customer_123", "vip": True},
        media_format=MediaFormat(encoding="PCMU", sample_rate=8000, channels=1))
    assert (ev.stream_sid, ev.call_sid, ev.account_sid) == (SID, CCID, USER)
    assert b.state is StreamState.STREAMING and b.stream_id == SID


@pytest.mark.parametrize(("changes", "check"), [
    ({"call_leg_id": "428c31b6"}, lambda s: s.call_leg_id == "428c31b6"),
    ({"custom_parameters": {}}, lambda s: s.custom_parameters == {}),
    ({"custom_parameters": {"n": 3, "o": {"a": [1]}, "z": None}},
     lambda s: s.custom_parameters == {"n": 3, "o": {"a": [1]}, "z": None}),
    ({"media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1}},
     lambda s: s.media_format.encoding == "PCMA"),
    ({"media_format": {"encoding": "L16", "sample_rate": 16000}}, lambda s: s.media_format.channels == 1),
    ({"media_format": {"encoding": "PCMU", "sample_rate": 16000, "channels": 1}},
     lambda s: s.media_format.sample_rate == 16000),
])
def test_start_variants(changes: dict[str, Any], check: Any) -> None:
    assert check(only(TelnyxMediaBridge().feed(json.dumps(start_obj(**changes)))))


@pytest.mark.parametrize(("missing", "check"), [
    ("user_id", lambda s: s.user_id is None and s.account_sid == ""),
    ("call_session_id", lambda s: s.call_session_id == ""),
    ("from", lambda s: s.from_ == ""),
    ("to", lambda s: s.to == ""),
    ("tags", lambda s: s.tags == ()),
    ("client_state", lambda s: s.client_state is None),
    ("custom_parameters", lambda s: s.custom_parameters == {}),
])
def test_start_optional_fields(missing: str, check: Any) -> None:
    assert check(only(TelnyxMediaBridge().feed(json.dumps(without(start_obj(), "start", missing)))))


def test_start_without_connected_and_without_sequence_number() -> None:
    b = TelnyxMediaBridge()
    assert isinstance(only(b.feed(json.dumps(without(start_obj(), "sequence_number")))), TelnyxStart)


def test_media_dtmf_mark_stop() -> None:
    b = streaming()
    assert only(b.feed(json.dumps(media_obj(1)))) == Media(track="inbound", number=1, timestamp_ms=20,
                                                           payload=b"\x7f" * 160)
    dtmf = {"event": "dtmf", "sequence_number": "3", "stream_id": SID, "occurred_at": "2024-01-01T00:00:00Z",
            "dtmf": {"digit": "#"}}
    assert b.feed(json.dumps(dtmf)) == [Dtmf(digit="#")]
    mark = {"event": "mark", "sequence_number": "4", "stream_id": SID, "mark": {"name": "m1"}}
    assert b.feed(json.dumps(mark)) == [Mark(name="m1")]
    stop = {"event": "stop", "sequence_number": "5", "stream_id": SID,
            "stop": {"user_id": USER, "call_control_id": CCID}}
    assert b.feed(json.dumps(stop)) == [Stop(account_sid=USER, call_sid=CCID)]
    assert b.state is StreamState.STOPPED
    assert isinstance(only(b.feed(json.dumps(media_obj(2)))), InvalidFrame)


def test_frames_without_stream_id_are_taken() -> None:
    b = streaming()
    assert isinstance(only(b.feed(json.dumps(without(media_obj(1), "stream_id")))), Media)


@pytest.mark.parametrize(("frame", "expected"), [
    ({"event": "error", "stream_id": SID, "payload": {"code": 100002, "title": "Unknown error",
                                                      "detail": "An unknown error occurred"}},
     ProviderError(code=100002, title="Unknown error", detail="An unknown error occurred")),
    ({"event": "error", "payload": {"code": "100003", "title": "Malformed frame"}},
     ProviderError(code=100003, title="Malformed frame", detail="")),
    ({"event": "error"}, ProviderError(code=None, title="", detail="")),
])
def test_error_frames(frame: dict[str, Any], expected: ProviderError) -> None:
    b = streaming()
    assert b.feed(json.dumps(frame)) == [expected]
    assert b.errors_received == 1 and b.invalid_frames == 0
    assert isinstance(only(b.feed(json.dumps(media_obj(1)))), Media)  # the stream goes on


def test_error_frame_before_start_is_reported() -> None:
    assert TelnyxMediaBridge().feed('{"event":"error","payload":{"detail":"x"}}') == [ProviderError(None, "", "x")]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x00\x01", "binary frame"),
    ("not json", "not JSON"),
    ("[]", "expected a JSON object"),
    ('{"no":"event"}', "missing field 'event'"),
    ('{"event":"bogus"}', "unknown event 'bogus'"),
    (json.dumps(without(start_obj(), "stream_id")), "missing field 'stream_id'"),
    (json.dumps(without(start_obj(), "start")), "missing field 'start'"),
    (json.dumps(without(start_obj(), "start", "call_control_id")), "missing field 'start.call_control_id'"),
    (json.dumps(start_obj(call_control_id=5)), "field 'start.call_control_id' must be a string"),
    (json.dumps(without(start_obj(), "start", "media_format")), "missing field 'start.media_format'"),
    (json.dumps(without(start_obj(), "start", "media_format", "encoding")),
     "missing field 'start.media_format.encoding'"),
    (json.dumps(without(start_obj(), "start", "media_format", "sample_rate")),
     "missing field 'start.media_format.sample_rate'"),
    (json.dumps(start_obj(media_format={"encoding": "G722", "sample_rate": 8000})),
     "'start.media_format.encoding' must be one of PCMU, PCMA, L16, got 'G722'"),
    (json.dumps(start_obj(media_format={"encoding": "OPUS", "sample_rate": 48000})),
     "'start.media_format.encoding' must be one of"),
    (json.dumps(start_obj(media_format={"encoding": "audio/x-mulaw", "sample_rate": 8000})),
     "'start.media_format.encoding'"),
    (json.dumps(start_obj(media_format={"encoding": "L16", "sample_rate": 24000})),
     "'start.media_format.sample_rate' must be 8000 or 16000, got 24000"),
    (json.dumps(start_obj(media_format={"encoding": "L16", "sample_rate": "16000"})),
     "'start.media_format.sample_rate' must be an integer"),
    (json.dumps(start_obj(media_format={"encoding": "PCMU", "sample_rate": 8000, "channels": 2})),
     "'start.media_format.channels' must be 1, got 2"),
    (json.dumps(start_obj(custom_parameters=["a"])), "'start.custom_parameters' must be an object"),
    (json.dumps(start_obj(tags=["ok", 3])), "'start.tags[1]' must be a string"),
    (json.dumps(start_obj(tags=["t"] * 65)), "'start.tags' holds 65 tags, more than 64"),
    (json.dumps(start_obj(tags=["t" * 257])), "'start.tags[0]' holds 257 characters"),
    (json.dumps(start_obj(custom_parameters={"n": "X"})).replace('"X"', "NaN"), "not JSON: NaN"),
    (json.dumps(start_obj(custom_parameters={"n": "X"})).replace('"X"', "1" * 5000), "number of 5000 characters"),
    (json.dumps(start_obj(custom_parameters={"o": {"greeting": "\ud800"}})),
     "'start.custom_parameters.o.greeting' holds a lone surrogate"),
    (json.dumps(start_obj(user_id=None)), "'start.user_id' must be a string, got null"),
    (json.dumps({**start_obj(), "sequence_number": "one"}), "'sequence_number' must be a decimal string"),
])
def test_bad_opening_frames(raw: str | bytes, reason: str) -> None:
    b = TelnyxMediaBridge()
    ev = only(b.feed(raw))
    assert isinstance(ev, InvalidFrame)
    assert reason in ev.reason
    assert b.invalid_frames == 1
    assert b.state is StreamState.AWAITING_CONNECTED


@pytest.mark.parametrize(("frame", "reason"), [
    (without(media_obj(1), "media"), "missing field 'media'"),
    (without(media_obj(1), "media", "chunk"), "missing field 'media.chunk'"),
    (without(media_obj(1), "media", "timestamp"), "missing field 'media.timestamp'"),
    (without(media_obj(1), "media", "payload"), "missing field 'media.payload'"),
    (bad_media(chunk="x1"), "'media.chunk' must be a decimal string"),
    (bad_media(chunk=-1), "'media.chunk' must not be negative"),
    (bad_media(chunk=True), "'media.chunk' must be a string or an integer, got boolean"),
    (bad_media(timestamp=1.5), "'media.timestamp' must be a string or an integer"),
    (bad_media(payload="***"), "'media.payload' is not valid base64"),
    (bad_media(track=1), "'media.track' must be a string"),
    ({**media_obj(1), "stream_id": "other"}, "'stream_id' is 'other'"),
    ({"event": "dtmf", "stream_id": SID, "dtmf": {"digit": "x"}}, "'dtmf.digit' must be one of"),
    ({"event": "dtmf", "stream_id": SID, "dtmf": {}}, "missing field 'dtmf.digit'"),
    ({"event": "dtmf", "stream_id": SID}, "missing field 'dtmf'"),
    ({"event": "mark", "stream_id": SID, "mark": {"name": 3}}, "'mark.name' must be a string"),
    ({"event": "stop", "stream_id": SID, "stop": "now"}, "'stop' must be an object"),
    ({"event": "error", "payload": "boom"}, "'payload' must be an object"),
    ({"event": "error", "payload": {"code": "E1"}}, "'payload.code' must be a number"),
    # int() refuses 4,300 digits with a plain ValueError, which used to escape the codec.
    ({"event": "error", "payload": {"code": "1" * 5000}}, "'payload.code' has 5000 digits"),
    (bad_media(track="inbound_track"), "'media.track' must be 'inbound' or 'outbound'"),
    (bad_media(chunk="7" * 5000), "'media.chunk' has 5000 digits"),
    ({"event": "mark", "stream_id": SID, "mark": {"name": "\udbff"}}, "'mark.name' holds a lone surrogate"),
    ({"event": "error", "payload": {"title": 1}}, "'payload.title' must be a string"),
    ({"event": "connected", "version": "1.0.0"}, "'connected' sent twice"),
    (start_obj(), "'start' sent twice"),
])
def test_bad_frames_while_streaming(frame: dict[str, Any], reason: str) -> None:
    b = streaming()
    ev = only(b.feed(json.dumps(frame)))
    assert isinstance(ev, InvalidFrame)
    assert reason in ev.reason
    assert b.state is StreamState.STREAMING
    assert isinstance(only(b.feed(json.dumps(media_obj(1)))), Media)  # nothing was consumed


def test_events_before_start_are_invalid() -> None:
    b = TelnyxMediaBridge()
    for frame in (media_obj(1), {"event": "dtmf", "dtmf": {"digit": "1"}}, {"event": "stop"}):
        ev = only(b.feed(json.dumps(frame)))
        assert isinstance(ev, InvalidFrame) and "before 'start'" in ev.reason


def test_l16_payload_must_hold_whole_samples() -> None:
    b = streaming("L16", 16000)
    ev = only(b.feed(json.dumps(media_obj(1, payload=b"\x00" * 641))))
    assert isinstance(ev, InvalidFrame) and "'media.payload' holds 641 bytes" in ev.reason


def test_invalid_frame_raw_is_truncated() -> None:
    ev = only(TelnyxMediaBridge().feed("x" * 1000))
    assert isinstance(ev, InvalidFrame) and len(ev.raw) == 200


# --- audio formats ----------------------------------------------------------------------------


def test_pcma_is_delivered_as_mulaw_and_replies_are_pcma() -> None:
    b = streaming("PCMA", 8000)
    samples = np.arange(-8000, 8000, 100, dtype=np.int16)
    ev = only(b.feed(json.dumps(media_obj(1, payload=alaw_encode(samples)))))
    assert ev.payload == EdgeTranscoder("PCMA", 8000).to_ulaw(alaw_encode(samples))
    out = json.loads(b.media(ulaw_encode(samples)))
    assert base64.b64decode(out["media"]["payload"]) == EdgeTranscoder("PCMA", 8000).from_ulaw(ulaw_encode(samples))


def test_l16_16k_is_decimated_in_order_and_replies_are_l16_16k() -> None:
    b = streaming("L16", 16000)
    x = np.rint(6000 * np.sin(2 * np.pi * 500 * np.arange(1280) / 16000)).astype(np.int16)
    frames = [l16_encode(x[i : i + 320]) for i in range(0, 1280, 320)]
    got = [b.feed(json.dumps(media_obj(c, payload=frames[c - 1]))) for c in (2, 1, 4, 3)]
    assert [len(g) for g in got] == [0, 2, 0, 2]
    delivered = b"".join(ev.payload for g in got for ev in g)
    assert len(delivered) == 640  # 80 ms at 8 kHz
    assert delivered == EdgeTranscoder("L16", 16000).to_ulaw(l16_encode(x))  # as if it had come in order
    assert len(base64.b64decode(json.loads(b.media(b"\xff" * 160))["media"]["payload"])) == 640


# --- reordering -------------------------------------------------------------------------------


def chunks_of(events: list[Any]) -> list[int]:
    return [e.number for e in events if isinstance(e, Media)]


@pytest.mark.parametrize(("arrivals", "released", "late", "skipped"), [
    ([1, 2, 3, 4], [[1], [2], [3], [4]], 0, 0),
    ([2, 1, 3], [[], [1, 2], [3]], 0, 0),
    ([1, 3, 2, 4], [[1], [], [2, 3], [4]], 0, 0),
    ([1, 4, 3, 2], [[1], [], [], [2, 3, 4]], 0, 0),
    ([1, 1, 2, 1], [[1], [], [2], []], 2, 0),  # duplicates, one before and one after its place passed
    ([1, 3, 4, 5, 6], [[1], [], [], [], [3, 4, 5, 6]], 0, 1),  # chunk 2 never comes: given up after 3 held
    ([1, 3, 4, 5, 6, 2], [[1], [], [], [], [3, 4, 5, 6], []], 1, 1),  # ... and dropped when it comes late
    ([3, 4, 5, 6], [[], [], [], [3, 4, 5, 6]], 0, 2),  # a stream that starts late
    ([0, 1, 2], [[0], [1], [2]], 0, 0),  # a stream that counts from 0
])
def test_reordering(arrivals: list[int], released: list[list[int]], late: int, skipped: int) -> None:
    b = streaming()
    assert [chunks_of(b.feed(json.dumps(media_obj(c)))) for c in arrivals] == released
    assert (b.late_dropped, b.skipped) == (late, skipped)


def test_hold_back_is_bounded() -> None:
    b = streaming()
    b.feed(json.dumps(media_obj(1)))
    for c in range(3, 3 + MAX_HOLD_FRAMES):
        assert b.feed(json.dumps(media_obj(c))) == []
    assert chunks_of(b.feed(json.dumps(media_obj(3 + MAX_HOLD_FRAMES)))) == list(range(3, 4 + MAX_HOLD_FRAMES))


def test_control_frames_are_not_held_and_stop_releases_held_media() -> None:
    b = streaming()
    b.feed(json.dumps(media_obj(1)))
    assert b.feed(json.dumps(media_obj(3))) == []
    assert b.feed(json.dumps({"event": "mark", "stream_id": SID, "mark": {"name": "m"}})) == [Mark("m")]
    events = b.feed(json.dumps({"event": "stop", "stream_id": SID, "stop": {}}))
    assert chunks_of(events) == [3] and events[-1] == Stop(account_sid="", call_sid="")
    assert b.skipped == 1


def test_flush_releases_held_media() -> None:
    b = streaming()
    b.feed(json.dumps(media_obj(2)))
    assert chunks_of(b.flush()) == [2]
    assert b.flush() == []


def test_only_telnyx_track_names_get_a_track_state() -> None:
    # Each track name used to get its own reorder buffer and transcoder: 20,000 names held 93 MB.
    b = streaming()
    for i in range(20_000):
        ev = only(b.feed(json.dumps(media_obj(1, track=f"t{i}"))))
        assert isinstance(ev, InvalidFrame) and "'media.track'" in ev.reason
    assert chunks_of(b.feed(json.dumps(media_obj(1)))) == [1]
    assert chunks_of(b.feed(json.dumps(media_obj(1, track="outbound")))) == [1]
    assert len(b._tracks) <= 2
    assert b.invalid_frames == 20_000


def test_custom_parameters_are_bounded_and_any_json_value_is_kept() -> None:
    params: dict[str, Any] = {"n": 3, "big": list(range(2000)), "s": "z" * MAX_PARAMETER_VALUE_CHARS,
                              "long": "z" * (MAX_PARAMETER_VALUE_CHARS + 1)}
    params.update({f"p{i}": i for i in range(100)})
    b = TelnyxMediaBridge()
    [ev] = b.feed(json.dumps(start_obj(custom_parameters=params)))
    assert isinstance(ev, TelnyxStart)
    assert b.state is StreamState.STREAMING
    assert ev.custom_parameters["n"] == 3 and ev.custom_parameters["s"] == params["s"]
    assert "big" not in ev.custom_parameters and "long" not in ev.custom_parameters
    assert len(ev.custom_parameters) == MAX_CUSTOM_PARAMETERS - 2
    assert ev.dropped_parameters == (
        f"field 'start.custom_parameters.big' holds {len(json.dumps(params['big']).replace(' ', ''))} characters, "
        "more than 4096: dropped",
        "field 'start.custom_parameters.long' holds 4097 characters, more than 4096: dropped",
        "field 'start.custom_parameters': 40 parameters past the first 64 dropped",
    )
    setup = relay.Setup.of("s1", ev.call_details())
    assert setup.custom_parameters == ev.custom_parameters


def test_tracks_are_reordered_separately() -> None:
    b = streaming()
    assert chunks_of(b.feed(json.dumps(media_obj(1, track="outbound")))) == [1]
    assert chunks_of(b.feed(json.dumps(media_obj(1)))) == [1]
    assert b.late_dropped == 0


@settings(derandomize=True, max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), displacement=st.integers(0, MAX_HOLD_FRAMES - 1),
       cuts=st.lists(st.integers(0, 60), max_size=6))
def test_l16_16k_reordered_streaming_equals_batch(seed: int, n: int, displacement: int, cuts: list[int]) -> None:
    # Frames of random audio, of random sizes, shuffled by at most the hold-back: the mu-law delivered
    # is exactly what converting the whole stream in one go gives.
    rng = random.Random(seed)
    audio = np.frombuffer(rng.randbytes(2 * 320 * n), dtype=np.int16)
    bounds = [0, *sorted(min(c, n) * 320 for c in cuts), len(audio)]
    frames = [l16_encode(audio[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    order = sorted(range(len(frames)), key=lambda i: i + rng.uniform(0, displacement + 0.99))
    b = streaming("L16", 16000)
    out = [ev for i in order for ev in b.feed(json.dumps(media_obj(i + 1, payload=frames[i])))]
    assert chunks_of(out) == list(range(1, len(frames) + 1))
    assert b"".join(ev.payload for ev in out) == EdgeTranscoder("L16", 16000).to_ulaw(l16_encode(audio))


# --- outbound ---------------------------------------------------------------------------------


def test_outbound_frames() -> None:
    b = streaming()
    assert json.loads(b.media(b"\x01\x02")) == {"event": "media", "media": {"payload": "AQI="}}
    assert json.loads(b.mark("m1")) == {"event": "mark", "mark": {"name": "m1"}}
    assert json.loads(b.clear()) == {"event": "clear"}


def test_outbound_before_start_is_a_local_error() -> None:
    with pytest.raises(RuntimeError):
        TelnyxMediaBridge().media(b"\xff")
    with pytest.raises(RuntimeError):
        TelnyxMediaBridge().clear()


# --- setup ------------------------------------------------------------------------------------


def test_setup_from_start() -> None:
    start = only(TelnyxMediaBridge().feed(json.dumps(start_obj(
        call_leg_id="428c31b6", custom_parameters={"customer_id": "c1", "direction": "outbound-api", "n": 2}))))
    setup = relay.Setup.of("7a7e6a4f-1d44-4f0c-b5d4-9f9bf3a5c1f2", start.call_details())
    obj = json.loads(relay.serialize_relay_message(setup))
    assert obj == {
        "type": "setup", "sessionId": "7a7e6a4f-1d44-4f0c-b5d4-9f9bf3a5c1f2", "accountSid": USER,
        "parentCallSid": "", "callSid": CCID, "callControlId": CCID, "callSessionId": SESSION,
        "callLegId": "428c31b6", "from": "+13122010094", "to": "+13122123456", "forwardedFrom": "",
        "callerName": "", "direction": "outbound-api", "callType": "PSTN", "callStatus": "active",
        "customParameters": {"customer_id": "c1", "direction": "outbound-api", "n": 2},
    }


def test_setup_without_leg_or_user_leaves_them_out_or_empty() -> None:
    start = only(TelnyxMediaBridge().feed(json.dumps(without(start_obj(), "start", "user_id"))))
    obj = json.loads(relay.serialize_relay_message(relay.Setup.of("s", start.call_details())))
    assert "callLegId" not in obj and obj["accountSid"] == ""


# --- the provider role ------------------------------------------------------------------------


def test_provider_frames_parse_on_the_bridge() -> None:
    p = TelnyxMediaProvider(stream_id=SID, call_control_id=CCID, call_session_id=SESSION, user_id=USER,
                            encoding="L16", sample_rate=16000, from_="+1", to="+2", call_leg_id="leg")
    b = TelnyxMediaBridge()
    assert only(b.feed(p.connected())) == Connected("", "1.0.0")
    start = only(b.feed(p.start({"k": 1})))
    assert isinstance(start, TelnyxStart)
    assert (start.call_leg_id, start.custom_parameters, start.media_format.sample_rate) == ("leg", {"k": 1}, 16000)
    assert chunks_of(b.feed(p.media(b"\x00" * 640, timestamp_ms=20))) == [1]
    assert b.feed(p.dtmf("5")) == [Dtmf("5")]
    assert b.feed(p.mark("m")) == [Mark("m")]
    assert b.feed(p.error(100002, "Unknown error", "d")) == [ProviderError(100002, "Unknown error", "d")]
    assert b.feed(p.stop()) == [Stop(account_sid=USER, call_sid=CCID)]
    assert json.loads(p.media(b"", 0))["sequence_number"] == "6"  # error frames are not counted


@pytest.mark.parametrize(("frame", "expected"), [
    ('{"event":"clear"}', Clear()),
    ('{"event":"mark","mark":{"name":"a"}}', Mark("a")),
    (json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\x00" * 640).decode()}}),
     Media("outbound", 0, 0, b"\x00" * 640)),
])
def test_provider_accepts(frame: str, expected: Any) -> None:
    p = TelnyxMediaProvider(SID, CCID, SESSION, USER, encoding="L16", sample_rate=16000)
    assert p.receive(frame) == expected


@pytest.mark.parametrize(("frame", "reason"), [
    ('{"event":"clear","streamSid":"MZ1"}', "'streamSid' is Twilio's"),
    ('{"event":"clear","stream_id":"other"}', "'stream_id' is 'other'"),
    ('{"event":"stop"}', "unknown event 'stop'"),
    (json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\x00" * 160).decode()}}),
     "holds 160 bytes; L16 at 16000 Hz needs whole milliseconds, 20 ms to 30 s"),
    (json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\x00" * 641).decode()}}),
     "holds 641 bytes"),
    ('{"event":"media","media":{"payload":"%%"}}', "not valid base64"),
])
def test_provider_refuses(frame: str, reason: str) -> None:
    p = TelnyxMediaProvider(SID, CCID, SESSION, USER, encoding="L16", sample_rate=16000)
    ev = p.receive(frame)
    assert isinstance(ev, InvalidFrame) and reason in ev.reason
