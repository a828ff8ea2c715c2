"""Per-call session settings from TwiML-named custom parameters."""

from __future__ import annotations

import pytest

from relay_bridge.settings import SessionSettings, session_for_call

DEFAULTS = SessionSettings()


@pytest.mark.parametrize(("params", "expected"), [
    ({}, DEFAULTS),
    ({"language": "en-GB"}, SessionSettings(language="en-GB")),
    ({"interruptible": "speech"}, SessionSettings(interruptible="speech")),
    ({"interruptible": "true"}, SessionSettings(interruptible="any")),
    ({"interruptible": "False"}, SessionSettings(interruptible="none")),
    ({"dtmfDetection": "false"}, SessionSettings(dtmf_detection=False)),
    ({"welcomeGreeting": " Hello, caller! "}, SessionSettings(welcome_greeting=" Hello, caller! ")),
    ({"welcomeGreetingInterruptible": "dtmf"}, SessionSettings(welcome_greeting_interruptible="dtmf")),
    ({"events": "speaker-events tokens-played"}, SessionSettings(events="speaker-events tokens-played")),
    ({"debug": "debugging tokens-played"}, SessionSettings(debug="debugging tokens-played")),
    ({"customerTier": "gold", "relayUrl": "ws://x"}, DEFAULTS),  # the app's own parameters
])
def test_parameters_override_the_defaults(params: dict[str, str], expected: SessionSettings) -> None:
    assert session_for_call(DEFAULTS, params) == (expected, [])


@pytest.mark.parametrize(("params", "needle"), [
    ({"interruptible": "sometimes"}, "interruptible must be one of none, dtmf, speech, any, got 'sometimes'"),
    ({"dtmfDetection": "yes"}, "dtmfDetection must be true or false, got 'yes'; using True"),
    ({"welcomeGreetingInterruptible": "maybe"}, "welcomeGreetingInterruptible"),
    ({"events": "speaker-events everything"}, "'everything'"),
    ({"debug": "verbose"}, "'verbose'"),
    ({"language": " "}, "language"),
])
def test_invalid_values_are_reported_and_the_default_kept(params: dict[str, str], needle: str) -> None:
    settings, problems = session_for_call(DEFAULTS, params)
    assert settings == DEFAULTS
    assert len(problems) == 1 and needle in problems[0]


def test_a_bad_parameter_does_not_spoil_the_good_ones() -> None:
    settings, problems = session_for_call(DEFAULTS, {"interruptible": "bad", "language": "fr-FR"})
    assert settings.language == "fr-FR" and settings.interruptible == "any" and len(problems) == 1


def test_subscriptions_come_from_events_or_debug() -> None:
    assert SessionSettings(events="tokens-played").subscribed("tokens-played")
    assert SessionSettings(debug="speaker-events").subscribed("speaker-events")
    assert not SessionSettings(events="tokens-played").subscribed("speaker-events")
    assert not DEFAULTS.subscribed("tokens-played")


@pytest.mark.parametrize("bad", [{"interruptible": "never"}, {"events": "debugging"}, {"debug": "x"}])
def test_config_values_are_validated(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        SessionSettings(**bad)  # type: ignore[arg-type]
