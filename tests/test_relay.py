"""ConversationRelay codec: app frames validated, relay frames serialised with protocols.md's names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_bridge.protocols.fields import FrameError
from relay_bridge.protocols.relay import (
    CLOSE_MALFORMED,
    CLOSE_NORMAL,
    MAX_DIGITS_CHARS,
    MAX_HANDOFF_CHARS,
    MAX_LANGUAGE_CHARS,
    MAX_SOURCE_CHARS,
    MAX_TOKEN_CHARS,
    DtmfDigit,
    End,
    Error,
    Info,
    Interrupt,
    InvalidAppFrame,
    Language,
    Play,
    Prompt,
    RelayBridge,
    SendDigits,
    Setup,
    Text,
    end,
    parse_relay_message,
    serialize_relay_message,
    text,
)


def dumps(obj: Any) -> str:
    return json.dumps(obj)


VALID: list[tuple[str, str, Any]] = [
    ("text", '{"type":"text","token":"Hello"}', Text(token="Hello")),
    ("text-empty-last", '{"type":"text","token":"","last":true}', Text(token="", last=True)),
    ("text-spaces-kept", '{"type":"text","token":"  a b ","last":false}', Text(token="  a b ")),
    ("text-all-fields",
     dumps({"type": "text", "token": "Hola", "last": True, "lang": "es-ES", "interruptible": False,
            "preemptible": True}),
     Text(token="Hola", last=True, lang="es-ES", interruptible=False, preemptible=True)),
    ("text-extra-field", dumps({"type": "text", "token": "x", "future": {"a": 1}}), Text(token="x")),
    ("play", dumps({"type": "play", "source": "https://cdn.example/a.mp3"}),
     Play(source="https://cdn.example/a.mp3")),
    ("play-http-loop", dumps({"type": "play", "source": "http://cdn.example/a.wav", "loop": 3,
                              "interruptible": True, "preemptible": False}),
     Play(source="http://cdn.example/a.wav", loop=3, interruptible=True, preemptible=False)),
    ("play-loop-0", dumps({"type": "play", "source": "https://x.io/a.mp3", "loop": 0}),
     Play(source="https://x.io/a.mp3", loop=1000)),
    ("play-loop-1000", dumps({"type": "play", "source": "https://x.io/a.mp3", "loop": 1000}),
     Play(source="https://x.io/a.mp3", loop=1000)),
    ("sendDigits", dumps({"type": "sendDigits", "digits": "12w34#*"}), SendDigits(digits="12w34#*")),
    ("sendDigits-one", dumps({"type": "sendDigits", "digits": "9"}), SendDigits(digits="9")),
    ("language-both", dumps({"type": "language", "ttsLanguage": "fr-FR", "transcriptionLanguage": "en-US"}),
     Language(tts_language="fr-FR", transcription_language="en-US")),
    ("language-tts", dumps({"type": "language", "ttsLanguage": "fr-FR"}),
     Language(tts_language="fr-FR", transcription_language=None)),
    ("language-stt", dumps({"type": "language", "transcriptionLanguage": "de-DE"}),
     Language(tts_language=None, transcription_language="de-DE")),
    ("end", '{"type":"end"}', End(handoff_data=None)),
    ("end-handoff", dumps({"type": "end", "handoffData": '{"reason":"done"}'}),
     End(handoff_data='{"reason":"done"}')),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_app_messages(raw: str, expected: Any) -> None:
    b = RelayBridge()
    assert b.receive(raw) == expected
    assert b.consecutive_invalid == 0
    assert b.invalid_total == 0


INVALID: list[tuple[str, str | bytes, str]] = [
    ("text-last-null", dumps({"type": "text", "token": "x", "last": None}), "field 'last' must be a boolean, got null"),
    ("text-lang-null", dumps({"type": "text", "token": "x", "lang": None}), "field 'lang' must be a string, got null"),
    # (id, raw frame, text the reason must contain)
    ("non-json", "hello", "not JSON"),
    ("empty", "", "not JSON"),
    ("binary", b'{"type":"text","token":"x"}', "binary"),
    ("array", '[{"type":"text"}]', "JSON object"),
    ("number", "42", "JSON object"),
    ("missing-type", '{"token":"x"}', "'type'"),
    ("type-not-string", '{"type":1,"token":"x"}', "'type'"),
    ("unknown-type", '{"type":"speak","token":"x"}', "speak"),
    ("interrupt-type", '{"type":"interrupt"}', "interrupt"),
    ("token-null", '{"type":"text","token":null}', "'token'"),
    ("token-missing", '{"type":"text","last":true}', "'token'"),
    ("token-number", '{"type":"text","token":5}', "'token'"),
    ("last-string", '{"type":"text","token":"x","last":"true"}', "'last'"),
    ("last-number", '{"type":"text","token":"x","last":1}', "'last'"),
    ("interruptible-string", '{"type":"text","token":"x","interruptible":"any"}', "'interruptible'"),
    ("preemptible-number", '{"type":"text","token":"x","preemptible":0}', "'preemptible'"),
    ("lang-number", '{"type":"text","token":"x","lang":1}', "'lang'"),
    ("play-ftp", '{"type":"play","source":"ftp://x.io/a.mp3"}', "'source'"),
    ("play-relative", '{"type":"play","source":"/a.mp3"}', "'source'"),
    ("play-no-host", '{"type":"play","source":"https:///a.mp3"}', "'source'"),
    ("play-missing-source", '{"type":"play"}', "'source'"),
    ("play-loop-negative", '{"type":"play","source":"https://x.io/a","loop":-1}', "'loop'"),
    ("play-loop-too-big", '{"type":"play","source":"https://x.io/a","loop":1001}', "'loop'"),
    ("play-loop-string", '{"type":"play","source":"https://x.io/a","loop":"2"}', "'loop'"),
    ("play-loop-bool", '{"type":"play","source":"https://x.io/a","loop":true}', "'loop'"),
    ("play-loop-float", '{"type":"play","source":"https://x.io/a","loop":1.5}', "'loop'"),
    ("digits-empty", '{"type":"sendDigits","digits":""}', "'digits'"),
    ("digits-letters", '{"type":"sendDigits","digits":"12a"}', "'digits'"),
    ("digits-upper-w", '{"type":"sendDigits","digits":"1W2"}', "'digits'"),
    ("digits-space", '{"type":"sendDigits","digits":"1 2"}', "'digits'"),
    ("digits-newline", '{"type":"sendDigits","digits":"12\\n"}', "'digits'"),
    ("digits-missing", '{"type":"sendDigits"}', "'digits'"),
    ("digits-number", '{"type":"sendDigits","digits":12}', "'digits'"),
    ("language-neither", '{"type":"language"}', "ttsLanguage"),
    ("language-empty", '{"type":"language","ttsLanguage":"","transcriptionLanguage":""}', "ttsLanguage"),
    ("language-number", '{"type":"language","ttsLanguage":5}', "'ttsLanguage'"),
    ("end-handoff-object", '{"type":"end","handoffData":{"a":1}}', "'handoffData'"),
    # Size limits on app input: each names the field and its limit.
    ("token-too-long", dumps({"type": "text", "token": "a" * (MAX_TOKEN_CHARS + 1)}),
     f"field 'token' holds {MAX_TOKEN_CHARS + 1} characters, more than the limit of {MAX_TOKEN_CHARS}"),
    ("lang-too-long", dumps({"type": "text", "token": "x", "lang": "e" * 65}), "field 'lang' holds 65 characters"),
    ("source-too-long", dumps({"type": "play", "source": "https://x.io/" + "a" * MAX_SOURCE_CHARS}),
     f"more than the limit of {MAX_SOURCE_CHARS}"),
    ("digits-too-long", dumps({"type": "sendDigits", "digits": "1" * (MAX_DIGITS_CHARS + 1)}),
     f"field 'digits' holds {MAX_DIGITS_CHARS + 1} characters"),
    ("tts-language-too-long", dumps({"type": "language", "ttsLanguage": "x" * (MAX_LANGUAGE_CHARS + 1)}),
     "field 'ttsLanguage' holds 65 characters"),
    ("stt-language-too-long", dumps({"type": "language", "transcriptionLanguage": "x" * 1000}),
     "field 'transcriptionLanguage' holds 1000 characters"),
    ("handoff-too-long", dumps({"type": "end", "handoffData": "h" * (MAX_HANDOFF_CHARS + 1)}),
     f"more than the limit of {MAX_HANDOFF_CHARS}"),
    # urlsplit raises ValueError on these; it used to escape the codec and end the call.
    ("play-unclosed-ipv6", '{"type":"play","source":"http://[::1/a.mp3"}', "'source' is not a valid URL"),
    ("play-unopened-ipv6", '{"type":"play","source":"http://x]/a.mp3"}', "'source' is not a valid URL"),
    ("play-nfkc-host", '{"type":"play","source":"https://a\uff0fb/a.mp3"}', "'source' is not a valid URL"),
    # What json.loads takes but cannot be carried on (see relay_bridge/protocols/fields.py).
    ("token-lone-surrogate", '{"type":"text","token":"hi \\ud83d"}', "'token' holds a lone surrogate"),
    ("play-lone-surrogate", '{"type":"play","source":"https://x.io/\\udead"}', "'source' holds a lone surrogate"),
    ("loop-huge-integer", '{"type":"play","source":"https://x.io/a","loop":' + "1" * 5000 + "}",
     "number of 5000 characters"),
    ("loop-nan", '{"type":"play","source":"https://x.io/a","loop":NaN}', "not JSON: NaN"),
    ("nested-too-deep", '{"type":"text","token":"x","extra":' + "[" * 40 + "]" * 40 + "}", "nests deeper than 32"),
]


@pytest.mark.parametrize(("raw", "needle"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_app_messages(raw: str | bytes, needle: str) -> None:
    b = RelayBridge()
    result = b.receive(raw)
    assert isinstance(result, InvalidAppFrame)
    assert needle in result.reason, result.reason
    assert result.close is None
    assert b.consecutive_invalid == 1
    assert b.invalid_total == 1
    shown = raw.decode() if isinstance(raw, bytes) else raw
    assert json.loads(result.reply) == {"type": "error",
                                        "description": f"Invalid message received, code: 64107, {shown}"}


def test_error_reply_exact_format() -> None:
    result = RelayBridge().receive("not json")
    assert isinstance(result, InvalidAppFrame)
    assert result.reply == '{"type":"error","description":"Invalid message received, code: 64107, not json"}'


def test_error_reply_for_token_null_quotes_raw_frame() -> None:
    raw = '{"type":"text","token":null}'
    result = RelayBridge().receive(raw)
    assert isinstance(result, InvalidAppFrame)
    assert result.reply == ('{"type":"error","description":"Invalid message received, code: 64107, '
                            '{\\"type\\":\\"text\\",\\"token\\":null}"}')


def test_error_reply_keeps_non_ascii() -> None:
    result = RelayBridge().receive('{"type":"nope","token":"héllo"}')
    assert isinstance(result, InvalidAppFrame)
    assert "héllo" in result.reply


def test_ten_consecutive_invalid_frames_close() -> None:
    b = RelayBridge()
    closes = [b.receive(f"bad {i}") for i in range(10)]
    assert all(isinstance(c, InvalidAppFrame) for c in closes)
    assert [c.close for c in closes if isinstance(c, InvalidAppFrame)] == [None] * 9 + [CLOSE_MALFORMED]
    assert CLOSE_MALFORMED == (1007, "Too many consecutive malformed messages.")
    assert CLOSE_NORMAL == (1000, "Closing websocket session")


def test_valid_frame_resets_consecutive_count() -> None:
    b = RelayBridge()
    for _ in range(9):
        r = b.receive("bad")
        assert isinstance(r, InvalidAppFrame)
        assert r.close is None
    assert b.receive(text("ok")) == Text(token="ok")
    assert b.consecutive_invalid == 0
    for _ in range(9):
        r = b.receive("bad")
        assert isinstance(r, InvalidAppFrame)
        assert r.close is None
    r = b.receive("bad")
    assert isinstance(r, InvalidAppFrame)
    assert r.close == CLOSE_MALFORMED
    assert b.invalid_total == 19


def test_mixed_kinds_of_invalid_frames_all_count() -> None:
    b = RelayBridge()
    frames: list[str | bytes] = [
        "x", b"\x00", "[]", '{"type":"text","token":null}', '{"type":"sendDigits"}', '{"type":"language"}',
        '{"type":"play","source":"ftp://a/b"}', '{"type":"?"}', '{"type":"text"}',
        '{"type":"end","handoffData":1}',
    ]
    results = [b.receive(f) for f in frames]
    assert all(isinstance(r, InvalidAppFrame) for r in results)
    last = results[-1]
    assert isinstance(last, InvalidAppFrame)
    assert last.close == CLOSE_MALFORMED


def test_app_helpers_parse() -> None:
    b = RelayBridge()
    assert b.receive(text("Hi ", last=True, lang="en-GB", interruptible=True, preemptible=False)) == Text(
        token="Hi ", last=True, lang="en-GB", interruptible=True, preemptible=False)
    assert b.receive(text("")) == Text(token="")
    assert b.receive(end()) == End(handoff_data=None)
    assert b.receive(end("data")) == End(handoff_data="data")


# --- bridge -> app ----------------------------------------------------------------------------

SETUP = Setup(session_id="VX1", call_sid="CA1", account_sid="AC1", from_="+15550001111", to="+15550002222",
              direction="inbound", caller_name="Ann", forwarded_from="+15550003333", parent_call_sid="CA0",
              call_type="PSTN", call_status="RINGING", custom_parameters={"k": "v", "n": "Zoë"})


def test_setup_field_names() -> None:
    obj = json.loads(serialize_relay_message(SETUP))
    assert obj == {
        "type": "setup", "sessionId": "VX1", "accountSid": "AC1", "parentCallSid": "CA0", "callSid": "CA1",
        "from": "+15550001111", "to": "+15550002222", "forwardedFrom": "+15550003333", "callerName": "Ann",
        "direction": "inbound", "callType": "PSTN", "callStatus": "RINGING",
        "customParameters": {"k": "v", "n": "Zoë"},
    }


def test_setup_defaults_serialise_every_field() -> None:
    obj = json.loads(serialize_relay_message(Setup(session_id="VX2", call_sid="CA2", account_sid="AC2")))
    assert obj == {
        "type": "setup", "sessionId": "VX2", "accountSid": "AC2", "parentCallSid": "", "callSid": "CA2",
        "from": "", "to": "", "forwardedFrom": "", "callerName": "", "direction": "inbound",
        "callType": "PSTN", "callStatus": "RINGING", "customParameters": {},
    }


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (Prompt(voice_prompt="Hello world.", lang="en-US", last=True),
         {"type": "prompt", "voicePrompt": "Hello world.", "lang": "en-US", "last": True}),
        (DtmfDigit(digit="#"), {"type": "dtmf", "digit": "#"}),
        (Interrupt(utterance_until_interrupt="I heard", duration_until_interrupt_ms=1200.0),
         {"type": "interrupt", "utteranceUntilInterrupt": "I heard", "durationUntilInterruptMs": 1200}),
        (Interrupt(utterance_until_interrupt="", duration_until_interrupt_ms=412.5),
         {"type": "interrupt", "utteranceUntilInterrupt": "", "durationUntilInterruptMs": 412.5}),
        (Info(name="agentSpeaking", value="on"), {"type": "info", "name": "agentSpeaking", "value": "on"}),
        (Error(description="boom"), {"type": "error", "description": "boom"}),
    ],
)
def test_relay_message_field_names(msg: Any, expected: dict[str, Any]) -> None:
    raw = serialize_relay_message(msg)
    assert json.loads(raw) == expected
    assert raw == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


def test_interrupt_integer_duration_is_an_integer_on_the_wire() -> None:
    raw = serialize_relay_message(Interrupt("x", 1200.0))
    assert '"durationUntilInterruptMs":1200}' in raw
    raw = serialize_relay_message(Interrupt("x", 0.0))
    assert '"durationUntilInterruptMs":0}' in raw


@pytest.mark.parametrize(
    "msg",
    [
        SETUP,
        Setup(session_id="VX2", call_sid="CA2", account_sid="AC2"),
        Prompt(voice_prompt="Hi", lang="en-US", last=False),
        Prompt(voice_prompt="", lang="fr", last=True),
        DtmfDigit(digit="5"),
        Interrupt(utterance_until_interrupt="Hello", duration_until_interrupt_ms=1200.0),
        Interrupt(utterance_until_interrupt="He", duration_until_interrupt_ms=87.5),
        Info(name="tokensPlayed", value="Hello."),
        Error(description="Invalid message received, code: 64107, x"),
    ],
)
def test_relay_messages_parse_back(msg: Any) -> None:
    assert parse_relay_message(serialize_relay_message(msg)) == msg


@pytest.mark.parametrize(
    "raw",
    ["nope", b"{}", '{"type":"bogus"}', '{"type":"prompt","voicePrompt":"x","lang":"en"}',
     '{"type":"interrupt","utteranceUntilInterrupt":"x","durationUntilInterruptMs":"5"}',
     '{"type":"setup","sessionId":"VX"}'],
)
def test_parse_relay_message_rejects(raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        parse_relay_message(raw)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    strings=st.lists(st.text(max_size=20), min_size=11, max_size=11),
    params=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
)
def test_setup_round_trip_property(strings: list[str], params: dict[str, str]) -> None:
    msg = Setup(session_id=strings[0], call_sid=strings[1], account_sid=strings[2], from_=strings[3], to=strings[4],
                direction=strings[5], caller_name=strings[6],
                forwarded_from=strings[7], parent_call_sid=strings[8], call_type=strings[9],
                call_status=strings[10], custom_parameters=params)
    assert parse_relay_message(serialize_relay_message(msg)) == msg


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    utterance=st.text(max_size=30),
    ms=st.floats(0, 1e7, allow_nan=False) | st.integers(0, 10**7).map(float),
)
def test_interrupt_round_trip_property(utterance: str, ms: float) -> None:
    msg = Interrupt(utterance, ms)
    assert parse_relay_message(serialize_relay_message(msg)) == msg


# --- never raises -----------------------------------------------------------------------------


@settings(derandomize=True, max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(), st.binary()))
def test_receive_never_raises_on_arbitrary_input(raw: str | bytes) -> None:
    b = RelayBridge()
    result = b.receive(raw)
    assert isinstance(result, InvalidAppFrame | Text | Play | SendDigits | Language | End)
    if isinstance(result, InvalidAppFrame):
        assert json.loads(result.reply)["type"] == "error"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["text", "play", "sendDigits", "language", "end", "setup", "x"]),
    fields=st.dictionaries(
        st.sampled_from(["token", "last", "lang", "interruptible", "preemptible", "source", "loop", "digits",
                         "ttsLanguage", "transcriptionLanguage", "handoffData"]),
        json_values | st.sampled_from(["https://x.io/a", "ftp://x", "12w#", "en-US", ""]),
        max_size=5),
)
def test_receive_never_raises_on_structured_junk(kind: str, fields: dict[str, Any]) -> None:
    raw = dumps({"type": kind, **fields})
    result = RelayBridge().receive(raw)
    if isinstance(result, InvalidAppFrame):
        prefix = '{"type":"error","description":"Invalid message received, code: 64107, '
        assert result.reply.startswith(prefix)


def test_limits_are_inclusive() -> None:
    b = RelayBridge()
    assert b.receive(dumps({"type": "text", "token": "a" * MAX_TOKEN_CHARS})) == Text(token="a" * MAX_TOKEN_CHARS)
    digits = "1" * MAX_DIGITS_CHARS
    assert b.receive(dumps({"type": "sendDigits", "digits": digits})) == SendDigits(digits)
    assert b.receive(end("h" * MAX_HANDOFF_CHARS)) == End("h" * MAX_HANDOFF_CHARS)
    source = "https://x.io/" + "a" * (MAX_SOURCE_CHARS - len("https://x.io/"))
    assert b.receive(dumps({"type": "play", "source": source})) == Play(source=source)
    lang = "x" * MAX_LANGUAGE_CHARS
    assert b.receive(dumps({"type": "language", "ttsLanguage": lang})) == Language(lang, None)


def test_error_reply_is_utf8_whatever_the_input() -> None:
    # A str from a WebSocket is valid UTF-8; one passed in with a lone surrogate must not make the
    # reply unsendable.
    result = RelayBridge().receive('{"type":"text","token":"\ud800"')
    assert isinstance(result, InvalidAppFrame)
    result.reply.encode("utf-8")
    assert "\ufffd" not in result.reply and "?" in result.reply


def test_surrogate_pairs_are_taken() -> None:
    assert RelayBridge().receive(r'{"type":"text","token":"\ud83d\ude00"}') == Text(token="\U0001f600")


def test_deeply_nested_json_is_invalid_not_an_exception() -> None:
    for raw in ("[" * 100_000, '{"a":' * 100_000):
        result = RelayBridge().receive(raw)
        assert isinstance(result, InvalidAppFrame)


# --- Telnyx setup fields ----------------------------------------------------------------------------


TELNYX_SETUP = Setup(session_id="7a7e6a4f-1d44-4f0c-b5d4-9f9bf3a5c1f2", call_sid="v2:T02", account_sid="1f1a8b6f",
                     from_="+13122010094", to="+13122123456", call_status="active",
                     custom_parameters={"customer_id": "customer_123", "n": 3, "flag": True},
                     call_control_id="v2:T02", call_session_id="ff55a038", call_leg_id="428c31b6")


def test_telnyx_setup_fields_are_emitted_when_present() -> None:
    obj = json.loads(serialize_relay_message(TELNYX_SETUP))
    assert (obj["callControlId"], obj["callSessionId"], obj["callLegId"]) == ("v2:T02", "ff55a038", "428c31b6")
    assert obj["callSid"] == obj["callControlId"] and obj["callStatus"] == "active"
    assert obj["customParameters"] == {"customer_id": "customer_123", "n": 3, "flag": True}
    assert list(obj)[:8] == ["type", "sessionId", "accountSid", "parentCallSid", "callSid", "callControlId",
                             "callSessionId", "callLegId"]


def test_telnyx_setup_round_trips() -> None:
    assert parse_relay_message(serialize_relay_message(TELNYX_SETUP)) == TELNYX_SETUP


def test_telnyx_setup_as_telnyx_documents_it_parses() -> None:
    # Telnyx's example has no parentCallSid, forwardedFrom or callType.
    raw = json.dumps({"type": "setup", "sessionId": "7a7e", "accountSid": "1f1a", "callSid": "v2:T",
                      "callControlId": "v2:T", "callSessionId": "ff55", "callLegId": "428c", "from": "+1",
                      "to": "+2", "direction": "inbound", "callerName": "", "callStatus": "active",
                      "customParameters": {"customer_id": "customer_123"}})
    msg = parse_relay_message(raw)
    assert isinstance(msg, Setup)
    assert (msg.call_control_id, msg.call_leg_id, msg.parent_call_sid, msg.call_type) == ("v2:T", "428c", "", "PSTN")


def test_twilio_setup_still_needs_its_fields() -> None:
    obj = json.loads(serialize_relay_message(SETUP))
    del obj["parentCallSid"]
    with pytest.raises(FrameError, match="parentCallSid"):
        parse_relay_message(json.dumps(obj))
