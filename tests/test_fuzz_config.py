"""The config loader under fuzzing: any value for any key is a Config or a ConfigError naming the key."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from relay_bridge.config import Config, ConfigError, load
from tests.harness import fuzz_settings

EXAMPLES = fuzz_settings(ci=300, fuzz=2_000, suppress_health_check=[HealthCheck.function_scoped_fixture])

SECTIONS = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "languages"}
KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]

toml_leaf = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
                      st.text(max_size=30), st.sampled_from(["", "ws://x/y", "127.0.0.1:1", "auto", "any", "-1"]))
toml_value = st.one_of(toml_leaf, st.lists(toml_leaf, max_size=3), st.dictionaries(st.text(max_size=5), toml_leaf,
                                                                                   max_size=2))


@EXAMPLES
@given(changes=st.lists(st.tuples(st.sampled_from(KEYS), toml_value), max_size=4),
       languages=st.one_of(st.none(), toml_value, st.lists(st.dictionaries(
           st.sampled_from(["code", "voice", "speech_model", "other"]), toml_leaf, max_size=3), max_size=3)))
def test_any_config_is_loaded_or_refused_naming_the_key(changes: list[tuple[tuple[str, str], object]],
                                                        languages: object, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RELAY_BRIDGE_TWILIO_AUTH_TOKEN", "RELAY_BRIDGE_TELNYX_STREAM_TOKEN", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    overrides: dict[str, object] = {f"{section}__{key}": value for (section, key), value in changes}
    if languages is not None:
        overrides["languages"] = languages
    for key in ("server__twilio_auth_token_file", "server__telnyx_stream_token_file"):
        if isinstance(overrides.get(key), str) and overrides[key]:
            overrides[key] = "/nonexistent/secret"  # never read a real file the fuzzer names
    try:
        cfg = load(None, **overrides)
    except ConfigError as exc:
        sections = {section for (section, _), _ in changes}
        assert any(f"{section}." in str(exc) for section in sections) or "languages" in str(exc), str(exc)
        return
    assert isinstance(cfg, Config)


NUMERIC = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
           if typing.get_type_hints(cls)[f.name] in (int, float)]


@pytest.mark.parametrize("value", [10**400, float("inf"), float("nan"), -(10**30)])
def test_huge_and_non_finite_numbers_are_refused_naming_the_key(value: object) -> None:
    for section, key in NUMERIC:
        with pytest.raises(ConfigError, match=f"{section}.{key}"):
            load(None, **{f"{section}__{key}": value})
