"""Fuzzing every codec entry point that takes peer input: it returns events, never raises.

Inputs: random text (lone surrogates included), random JSON values, and valid frames from the
simulation side of each codec, mutated (a field replaced by random JSON, deleted, given a huge
integer, NaN, a lone surrogate, a long string or deep nesting), alone and interleaved with the
frames of a proper call. Properties:

- nothing is raised (``parse_relay_message``, the simulated app's parser, raises only ``FrameError``);
- every string in every event encodes as UTF-8, so the runtime can log it or echo it to the other
  socket, and what a codec accepts can be echoed in a ``setup``;
- garbage changes nothing: while every garbage frame is refused, the valid frames between them give
  the same events as they do alone.

``make fuzz`` runs 1,000 random examples a test per round; the default is
small, fixed and derandomised so the suite stays quick and repeatable.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from relay_bridge.protocols import relay
from relay_bridge.protocols.fields import FrameError
from relay_bridge.protocols.media_streams import InvalidFrame, MediaStreamsBridge, MediaStreamsProvider
from relay_bridge.protocols.provider import ProviderSniffer
from relay_bridge.protocols.telnyx_media import TelnyxMediaBridge, TelnyxMediaProvider, TelnyxStart
from tests.harness import fuzz_settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
FUZZ = fuzz_settings(ci=50, fuzz=1_000, suppress_health_check=_QUIET)

SID, ACCOUNT, CALL = "MZ00000000000000000000000000000001", "AC1", "CA1"
STREAM_ID, CCID = "32de0dea-53cb", "v3:call-control-id"
# Placeholders, spelt out by expand() just before a frame is fed: json.dumps cannot write an integer
# past 4,300 digits, and Hypothesis should not have to print a 100 kB value it drew.
HUGE_INT, LONG_STRING = "\x00huge-int\x00", "\x00long-string\x00"
DEEP_ARRAYS, DEEP_OBJECTS = "\x00deep-arrays\x00", "\x00deep-objects\x00"
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "a\ud83d", "\ude00b"]
EXPANSIONS = {json.dumps(HUGE_INT): "1" * 5000, json.dumps(LONG_STRING): json.dumps("x" * 100_000),
              DEEP_ARRAYS: "[" * 100_000, DEEP_OBJECTS: '{"a":' * 5000}


def expand(raw: str | bytes) -> str | bytes:
    if isinstance(raw, bytes):
        return raw
    for placeholder, value in EXPANSIONS.items():
        raw = raw.replace(placeholder, value)
    return raw


# --- valid frames, from the simulation side of each codec -----------------------------------


def twilio_call() -> list[str]:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    return [p.connected(), p.start({"welcomeGreeting": "Hi", "lang": "en-US"}),
            *(p.media(bytes([i]) * 160, 20 * i) for i in range(1, 4)), p.dtmf("5"), p.mark("m1"), p.stop()]


def telnyx_call() -> list[str]:
    p = TelnyxMediaProvider(stream_id=STREAM_ID, call_control_id=CCID, call_session_id="cs", user_id="u")
    return [p.connected(), p.start({"customer": "c1", "n": 2}),
            *(p.media(bytes([i]) * 160, 20 * i) for i in range(1, 4)), p.dtmf("#"), p.mark("m1"),
            p.error(100002, "Unknown error", "detail"), p.stop()]


APP_FRAMES = [
    relay.text("Hello there. ", lang="en-US", interruptible=True), relay.text("Bye.", last=True),
    json.dumps({"type": "play", "source": "https://cdn.example/a.mp3", "loop": 2, "preemptible": False}),
    relay.send_digits("12w#"), json.dumps({"type": "language", "ttsLanguage": "fr-FR", "transcriptionLanguage": "es"}),
    relay.end('{"reason":"done"}'),
]
RELAY_FRAMES = [relay.serialize_relay_message(m) for m in (
    relay.Setup(session_id="VX1", call_sid=CALL, account_sid=ACCOUNT, custom_parameters={"k": "v"}),
    relay.Prompt(voice_prompt="Hello", lang="en-US", last=True), relay.DtmfDigit("1"),
    relay.Interrupt(utterance_until_interrupt="Hel", duration_until_interrupt_ms=120.5),
    relay.Info(name="x", value="y"), relay.Error(description="boom"),
)]


def bridge_to_twilio_frames() -> list[str]:
    b = MediaStreamsBridge()
    b.receive(twilio_call()[1])
    return [b.media(b"\xff" * 160), b.mark("m1"), b.clear()]


def bridge_to_telnyx_frames() -> list[str]:
    b = TelnyxMediaBridge()
    b.feed(telnyx_call()[1])
    return [b.media(b"\xff" * 160), b.mark("m1"), b.clear()]


# --- garbage ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["inbound", "outbound", "1", "20", SID, STREAM_ID, "/w==", "12w#", "https://x.io/a", "en-US"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
extreme_values = st.sampled_from([
    HUGE_INT, LONG_STRING, *SURROGATES, "9" * 5000, float("nan"), float("inf"), -1, 10**30, 2**64, "", None,
    True, [], {}, json.loads("[" * 60 + "]" * 60), {"a": "\ud800"}, ["inbound"] * 1000,
    {f"k{i}": "v" for i in range(200)}, "\u00b2", "1" * 21, "+1", " 1",
])
# Copied: a mutation may change the value in place, and the sampled constants must stay as they are.
replacements = st.one_of(json_values, extreme_values).map(copy.deepcopy)
any_text = st.text(alphabet=st.characters() | st.sampled_from("\ud800\udbff\udc00\udfff"), max_size=60)


def _containers(obj: Any) -> list[Any]:
    """Every object and array inside ``obj``, itself included."""
    out, stack = [], [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, dict | list):
            out.append(value)
            stack.extend(value.values() if isinstance(value, dict) else value)
    return out


@st.composite
def mutated(draw: st.DrawFn, frames: Sequence[str]) -> str:
    """A valid frame with one to three fields replaced, deleted or added."""
    obj = json.loads(draw(st.sampled_from(frames)))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(_containers(obj)))
        if isinstance(target, dict):
            keys = sorted(target)
            key = draw(st.sampled_from(keys) | st.text(max_size=6)) if keys else draw(st.text(max_size=6))
            if key in target and draw(st.booleans()):
                del target[key]
            else:
                target[key] = draw(replacements)
        elif target:
            target[draw(st.integers(0, len(target) - 1))] = draw(replacements)
        else:
            target.append(draw(replacements))
    return json.dumps(obj, ensure_ascii=draw(st.booleans()))  # escaped, or raw lone surrogates


@functools.cache
def garbage(frames: tuple[str, ...]) -> st.SearchStrategy[str | bytes]:
    """Built once per set of frames: building strategies for every example costs more than running it."""
    return st.one_of(
        any_text, st.binary(max_size=24), json_values.map(json.dumps), mutated(frames),
        st.sampled_from([DEEP_ARRAYS, DEEP_OBJECTS, '{"event":"media","x":' + "1" * 5000 + "}", "NaN",
                         '{"event":"connected","protocol":"Call","version":"\\ud800"}', '{"event":"start"}',
                         '{"type":"text","token":"\\udfff"}']),
    )


@functools.cache
def bursts(frames: tuple[str, ...], min_size: int, max_size: int) -> st.SearchStrategy[list[str | bytes]]:
    """A few garbage frames, mutated from ``frames`` or from any codec's."""
    return st.lists(garbage(frames) | garbage(ALL_VALID), min_size=min_size, max_size=max_size)


