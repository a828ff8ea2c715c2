"""The call's meter: each turn timed from its own prompt, token and audio; onset to clear only for the cut
that caller speech caused."""

from __future__ import annotations

import logging

import pytest

from relay_bridge.call.meter import CallMeter
from relay_bridge.call.record import CallLogger
from relay_bridge.conversation import events as ev
from relay_bridge.metrics import Metrics
from relay_bridge.protocols import relay


def meter() -> tuple[CallMeter, Metrics]:
    metrics = Metrics()
    log = CallLogger(logging.getLogger("relay_bridge.call.call"), {"call_sid": "CA1", "stream_sid": "MZ1"})
    return CallMeter(metrics, log, started_at=0.0), metrics


def count(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"relay_bridge_{name}_count")
    assert value is not None
    return value


def total(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"relay_bridge_{name}_sum")
    assert value is not None
    return value


def note(name: str, **data: object) -> ev.Note:
    return ev.Note(name, dict(data))


def test_a_turn_is_timed_from_its_prompt_to_its_replys_first_audio(caplog: pytest.LogCaptureFixture) -> None:
    m, metrics = meter()
    caplog.set_level(logging.INFO)
    m.action(note("prompt", text="hi", speech_end_at=9.6), 10.0)
    m.action(note("first_token", cycle=2), 10.3)
    m.action(note("first_audio", cycle=2, after_first_token_ms=100), 10.4)
    assert [count(metrics, k) for k in ("end_of_speech_to_prompt_seconds", "app_first_token_seconds",
                                        "first_token_to_audio_seconds")] == [1, 1, 1]
    assert total(metrics, "end_of_speech_to_prompt_seconds") == pytest.approx(0.4)
    assert total(metrics, "app_first_token_seconds") == pytest.approx(0.3)
    assert total(metrics, "first_token_to_audio_seconds") == pytest.approx(0.1)
    [line] = [r for r in caplog.records if r.getMessage().startswith("turn ")]
    assert line.getMessage() == ("turn 1: end of speech to prompt 400 ms, app's first token 300 ms, "
                                 "first token to first audio 100 ms")
    assert line.data == {"turn": 1, "end_of_speech_to_prompt_ms": 400, "app_first_token_ms": 300,  # type: ignore[attr-defined]
                         "first_token_to_audio_ms": 100}


def test_audio_of_another_reply_is_not_the_turns(caplog: pytest.LogCaptureFixture) -> None:
    """The reply is cut by a key before any audio; the app's answer to the key is another reply."""
    m, metrics = meter()
    caplog.set_level(logging.INFO)
    m.action(note("prompt", text="hi", speech_end_at=9.5), 10.0)
    m.action(note("first_token", cycle=2), 10.2)
    m.action(note("interrupt", cause="dtmf", onset_at=0.0), 10.25)
    m.action(note("first_token", cycle=3), 13.8)
    m.action(note("first_audio", cycle=3, after_first_token_ms=100), 13.9)
    assert count(metrics, "first_token_to_audio_seconds") == 0
    m.finish(20.0, ev.EndReason.PROVIDER_STOPPED, "provider sent stop", "")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("turn 1: end of speech to prompt 500 ms, app's first token 200 ms, "
                        "first token to first audio -")
    assert lines[1].startswith("call ended: provider sent stop after 20.0 s, 1 turn(s), 1 barge-in(s); ")
    assert metrics.registry.get_sample_value("relay_bridge_calls_total", {"reason": "provider_stopped"}) == 1


def test_onset_to_clear_is_timed_only_for_the_cut_speech_caused() -> None:
    m, metrics = meter()
    m.action(ev.ClearPlayback(unheard=True), 5.0)  # a preemption: no speech involved
    m.action(note("interrupt", cause="dtmf", onset_at=0.0), 5.0)  # a key
    m.action(note("interrupt", cause="speech", onset_at=0.0), 6.0)  # confirmed after a hold: cut earlier
    assert count(metrics, "onset_to_clear_seconds") == 0
    m.action(note("hold", onset_at=7.0), 7.06)
    m.action(note("interrupt", cause="speech", onset_at=8.0), 8.05)
    assert count(metrics, "onset_to_clear_seconds") == 2
    assert total(metrics, "onset_to_clear_seconds") == pytest.approx(0.11)


def test_partials_and_errors_are_counted_by_code() -> None:
    m, metrics = meter()
    m.action(ev.SendToApp(relay.Prompt("hel", "en-US", last=False)), 1.0)
    m.action(ev.SendToApp(relay.Prompt("hello", "en-US", last=True)), 1.0)
    m.action(ev.SendToApp(relay.Error("Cannot play x", relay.CONVERSION_CODE)), 1.0)
    m.error(relay.INVALID_MESSAGE_CODE)
    sample = metrics.registry.get_sample_value
    assert sample("relay_bridge_partial_prompts_total") == 1
    assert sample("relay_bridge_error_messages_total", {"code": "64112"}) == 1
    assert sample("relay_bridge_error_messages_total", {"code": "64107"}) == 1


def test_a_call_that_ended_on_an_error_of_its_own_is_counted() -> None:
    m, metrics = meter()
    m.finish(3.0, None, "", "")
    assert metrics.registry.get_sample_value("relay_bridge_calls_total", {"reason": "error"}) == 1
