"""Configuration: TOML into frozen dataclasses, unknown keys and wrong types rejected by dotted path."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay_bridge.config import (
    AsrConfig,
    Config,
    ConfigError,
    LanguageConfig,
    load,
    replace,
)
from relay_bridge.settings import ServerSettings, SessionSettings, check_ws_url, split_listen
from relay_bridge.speech.endpointer import EndpointerSettings

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "relay-bridge.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def to_toml(cfg: Config) -> str:
    """A minimal TOML writer for the config's value types (the stdlib only reads TOML)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(type(v))

    lines: list[str] = []
    for section in dataclasses.fields(cfg):
        sub = getattr(cfg, section.name)
        tables = sub if isinstance(sub, tuple) else (sub,)
        for table in tables:
            lines.append(f"[[{section.name}]]" if isinstance(sub, tuple) else f"[{section.name}]")
            for f in dataclasses.fields(table):
                lines.append(f"{f.name} = {value(getattr(table, f.name))}")
            lines.append("")
    return "\n".join(lines)


def test_defaults_load() -> None:
    cfg = load()
    assert cfg == Config()
    assert cfg.server.listen == "127.0.0.1:8080"
    assert cfg.server.app_url == ""
    assert cfg.server.relay_url_allowlist == ()
    assert cfg.session.interruptible == "any"
    assert cfg.vad == EndpointerSettings()
    assert cfg.asr.model == "tiny.en"
    assert cfg.logging.level == "INFO"


def test_config_is_frozen() -> None:
    cfg = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server = ServerSettings()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[vad]\nspeech_start_msx = 60\n", "'vad.speech_start_msx'"),
        ("[server]\nlisten_port = 1\n", "'server.listen_port'"),
        ("[servers]\nlisten = '1.2.3.4:5'\n", "'servers'"),
        ("top = 1\n", "'top'"),
        ("[asr.extra]\nx = 1\n", "'asr.extra'"),
    ],
)
def test_unknown_key_rejected_with_dotted_path(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="unknown key") as exc:
        load(write(tmp_path, text))
    assert needle in str(exc.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[vad]\nspeech_start_ms = "60"\n', "vad.speech_start_ms"),
        ("[vad]\nhangover_ms = 100.0\n", "vad.hangover_ms"),
        ("[vad]\naggressiveness = true\n", "vad.aggressiveness"),
        ("[server]\nlisten = 8080\n", "server.listen"),
        ("[server]\nmax_calls = 1.5\n", "server.max_calls"),
        ('[server]\nshutdown_grace_s = "30"\n', "server.shutdown_grace_s"),
        ("[server]\nshutdown_grace_s = false\n", "server.shutdown_grace_s"),
        ('[server]\nrelay_url_allowlist = "wss://a.example/x"\n', "server.relay_url_allowlist"),
        ("[server]\nrelay_url_allowlist = [1]\n", "server.relay_url_allowlist"),
        ('[session]\ndtmf_detection = "yes"\n', "session.dtmf_detection"),
        ("[asr]\nallow_download = 1\n", "asr.allow_download"),
        ("[tts]\nvoice = 3\n", "tts.voice"),
        ("server = 1\n", "server"),
    ],
)
def test_wrong_types_rejected_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text))
    assert needle in str(exc.value)


def test_integer_accepted_for_float() -> None:
    cfg = load(server__shutdown_grace_s=10)
    assert cfg.server.shutdown_grace_s == 10.0
    assert isinstance(cfg.server.shutdown_grace_s, float)


@pytest.mark.parametrize(
    "listen", ["8080", "localhost", ":8080", "host:", "host:http", "host:70000", "host:-1", "host:80 "]
)
def test_invalid_listen(listen: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("server.listen")):
        load(server__listen=listen)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9000", ("::1", 9000)),
     ("bridge.local:65535", ("bridge.local", 65535))],
)
def test_valid_listen(listen: str, expected: tuple[str, int]) -> None:
    assert load(server__listen=listen).server.listen == listen
    assert split_listen(listen) == expected


@pytest.mark.parametrize("url", ["http://app.example/ws", "https://app.example/ws", "app.example/ws", "ws://",
                                 "wss:///path", "ftp://app.example"])
def test_invalid_app_url(url: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("server.app_url")):
        load(server__app_url=url)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:9000/relay", "wss://app.example.com/ws?x=1"])
def test_valid_app_url(url: str) -> None:
    assert load(server__app_url=url).server.app_url == url
    check_ws_url(url, "x")


def test_invalid_allowlist_entry_names_index() -> None:
    with pytest.raises(ConfigError, match=r"server\.relay_url_allowlist\[1\]"):
        load(server__relay_url_allowlist=["wss://a.example/x", "https://b.example/x"])


