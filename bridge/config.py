"""Configuration: one TOML file loaded into frozen dataclasses.

Every key has a default (see ``config/relay-bridge.toml`` for the documented reference); units are
in key names. Unknown keys and wrong types are rejected with the dotted path of the key, so a
misspelt setting is an error at start-up, not a silent default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.speech.endpointer import EndpointerSettings

INTERRUPTIBLE_VALUES = ("none", "dtmf", "speech", "any")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    app_url: str = ""
    relay_url_allowlist: tuple[str, ...] = ()
    twilio_auth_token: str = ""
    public_url: str = ""
    app_connect_timeout_ms: int = 5000
    shutdown_grace_s: float = 30.0
    max_calls: int = 50


@dataclass(frozen=True)
class SessionConfig:
    language: str = "en-US"
    interruptible: str = "any"
    dtmf_detection: bool = True


@dataclass(frozen=True)
class PlaybackConfig:
    lead_ms: int = 300
    max_synthesized_ahead_ms: int = 3000


@dataclass(frozen=True)
class AsrConfig:
    model: str = "tiny.en"
    model_dir: str = ""
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 5
    cpu_threads: int = 2
    concurrency: int = 1
    allow_download: bool = False
    hints: str = ""


@dataclass(frozen=True)
class TtsConfig:
    voice: str = "en_US-joe-medium"
    model_path: str = ""
    concurrency: int = 1
    allow_download: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    playback: PlaybackConfig = field(default_factory=PlaybackConfig)
    vad: EndpointerSettings = field(default_factory=EndpointerSettings)
    asr: AsrConfig = field(default_factory=AsrConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        validate(self)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: expected a list of strings")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if hint in (str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{path}: expected {'a string' if hint is str else 'true or false'}, got {value!r}")
    return value


def _build(cls: type[Any], data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else key
        if key not in known:
            raise ConfigError(f"unknown key '{dotted}'")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"'{dotted}' must be a table")
            kwargs[key] = _build(typing.cast(type, hint), value, dotted)
        else:
            kwargs[key] = _coerce(value, hint, dotted)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def validate(cfg: Config) -> None:
    host, port = split_listen(cfg.server.listen)
    del host, port
    if cfg.server.app_url:
        check_ws_url(cfg.server.app_url, "server.app_url")
    for i, url in enumerate(cfg.server.relay_url_allowlist):
        check_ws_url(url, f"server.relay_url_allowlist[{i}]")
    if cfg.session.interruptible not in INTERRUPTIBLE_VALUES:
        raise ConfigError(f"session.interruptible must be one of {', '.join(INTERRUPTIBLE_VALUES)}")
    for name, value, low in (("playback.lead_ms", cfg.playback.lead_ms, 20),
                             ("playback.max_synthesized_ahead_ms", cfg.playback.max_synthesized_ahead_ms, 100),
                             ("asr.beam_size", cfg.asr.beam_size, 1), ("asr.cpu_threads", cfg.asr.cpu_threads, 0),
                             ("asr.concurrency", cfg.asr.concurrency, 1), ("tts.concurrency", cfg.tts.concurrency, 1),
                             ("server.app_connect_timeout_ms", cfg.server.app_connect_timeout_ms, 1),
                             ("server.max_calls", cfg.server.max_calls, 1),
                             ("server.shutdown_grace_s", cfg.server.shutdown_grace_s, 0)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level must be DEBUG, INFO, WARNING or ERROR")


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def check_ws_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"{name} must be a ws:// or wss:// URL, got {url!r}")


def load(path: Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (or the defaults) and apply ``section__key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        data.setdefault(section, {})[name] = value
    cfg: Config = _build(Config, data, "")
    return cfg


def replace(cfg: Config, **changes: Any) -> Config:
    """A copy with ``section__key=value`` changes applied (for tests and tools)."""
    sections: dict[str, Any] = {}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        sections.setdefault(section, {})[name] = value
    new = {s: dataclasses.replace(getattr(cfg, s), **v) for s, v in sections.items()}
    return dataclasses.replace(cfg, **new)


