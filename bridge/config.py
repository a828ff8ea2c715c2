"""Configuration: one TOML file loaded into frozen dataclasses.

Every key has a default (see ``config/relay-bridge.toml`` for the documented reference); units are
in key names. Unknown keys and wrong types are rejected with the dotted path of the key, so a
misspelt setting is an error at start-up, not a silent default. The sections that configure the
runtime are the runtime's own settings classes, each validating its values.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.call.settings import (
    CallSettings,
    HandoffSettings,
    PlaybackSettings,
    PlaySettings,
    SessionSettings,
    require_at_least,
)
from bridge.server import ServerSettings
from bridge.speech.endpointer import EndpointerSettings


class ConfigError(ValueError):
    pass


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

    def __post_init__(self) -> None:
        require_at_least(self, beam_size=1, cpu_threads=0, concurrency=1)


@dataclass(frozen=True)
class TtsConfig:
    voice: str = "en_US-joe-medium"
    model_path: str = ""
    concurrency: int = 1
    allow_download: bool = False

    def __post_init__(self) -> None:
        require_at_least(self, concurrency=1)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"

    def __post_init__(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"level must be DEBUG, INFO, WARNING or ERROR, got {self.level!r}")


@dataclass(frozen=True)
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    playback: PlaybackSettings = field(default_factory=PlaybackSettings)
    play: PlaySettings = field(default_factory=PlaySettings)
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
    vad: EndpointerSettings = field(default_factory=EndpointerSettings)
    asr: AsrConfig = field(default_factory=AsrConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def call(self) -> CallSettings:
        return CallSettings(session=self.session, playback=self.playback, endpointer=self.vad, play=self.play,
                            handoff=self.handoff)


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
        # Settings classes name the offending field first: "lead_ms must be at least 20".
        raise ConfigError(f"{path}.{exc}" if path else str(exc)) from None


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
    new = {}
    for section, values in sections.items():
        try:
            new[section] = dataclasses.replace(getattr(cfg, section), **values)
        except ValueError as exc:
            raise ConfigError(f"{section}.{exc}") from None
    return dataclasses.replace(cfg, **new)