@pytest.mark.parametrize("value", ["all", "true", "", "Any"])
def test_invalid_interruptible(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("session.interruptible")):
        load(session__interruptible=value)


@pytest.mark.parametrize("value", ["none", "dtmf", "speech", "any"])
def test_valid_interruptible(value: str) -> None:
    assert load(session__interruptible=value).session.interruptible == value


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"playback__lead_ms": 10}, "playback.lead_ms"),
        ({"playback__max_synthesized_ahead_ms": 50}, "playback.max_synthesized_ahead_ms"),
        ({"asr__beam_size": 0}, "asr.beam_size"),
        ({"asr__cpu_threads": -1}, "asr.cpu_threads"),
        ({"asr__concurrency": -1}, "asr.concurrency"),
        ({"tts__concurrency": -1}, "tts.concurrency"),
        ({"server__max_calls": 0}, "server.max_calls"),
        ({"server__app_connect_timeout_ms": 0}, "server.app_connect_timeout_ms"),
        ({"logging__level": "VERBOSE"}, "logging.level"),
        ({"vad__aggressiveness": 5}, "aggressiveness"),
        ({"vad__speech_start_ms": 10}, "speech_start_ms"),
    ],
)
def test_range_checks(override: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(**override)
    assert needle in str(exc.value)


def test_vad_errors_name_the_section() -> None:
    with pytest.raises(ConfigError, match=r"^vad\.hangover_ms "):
        load(vad__hangover_ms=-1)


def test_log_level_case_insensitive() -> None:
    assert load(logging__level="debug").logging.level == "debug"


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = replace(
        load(),
        server__listen="0.0.0.0:9090", server__app_url="wss://app.example/ws",
        server__relay_url_allowlist=("wss://a.example/x", "ws://b.example:81/y"),
        server__twilio_auth_token='to"ken\\', server__public_url="wss://voice.example/media",
        server__shutdown_grace_s=2.5, server__max_calls=7,
        session__language="fr-FR", session__interruptible="dtmf", session__dtmf_detection=False,
        playback__lead_ms=200, vad__aggressiveness=3, vad__end_of_speech_silence_ms=800,
        asr__model="base.en", asr__allow_download=True, asr__hints="Zoë, relay",
        tts__voice="en_GB-alan-low", logging__level="DEBUG",
        languages=(LanguageConfig("en-US"), LanguageConfig("fr-FR", voice="/v/fr.onnx", speech_model="small")),
    )
    assert cfg != load()
    path = write(tmp_path, to_toml(cfg))
    assert load(path) == cfg


def test_default_round_trip(tmp_path: Path) -> None:
    assert load(write(tmp_path, to_toml(load()))) == load()


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[vad]\nhangover_ms = 120\n\n[session]\nlanguage = "de-DE"\n\n'
                               '[[languages]]\ncode = "de-DE"\n'))
    assert cfg.vad == EndpointerSettings(hangover_ms=120)
    assert cfg.session == SessionSettings(language="de-DE")
    assert cfg.server == ServerSettings()
    assert cfg.asr == AsrConfig()


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1000"\napp_url = "ws://a.example/x"\n')
    cfg = load(path, server__listen="0.0.0.0:2000", logging__level="WARNING")
    assert cfg.server.listen == "0.0.0.0:2000"  # the override wins
    assert cfg.server.app_url == "ws://a.example/x"  # the rest of the section stays
    assert cfg.logging.level == "WARNING"


def test_none_override_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1000"\n')
    assert load(path, server__listen=None).server.listen == "127.0.0.1:1000"


def test_unknown_override_rejected() -> None:
    with pytest.raises(ConfigError, match=re.escape("'server.listn'")):
        load(server__listn="1.2.3.4:5")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, "[server\nlisten = \n"))
    assert "relay-bridge.toml" in str(exc.value)


def test_replace_validates() -> None:
    with pytest.raises(ConfigError, match=re.escape("session.interruptible")):
        replace(load(), session__interruptible="sometimes")


def test_shipped_config_equals_defaults() -> None:
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} not written yet")
    assert load(SHIPPED) == load()


def test_shipped_config_documents_every_key() -> None:
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} not written yet")
    data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    cfg = load()
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if isinstance(value, tuple):  # an array of tables: every entry shows every key
            keys = {f.name for f in dataclasses.fields(value[0])}
            assert [set(t) for t in data[section.name]] == [keys] * len(value), section.name
        else:
            keys = {f.name for f in dataclasses.fields(value)}
            assert set(data.get(section.name, {})) == keys, section.name