# --- properties ------------------------------------------------------------------------------


def assert_utf8(value: Any) -> None:
    """Every string in an event (its fields, nested) encodes as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            v.encode("utf-8")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            stack.extend(getattr(v, f.name) for f in dataclasses.fields(v))


def assert_echoable(event: Any) -> None:
    """What a codec accepts from a start can go into the app's ``setup``."""
    if isinstance(event, TelnyxStart):
        setup = relay.Setup.of("VX1", event.call_details())
    elif hasattr(event, "custom_parameters"):
        setup = relay.Setup(session_id="VX1", call_sid=event.call_sid, account_sid=event.account_sid,
                            custom_parameters=dict(event.custom_parameters))
    else:
        return
    relay.serialize_relay_message(setup).encode("utf-8")


def check(events: Sequence[Any]) -> None:
    for event in events:
        assert_utf8(event)
        assert_echoable(event)
        if isinstance(event, relay.InvalidAppFrame):
            assert json.loads(event.reply)["type"] == "error"


def refused(events: Sequence[Any]) -> bool:
    return all(isinstance(e, InvalidFrame | relay.InvalidAppFrame) for e in events) and bool(events)


Feed = Callable[[str | bytes], list[Any]]


@dataclasses.dataclass(frozen=True)
class Role:
    """One end of one protocol: ``new()`` makes a fresh codec, fed one frame at a time."""

    name: str
    new: Callable[[], Feed]
    valid: Callable[[], Sequence[str]]  # the frames of a proper exchange, in order

    def __repr__(self) -> str:
        return self.name


