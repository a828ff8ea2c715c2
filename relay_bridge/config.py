"""Configuration: one TOML file loaded into frozen dataclasses.

Every key has a default (see ``config/relay-bridge.toml`` for the documented reference); units are
in key names. Unknown keys and wrong types are rejected with the dotted path of the key, so a
misspelt setting is an error at start-up, not a silent default. The sections that configure the
runtime are the runtime's own settings classes, each validating its values. Every problem is reported
at once: ``ConfigError.messages`` lists them, one per key (the first a settings class finds, per table).

Secrets (``server.twilio_auth_token``, ``server.telnyx_stream_token``) need not be written into the
file: each may come from the file named by its ``*_file`` key, from the environment
(``RELAY_BRIDGE_TWILIO_AUTH_TOKEN``, ``RELAY_BRIDGE_TELNYX_STREAM_TOKEN``) or from a systemd
credential of the same name as the key (``LoadCredential=twilio_auth_token:...``). The key and its
``*_file`` together are an error; the environment, then the credential, is used only when neither
is set.

``[[languages]]`` declares the languages a call may use, as ``<Language>`` elements do in TwiML:
each names its code, voice and speech model, inheriting ``[tts]`` and ``[asr]`` when left empty
(except that a non-English language defaults to the multilingual model, ``MULTILINGUAL_MODEL``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from relay_bridge.conversation.judge import MAX_BACKCHANNEL_WORDS, words
from relay_bridge.engines.models import ModelError, Resolved, find, load_manifest
from relay_bridge.engines.schedule import cpu_cores
from relay_bridge.engines.turn import TURN_MODEL
from relay_bridge.engines.whisper import MAX_HINTS_CHARS, WhisperSettings
from relay_bridge.settings import (
    CallSettings,
    HandoffSettings,
    PlaybackSettings,
    PlaySettings,
    ServerSettings,
    SessionSettings,
    require_at_least,
)
from relay_bridge.speech.endpointer import EndpointerSettings


class ConfigError(ValueError):
    """One or more problems with the config: ``messages``, one a line in ``str()``."""

    def __init__(self, *messages: str) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


MULTILINGUAL_MODEL = "base"  # the manifest's multilingual Whisper, for languages other than English
# BCP-47 as ConversationRelay uses it: a primary language subtag and optional subtags ("es-419",
# "zh-Hant-TW"), or "multi" (detect the language).
LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*|multi")


def is_path(value: str) -> bool:
    """Whether a model or voice setting is a path: it starts with "/", "./", "../" or "~"."""
    return value.startswith(("/", "./", "../", "~"))


def is_english(code: str) -> bool:
    return code.split("-")[0].lower() == "en"


MAX_BACKCHANNELS = 200  # phrases per language


@dataclass(frozen=True)
class LanguageConfig:
    """One ``[[languages]]`` entry."""

    code: str = ""
    voice: str = ""  # a voice name or a path to an .onnx; "": [tts]
    speech_model: str = ""  # a model name or a model folder; "": [asr] for English, else MULTILINGUAL_MODEL
    backchannels: tuple[str, ...] = ()  # acknowledgements (ignoreBackchannel); empty: the built-in list

    def __post_init__(self) -> None:
        if not LANGUAGE_CODE.fullmatch(self.code):
            raise ValueError(f"code must be a BCP-47 language tag such as en-US or es-ES, or multi; got {self.code!r}")
        if len(self.backchannels) > MAX_BACKCHANNELS:
            raise ValueError(f"backchannels may hold at most {MAX_BACKCHANNELS} phrases, got {len(self.backchannels)}")
        for phrase in self.backchannels:
            if not 1 <= len(words(phrase)) <= MAX_BACKCHANNEL_WORDS:
                raise ValueError(f"backchannels: each phrase must have 1 to {MAX_BACKCHANNEL_WORDS} words, "
                                 f"got {phrase[:80]!r}")


@dataclass(frozen=True)
class ModelChoice:
    """A model as the config chose it: a name to resolve, or a path to use as is."""

    name: str  # for the logs and the manifest
    path: str = ""  # explicit file or folder; "" to resolve ``name``
    key: str = ""  # the config key that chose it, for messages


@dataclass(frozen=True)
class AsrConfig:
    model: str = "tiny.en"
    model_dir: str = ""
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 5
    # One thread per decode and one decode per core: on two cores tiny.en ran 8.8 decodes a second
    # against 3.3 with one decode of two threads (benchmarks/bench_asr.py --throughput).
    cpu_threads: int = 1
    concurrency: int = 0  # 0: one per CPU core
    allow_download: bool = False
    hints: str = ""
    windows_s: tuple[int, ...] = WhisperSettings.windows_s
    window_fill: float = WhisperSettings.window_fill

    def __post_init__(self) -> None:
        require_at_least(self, beam_size=1, cpu_threads=0, concurrency=0)
        if len(self.hints) > MAX_HINTS_CHARS:
            raise ValueError(f"hints must be at most {MAX_HINTS_CHARS} characters (Whisper reads no more)")
        WhisperSettings(windows_s=self.windows_s, window_fill=self.window_fill)  # its checks name the key

    @property
    def decodes(self) -> int:
        """Recognitions run side by side: ``concurrency``, or one per CPU core when it is 0."""
        return self.concurrency or cpu_cores()

    def whisper(self) -> WhisperSettings:
        """The recogniser's settings."""
        return WhisperSettings(beam_size=self.beam_size, compute_type=self.compute_type, device=self.device,
                               cpu_threads=self.cpu_threads, workers=self.decodes, hints=self.hints,
                               windows_s=self.windows_s, window_fill=self.window_fill)