def test_play_and_handoff_sections(tmp_path: Path) -> None:
    text = """
[play]
max_bytes = 1000000
timeout_ms = 2500
max_duration_s = 30
allowed_hosts = ["media.example.com", "*.cdn.example.net"]
allow_private = true
cache_bytes = 0

[handoff]
callback_url = "https://app.example.com/action"
callback_auth_token = "tok"
redirect_url = "https://app.example.com/next"
twilio_account_sid = "AC0123456789abcdef0123456789abcdef"
twilio_auth_token = "rest"
timeout_ms = 3000
"""
    cfg = load(write(tmp_path, text))
    assert cfg.play.allowed_hosts == ("media.example.com", "*.cdn.example.net")
    assert cfg.play.max_duration_s == 30.0 and cfg.play.cache_bytes == 0 and cfg.play.allow_private
    assert cfg.handoff.redirects and cfg.handoff.twilio_api_base == "https://api.twilio.com"
    assert cfg.call.play == cfg.play and cfg.call.handoff == cfg.handoff
    assert load(write(tmp_path, to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"play__max_bytes": 0}, "play.max_bytes must be at least 1"),
        ({"play__timeout_ms": 0}, "play.timeout_ms must be at least 1"),
        ({"play__max_duration_s": 0}, "play.max_duration_s must be at least 0.02"),
        ({"play__cache_bytes": -1}, "play.cache_bytes must be at least 0"),
        ({"play__allowed_hosts": ["ok.example.com", "https://x.example.com"]}, "play.allowed_hosts[1]"),
        ({"play__allowed_hosts": ["*"]}, "play.allowed_hosts[0]"),
        ({"play__allowed_hosts": ["Media.Example.com"]}, "play.allowed_hosts[0]"),
        ({"play__allowed_hosts": ["x.example.com:443"]}, "play.allowed_hosts[0]"),
        ({"play__allowed_hosts": "x.example.com"}, "play.allowed_hosts: expected a list of strings"),
        ({"handoff__callback_url": "ws://app.example/x"}, "handoff.callback_url must be an http:// or https:// URL"),
        ({"handoff__redirect_url": "https://app.example/x"}, "handoff.twilio_account_sid must be set"),
        ({"handoff__timeout_ms": 0}, "handoff.timeout_ms must be at least 1"),
    ],
)
def test_play_and_handoff_checks(override: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(**override)
    assert needle in str(exc.value)


def test_asr_concurrency_0_runs_one_decode_per_core() -> None:
    assert load().asr.concurrency == 0 and load().asr.decodes == max(1, os.cpu_count() or 1)
    assert load(asr__concurrency=3).asr.decodes == 3


def test_tts_concurrency_0_runs_one_synthesis_per_core() -> None:
    assert load().tts.concurrency == 0 and load().tts.syntheses == max(1, os.cpu_count() or 1)
    assert load(tts__concurrency=2).tts.syntheses == 2


def test_every_problem_is_reported_at_once_naming_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
[server]
max_call = 3
listen = "127.0.0.1:99999"
twilio_auth_token_file = "/nonexistent"

[vad]
aggressiveness = "3"
hangover_ms = true

[logging]
level = "LOUD"

[[languages]]
code = "en-US"
voise = "x"

[[languages]]
code = "xx_YY"

[tts]
zzz = 1
""")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert exc.value.messages == (
        f"{path}: server.twilio_auth_token_file: cannot read /nonexistent: No such file or directory",
        f"{path}: unknown key 'server.max_call'; did you mean 'server.max_calls'?",
        f"{path}: server.listen must be HOST:PORT, got '127.0.0.1:99999'",
        f"{path}: vad.aggressiveness: expected an integer, got '3'",
        f"{path}: vad.hangover_ms: expected an integer, got True",
        f"{path}: logging.level must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'",
        f"{path}: unknown key 'languages[0].voise'; did you mean 'languages[0].voice'?",
        f"{path}: languages[1].code must be a BCP-47 language tag such as en-US or es-ES, or multi; got 'xx_YY'",
        f"{path}: unknown key 'tts.zzz'",
    )
    assert str(exc.value) == "\n".join(exc.value.messages)


def test_a_table_with_a_wrong_type_is_not_checked_further(tmp_path: Path) -> None:
    """hangover_ms must be shorter than end_of_speech_silence_ms, but with hangover_ms unreadable that
    check would compare the default, and report a mistake that is not there."""
    with pytest.raises(ConfigError) as exc:
        load(vad__hangover_ms="40", vad__end_of_speech_silence_ms=60)
    assert exc.value.messages == ("vad.hangover_ms: expected an integer, got '40'",)


def test_the_admin_listener_cannot_share_the_media_port() -> None:
    with pytest.raises(ConfigError, match=r"server.admin_listen must differ from listen \(127.0.0.1:8080\)"):
        load(server__admin_listen="127.0.0.1:8080")