def _twilio_bridge() -> Feed:
    b = MediaStreamsBridge()  # its feed() is receive() as a list, and the sniffer roles use it
    return lambda raw: [b.receive(raw)]


def _telnyx_bridge() -> Feed:
    return TelnyxMediaBridge().feed


def _sniffer() -> Feed:
    return ProviderSniffer().feed


def _relay_bridge() -> Feed:
    b = relay.RelayBridge()
    return lambda raw: [b.receive(raw)]


def _twilio_provider() -> Feed:
    p = MediaStreamsProvider(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)
    return lambda raw: [p.receive(raw)]


def _telnyx_provider() -> Feed:
    p = TelnyxMediaProvider(stream_id=STREAM_ID, call_control_id=CCID, call_session_id="cs", user_id="u")
    return lambda raw: [p.receive(raw)]


ROLES = [
    Role("twilio-bridge", _twilio_bridge, twilio_call),
    Role("telnyx-bridge", _telnyx_bridge, telnyx_call),
    Role("sniffer-twilio", _sniffer, twilio_call),
    Role("sniffer-telnyx", _sniffer, telnyx_call),
    Role("relay-bridge", _relay_bridge, lambda: APP_FRAMES),
    Role("twilio-provider", _twilio_provider, bridge_to_twilio_frames),
    Role("telnyx-provider", _telnyx_provider, bridge_to_telnyx_frames),
]
ALL_VALID = (*twilio_call(), *telnyx_call(), *APP_FRAMES, *RELAY_FRAMES, *bridge_to_twilio_frames(),
             *bridge_to_telnyx_frames())


@pytest.mark.parametrize("role", ROLES, ids=repr)
@FUZZ
@given(data=st.data())
def test_garbage_alone_never_raises(role: Role, data: st.DataObject) -> None:
    feed = role.new()
    for raw in data.draw(bursts(tuple(role.valid()), 1, 6)):
        check(feed(expand(raw)))


@pytest.mark.parametrize("role", ROLES, ids=repr)
@FUZZ
@given(data=st.data())
def test_valid_frames_survive_interleaved_garbage(role: Role, data: st.DataObject) -> None:
    valid = role.valid()
    clean = role.new()
    expected = [clean(frame) for frame in valid]
    assert not any(isinstance(e, InvalidFrame | relay.InvalidAppFrame) for events in expected for e in events)
    noisy = role.new()
    comparable = True
    for frame, events in zip(valid, expected, strict=True):
        for raw in data.draw(bursts(tuple(valid), 0, 2)):
            got = noisy(expand(raw))
            check(got)
            comparable = comparable and refused(got)
        got = noisy(frame)
        check(got)
        if comparable:  # garbage that was accepted may rightly change what follows
            assert got == events


@FUZZ
@given(raw=st.one_of(garbage(tuple(RELAY_FRAMES)), garbage(ALL_VALID)))
def test_simulated_app_parser_raises_only_frame_errors(raw: str | bytes) -> None:
    try:
        message = relay.parse_relay_message(expand(raw))
    except FrameError as exc:
        str(exc).encode("utf-8")
    else:
        assert_utf8(message)