@dataclass(frozen=True)
class TtsConfig:
    voice: str = "en_US-joe-medium"
    model_path: str = ""
    concurrency: int = 0  # 0: one per CPU core
    cpu_threads: int = 1
    allow_download: bool = False

    def __post_init__(self) -> None:
        require_at_least(self, concurrency=0, cpu_threads=1)

    @property
    def syntheses(self) -> int:
        """Syntheses run side by side: ``concurrency``, or one per CPU core when it is 0."""
        return self.concurrency or cpu_cores()


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"  # or "json": one object per line, with the call's ids as fields
    log_transcripts: bool = False  # caller and app text at INFO (otherwise only at DEBUG)

    def __post_init__(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"level must be DEBUG, INFO, WARNING or ERROR, got {self.level!r}")
        if self.format not in ("text", "json"):
            raise ValueError(f"format must be text or json, got {self.format!r}")


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
    languages: tuple[LanguageConfig, ...] = (LanguageConfig(code="en-US"),)

    def __post_init__(self) -> None:
        if not self.languages:
            raise ValueError("languages must declare at least one language")
        seen: set[str] = set()
        for i, lang in enumerate(self.languages):
            if lang.code.lower() in seen:
                raise ValueError(f"languages[{i}].code {lang.code!r} is declared twice")
            seen.add(lang.code.lower())
            model = self.speech_model(lang)
            if not is_english(lang.code) and not model.path and model.name.endswith(".en"):
                raise ValueError(f"languages[{i}].speech_model: {model.name!r} recognises only English; "
                                 f"{lang.code} needs a multilingual model such as {MULTILINGUAL_MODEL!r}")
        for key in ("language", "tts_language", "transcription_language"):
            code = getattr(self.session, key)
            if (code or key == "language") and code.lower() not in seen:
                raise ValueError(f"session.{key} {code!r} is not one of the declared languages "
                                 f"({', '.join(x.code for x in self.languages)}); add it to [[languages]]")

    @property
    def call(self) -> CallSettings:
        return CallSettings(session=self.session, playback=self.playback, endpointer=self.vad, play=self.play,
                            handoff=self.handoff,
                            backchannels={lang.code: lang.backchannels for lang in self.languages if lang.backchannels})

    def speech_model(self, lang: LanguageConfig) -> ModelChoice:
        """The ASR model of ``lang``: its own, else [asr]'s for English, else the multilingual one."""
        key = f"languages[{self.languages.index(lang)}].speech_model"
        if lang.speech_model:
            return ModelChoice(lang.speech_model, lang.speech_model if is_path(lang.speech_model) else "", key)
        if is_english(lang.code):
            key = "asr.model_dir" if self.asr.model_dir else "asr.model"
            return ModelChoice(self.asr.model, self.asr.model_dir, key)
        return ModelChoice(MULTILINGUAL_MODEL, key=key)

    def voice(self, lang: LanguageConfig) -> ModelChoice:
        """The voice of ``lang``: its own, else [tts]'s."""
        if lang.voice:
            key = f"languages[{self.languages.index(lang)}].voice"
            return ModelChoice(lang.voice, lang.voice if is_path(lang.voice) else "", key)
        key = "tts.model_path" if self.tts.model_path else "tts.voice"
        return ModelChoice(self.tts.voice, self.tts.model_path, key)

    def language(self, code: str) -> LanguageConfig:
        """The declared language ``code`` (case-insensitive); ``KeyError`` when not declared."""
        for lang in self.languages:
            if lang.code.lower() == code.lower():
                return lang
        raise KeyError(code)


