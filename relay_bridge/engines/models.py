"""Finding model files: a configured path, installed packages that ship them, or a hub download.

Resolution order for a model name: an explicit directory or file from the config wins; otherwise
the manifest says which installed package(s) ship the model and the files are checked (size and
sha256) before use; otherwise, only when downloads are allowed, the hub name is fetched into the
cache directory. Anything else is a ``ModelError`` that says what to configure. ``find`` also checks
that what was found is what the engine loads (a CTranslate2 model folder, a Piper voice with its
``.onnx.json``), before anything is loaded, and names the config key that chose the model.

Some models are too big for one PyPI package and are shipped split across several: a manifest
file with ``parts`` is the concatenation of those part files, found in any of the entry's
packages. Such a model is assembled once into the cache directory (each file written to a
temporary name, checked against the manifest, then renamed, so a crash or a concurrent start
never leaves a half-written file under the real name) and reused, after verification, from then on.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
    parts: tuple[str, ...] = ()  # when set, the file is these files of the packages, concatenated


@dataclass(frozen=True)
class ManifestSource:
    package: str  # the distribution (PyPI) name: how the files are found, and named in messages
    module: str  # the module that holds the files, a folder the distribution installed (never imported)
    subdir: str  # the files' folder inside the module


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    kind: str
    sources: tuple[ManifestSource, ...]
    hub: str
    licence: str
    files: tuple[ManifestFile, ...]

    @property
    def package(self) -> str:
        return " + ".join(s.package for s in self.sources)

    @property
    def assembled(self) -> bool:
        """Whether the files must be put together in the cache (split or spread over packages)."""
        return len(self.sources) > 1 or any(f.parts for f in self.files)


def load_manifest(path: Path = DEFAULT_MANIFEST) -> dict[str, ManifestEntry]:
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    entries = {}
    for m in data.get("model", []):
        files = tuple(ManifestFile(path=x["path"], sha256=x["sha256"], size=int(x["size"]),
                                   parts=tuple(x.get("parts", ()))) for x in m["files"])
        # One package: package/module/subdir keys; several: a "sources" list of such tables.
        raw_sources = m.get("sources", [m])
        sources = tuple(ManifestSource(package=x["package"], module=x["module"], subdir=x["subdir"])
                        for x in raw_sources)
        entries[m["name"]] = ManifestEntry(name=m["name"], kind=m["kind"], sources=sources, hub=m.get("hub", ""),
                                           licence=m.get("licence", ""), files=files)
    return entries


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_file(path: Path, mf: ManifestFile, model: str) -> None:
    """Raise ``ModelError`` unless ``path`` has the size and sha256 the manifest gives."""
    if not path.is_file():
        raise ModelError(f"model {model!r}: missing file {path}")
    size = path.stat().st_size
    if size != mf.size:
        raise ModelError(f"model {model!r}: {path} is {size} bytes, the manifest says {mf.size}")
    digest = sha256_file(path)
    if digest != mf.sha256:
        raise ModelError(f"model {model!r}: {path} has sha256 {digest}, the manifest says {mf.sha256}")


def verify(directory: Path, entry: ManifestEntry) -> None:
    """Check every manifest file of ``entry`` under ``directory``; raise ``ModelError`` on a mismatch."""
    for mf in entry.files:
        check_file(directory / mf.path, mf, entry.name)


DOWNLOADABLE = ("asr", "tts")  # the kinds a hub serves (asr.allow_download, tts.allow_download)


@dataclass(frozen=True)
class Resolved:
    path: Path
    source: str  # "path", "package <name>", "hub <name>"


def source_dir(source: ManifestSource) -> Path | None:
    """The installed folder of ``source``'s files, or None when its package is not installed.

    The folder comes from the distribution's record of the files it installed (``importlib.metadata``),
    so nothing of the package is imported, not even its parent packages: none of its code runs, and its
    files are checked against the manifest before anything loads them.
    """
    try:
        dist = importlib.metadata.distribution(source.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = PurePosixPath(*source.module.split("."), source.subdir)
    files = dist.files  # None when the installer kept no record: then the folder alone tells
    if files is not None and not any(folder in f.parents for f in files):
        return None
    directory = Path(str(dist.locate_file(folder)))
    return directory if directory.is_dir() else None


def packaged_dir(entry: ManifestEntry) -> Path | None:
    """The folder of a model shipped whole in one package, or None when it is not installed."""
    return source_dir(entry.sources[0]) if len(entry.sources) == 1 else None


def assemble(entry: ManifestEntry, source_dirs: list[Path], target: Path) -> None:
    """Put ``entry``'s files together under ``target`` from the packages' folders, verified.

    Files already there that match the manifest are kept. Each missing or wrong file is written to
    a temporary file beside it (parts concatenated in order), checked, and renamed into place.
    """
    target.mkdir(parents=True, exist_ok=True)
    for mf in entry.files:
        final = target / mf.path
        try:
            check_file(final, mf, entry.name)
            continue
        except ModelError:
            pass  # absent or damaged: (re)build it
        pieces = []
        for name in mf.parts or (mf.path,):
            found = [d / name for d in source_dirs if (d / name).is_file()]
            if not found:
                raise ModelError(f"model {entry.name!r}: no installed package of {entry.package} has {name}")
            pieces.append(found[0])
        fd, tmp_name = tempfile.mkstemp(prefix=f".{mf.path}.", suffix=".tmp", dir=final.parent)
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    with piece.open("rb") as f:
                        while block := f.read(1 << 20):
                            out.write(block)
                            h.update(block)
                            size += len(block)
            if size != mf.size or h.hexdigest() != mf.sha256:
                raise ModelError(f"model {entry.name!r}: {mf.path} assembled from {', '.join(map(str, pieces))} "
                                 f"is {size} bytes with sha256 {h.hexdigest()}; the manifest says {mf.size} "
                                 f"bytes with sha256 {mf.sha256}")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


def resolve_packaged(entry: ManifestEntry, cache_dir: Path) -> Resolved | None:
    """The verified folder of ``entry`` from its installed packages; None when one is missing."""
    if not entry.assembled:
        directory = packaged_dir(entry)
        if directory is None:
            return None
        verify(directory, entry)
        return Resolved(path=directory, source=f"package {entry.package}")
    dirs = [source_dir(s) for s in entry.sources]
    present = [d for d in dirs if d is not None]
    if len(present) < len(dirs):
        return None
    target = cache_dir / entry.name
    try:
        assemble(entry, present, target)
    except OSError as exc:
        raise ModelError(f"model {entry.name!r}: cannot assemble it in {target}: {exc}") from exc
    return Resolved(path=target, source=f"packages {entry.package}, assembled")


def resolve(name: str, kind: str, *, explicit: str = "", allow_download: bool = False,
            cache_dir: Path | None = None, manifest: dict[str, ManifestEntry] | None = None) -> Resolved:
    """Where the files of model ``name`` are. ``kind`` is "asr", "tts" or "turn".

    ``cache_dir`` receives assembled and downloaded models (default ``DEFAULT_CACHE``).
    """
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise ModelError(f"{kind} model path {p} does not exist")
        return Resolved(path=p, source="path")
    entries = load_manifest() if manifest is None else manifest
    entry = entries.get(name)
    if entry is not None and entry.kind == kind:
        found = resolve_packaged(entry, cache_dir or DEFAULT_CACHE)
        if found is not None:
            return found
    if not allow_download:
        install = ""
        if entry is not None:
            install = f"install the package{'s' if len(entry.sources) > 1 else ''} {entry.package}"
        if kind not in DOWNLOADABLE:  # no config key points at it and no hub serves it
            raise ModelError(f"{kind} model {name!r} is not installed" + (f": {install}" if install else ""))
        raise ModelError(f"{kind} model {name!r} is not installed: {install + ', ' if install else ''}point the "
                         f"config at a local model, or set {kind}.allow_download = true to fetch it from the model hub")
    return _download(name, kind, entry, cache_dir or DEFAULT_CACHE)


CT2_FILES = ("model.bin", "config.json")  # what every CTranslate2 model folder holds


def engine_file(name: str, kind: str, path: Path, entry: ManifestEntry | None = None) -> Path:
    """What the engine of ``kind`` loads from the found ``path``, checked to be there: a CTranslate2
    model folder (asr), or an ONNX file (tts: a Piper voice, with its ``.onnx.json`` beside it; turn).
    A folder holds the manifest's ``.onnx`` file, else ``<name>.onnx``."""
    if kind == "asr":
        if not path.is_dir():
            raise ModelError(f"{path} is not a folder: a CTranslate2 model is a folder with {' and '.join(CT2_FILES)}")
        missing = [f for f in CT2_FILES if not (path / f).is_file()]
        if missing:
            raise ModelError(f"{path} is not a CTranslate2 model folder: it has no {' and no '.join(missing)}")
        return path
    onnx = path
    if path.is_dir():
        listed = [f.path for f in entry.files if f.path.endswith(".onnx")] if entry is not None else []
        onnx = path / (listed[0] if listed else f"{name}.onnx")
    if not onnx.is_file():
        raise ModelError(f"{onnx} does not exist")
    if kind == "tts" and not onnx.with_name(f"{onnx.name}.json").is_file():
        raise ModelError(f"{onnx} has no {onnx.name}.json beside it: a Piper voice is both files")
    return onnx


def find(name: str, kind: str, key: str, *, explicit: str = "", allow_download: bool = False,
         cache_dir: Path | None = None, manifest: dict[str, ManifestEntry] | None = None) -> Resolved:
    """``resolve`` model ``name``, then the file or folder its engine loads (``engine_file``); loads nothing.

    Every ``ModelError`` starts with ``key``, the config key that chose the model.
    """
    entries = load_manifest() if manifest is None else manifest
    try:
        found = resolve(name, kind, explicit=explicit, allow_download=allow_download, cache_dir=cache_dir,
                        manifest=entries)
        return Resolved(path=engine_file(name, kind, found.path, entries.get(name)), source=found.source)
    except ModelError as exc:
        raise ModelError(f"{key}: {exc}") from None


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