MAX_NUMBER = 2**53  # no setting needs more; beyond it floats lose integers and sizes overflow


def _coerce(value: Any, hint: Any, path: str, errors: list[str]) -> Any:
    """``value`` as the type ``hint`` says; ``ConfigError`` when it is not one (tables: see ``_build``)."""
    origin = typing.get_origin(hint)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        # An array of tables: [[languages]]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{path}: expected an array of tables ([[{path}]])")
        item = typing.cast(type, typing.get_args(hint)[0])
        return tuple(_build(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a table")
        return _build(typing.cast(type, hint), value, path, errors)
    if origin is tuple and typing.get_args(hint)[0] is int:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  and -MAX_NUMBER <= v <= MAX_NUMBER for v in value):
            raise ConfigError(f"{path}: expected a list of integers")
        return tuple(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: expected a list of strings")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not -MAX_NUMBER <= value <= MAX_NUMBER:  # also false for nan
            raise ConfigError(f"{path}: expected a finite number of at most {MAX_NUMBER:g}, got {value!r}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if hint is int and not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ConfigError(f"{path}: expected an integer of at most {MAX_NUMBER}, got {value!r}")
    if (hint is str or (isinstance(hint, type) and issubclass(hint, StrEnum))) and not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    return value


def _unknown_key(path: str, key: str, known: list[str]) -> str:
    prefix = f"{path}." if path else ""
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key '{prefix}{key}'" + (f"; did you mean '{prefix}{close[0]}'?" if close else "")


def _build(cls: type[Any], data: dict[str, Any], path: str, errors: list[str]) -> Any:
    """``cls`` from the table ``data`` at ``path``, or None; each problem is appended to ``errors``.

    Every unknown key and wrong value of the table is reported. The class itself (its range and
    consistency checks) is built only when its known keys are all well typed, so that a value left
    out cannot cause a second, misleading error.
    """
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    complete = True
    for key, value in data.items():
        if key not in known:
            errors.append(_unknown_key(path, key, known))
            continue
        before = len(errors)
        try:
            kwargs[key] = _coerce(value, hints[key], f"{path}.{key}" if path else key, errors)
        except ConfigError as exc:
            errors.extend(exc.messages)
        complete = complete and len(errors) == before
    if not complete:
        return None
    try:
        return cls(**kwargs)
    except ValueError as exc:
        # Settings classes name the offending field first: "lead_ms must be at least 20".
        errors.append(f"{path}.{exc}" if path else str(exc))
        return None


def load(path: Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (or the defaults) and apply ``section__key=value`` (or ``languages=``) overrides.

    ``ConfigError`` lists every problem, each prefixed with ``path`` when there is one.
    """
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
        section, sep, name = key.partition("__")
        if sep:
            data.setdefault(section, {})[name] = value
        else:
            data[key] = value  # a whole top-level value: languages=[{"code": "en-US"}]
    errors: list[str] = []
    server = data.get("server", {})
    if isinstance(server, dict):  # anything else is reported by _build
        data["server"] = _with_secrets(server, os.environ, errors)
    cfg: Config | None = _build(Config, data, "", errors)
    if errors or cfg is None:
        raise ConfigError(*(f"{path}: {e}" if path is not None else e for e in errors))
    return cfg


SECRETS = ("twilio_auth_token", "telnyx_stream_token")


def _with_secrets(server: dict[str, Any], environ: Mapping[str, str], errors: list[str]) -> dict[str, Any]:
    """``[server]`` with each secret read from wherever it was given (see the module docstring)."""
    server = dict(server)
    for name in SECRETS:
        try:
            value = _secret(server, name, environ)
        except ConfigError as exc:
            errors.extend(exc.messages)
            continue
        if value is not None:
            server[name] = value
    return server


def _secret(server: dict[str, Any], name: str, environ: Mapping[str, str]) -> str | None:
    """The secret ``name`` from wherever it was given; None when nowhere."""
    sources: list[tuple[str, str]] = []
    if isinstance(server.get(name), str) and server[name]:
        sources.append((f"server.{name}", server[name]))
    file_key = f"{name}_file"
    if isinstance(server.get(file_key), str) and server[file_key]:
        sources.append((f"server.{file_key}", _read_secret(Path(server[file_key]), f"server.{file_key}")))
    if not sources and environ.get(f"RELAY_BRIDGE_{name.upper()}"):
        sources.append((f"${'RELAY_BRIDGE_' + name.upper()}", environ[f"RELAY_BRIDGE_{name.upper()}"]))
    credentials = environ.get("CREDENTIALS_DIRECTORY", "")
    if not sources and credentials and (Path(credentials) / name).is_file():
        sources.append((f"systemd credential {name}", _read_secret(Path(credentials) / name, f"credential {name}")))
    if len(sources) > 1:
        raise ConfigError(f"server.{name} is given twice ({sources[0][0]} and {sources[1][0]}); keep one")
    return sources[0][1] if sources else None


def _read_secret(path: Path, where: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


def check_authentication(cfg: Config) -> None:
    """Refuse to serve with no way to authenticate streams unless that was asked for explicitly."""
    server = cfg.server
    if not (server.twilio_auth_token or server.telnyx_stream_token or server.allow_unauthenticated):
        raise ConfigError(
            "no stream authentication is configured: set server.twilio_auth_token (with server.public_url) "
            "and/or server.telnyx_stream_token (or their *_file keys, environment variables or systemd "
            "credentials), or set server.allow_unauthenticated = true to accept streams from anyone")


def replace(cfg: Config, **changes: Any) -> Config:
    """A copy with ``section__key=value`` changes (or ``languages=(...)``) applied (for tests and tools)."""
    sections: dict[str, Any] = {}
    new = {}
    for key, value in changes.items():
        section, sep, name = key.partition("__")
        if sep:
            sections.setdefault(section, {})[name] = value
        else:
            new[key] = value
    for section, values in sections.items():
        try:
            new[section] = dataclasses.replace(getattr(cfg, section), **values)
        except ValueError as exc:
            raise ConfigError(f"{section}.{exc}") from None
    try:
        return dataclasses.replace(cfg, **new)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


TURN_CHOICE = ModelChoice(TURN_MODEL, key="vad.turn_detection")  # used when turn_detection is "smart"


@dataclass(frozen=True)
class Models:
    """Every model a config names, found and verified (see ``find_models``)."""

    found: dict[ModelChoice, Resolved]  # by choice: each language's, and TURN_CHOICE
    errors: tuple[str, ...]  # models that cannot be used: each names its config key and path
    warnings: tuple[str, ...]  # a missing end-of-turn model: turns then end on silence


def find_models(cfg: Config, cache_dir: Path) -> Models:
    """Resolve and verify each language's speech model and voice, and the end-of-turn model when
    ``vad.turn_detection`` is "smart", loading none of them (``cache_dir``: see ``models.resolve``)."""
    wanted: list[tuple[ModelChoice, str, bool]] = []
    for lang in cfg.languages:
        wanted += [(cfg.speech_model(lang), "asr", cfg.asr.allow_download),
                   (cfg.voice(lang), "tts", cfg.tts.allow_download)]
    if cfg.vad.turn_detection == "smart":
        wanted.append((TURN_CHOICE, "turn", False))
    manifest = load_manifest()
    found: dict[ModelChoice, Resolved] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for choice, kind, allow_download in dict.fromkeys(wanted):  # each once, in order
        try:
            found[choice] = find(choice.name, kind, choice.key, explicit=choice.path, allow_download=allow_download,
                                 cache_dir=cache_dir, manifest=manifest)
        except ModelError as exc:
            if kind != "turn":
                errors.append(str(exc))
                continue
            warnings.append(f"{exc}; turns end after vad.end_of_speech_silence_ms of silence instead "
                            "(pip install --no-deps pipecat-ai==1.14.0 installs the model)")
    return Models(found, tuple(errors), tuple(warnings))
