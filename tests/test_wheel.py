"""The wheel as a user installs it: built from this tree, installed with its dependencies into a fresh
virtual environment, and run from outside the checkout, so nothing comes from the source tree.

Marked ``models`` and ``wheel`` (about a minute; ``make test-wheel`` runs these alone). The
dependencies come from the package registry once, into ``.cache/wheelhouse``; later runs install
from there without the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.models, pytest.mark.wheel]

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / ".cache" / "wheelhouse"
# The end-of-turn model ships as a data file in this wheel, installed without its dependencies (as
# the Makefile and the unit's install notes do); without it turns end on silence alone.
TURN_MODEL_WHEEL = "pipecat-ai==1.14.0"
PACKAGE_DATA = ("relay_bridge/py.typed", "relay_bridge/engines/manifest.toml", "relay_bridge/sim/clips/*.wav",
                "relay_bridge/sim/clips/*.txt")


def run(command: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    command = " ".join(result.args)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def source_files() -> list[str]:
    """The tree as git sees it: tracked files still present, and new ones it does not ignore."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    return [f for f in ok(listed).stdout.split("\0") if f and os.path.lexists(REPO / f)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree without build leftovers, caches or virtual environments."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the wheel is built from the files git tracks")
    copy = tmp_path_factory.mktemp("source")
    for name in source_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name, follow_symlinks=False)
    return copy


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build isolation fetches the setuptools pyproject.toml asks for, as `pip install` would.
    dist = tmp_path_factory.mktemp("dist")
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", dist, source], cwd=dist))
    [built] = dist.glob("relay_bridge-*.whl")
    return built


def pip_into(python: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """This environment's pip, installing into the environment of ``python`` (which has no pip)."""
    return run([sys.executable, "-m", "pip", "--python", python, *args], cwd=WHEELHOUSE)


def install(python: Path, *requirements: str | Path, deps: bool = True) -> None:
    """Install from the wheelhouse; fill it from the registry with what it lacks first if needed."""
    offline = ["install", "--quiet", "--no-compile", "--no-index", "--find-links", WHEELHOUSE,
               *([] if deps else ["--no-deps"]), *requirements]
    if pip_into(python, *offline).returncode != 0:
        ok(run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", WHEELHOUSE,
                *([] if deps else ["--no-deps"]), *requirements], cwd=WHEELHOUSE))
        for stray in WHEELHOUSE.glob("relay_bridge-*.whl"):  # the wheel under test is no dependency
            stray.unlink()
        ok(pip_into(python, *offline))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel, its dependencies and the end-of-turn model."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("venv")
    ok(run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root))
    python = root / "bin" / "python"
    install(python, wheel)
    install(python, TURN_MODEL_WHEEL, deps=False)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A working directory outside the checkout."""
    assert not tmp_path.is_relative_to(REPO)
    yield tmp_path


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment without anything that would point the daemon at this checkout or its config."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RELAY_BRIDGE_", "PYTHON", "VIRTUAL_ENV", "NOTIFY_SOCKET", "WATCHDOG_"))
           and k != "CREDENTIALS_DIRECTORY"}
    env["CACHE_DIRECTORY"] = str(tmp_path / "cache")  # the model cache, as under systemd
    return env


def test_the_wheel_holds_the_package_its_data_and_nothing_else(wheel: Path, source: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        data = {str(p.relative_to(source)) for pattern in PACKAGE_DATA for p in source.glob(pattern)}
        assert any(name.endswith(".wav") for name in data)  # the bundled clips the demo speaks
        assert data <= names, sorted(data - names)
        modules = {str(p.relative_to(source)) for p in (source / "relay_bridge").rglob("*.py")}
        assert modules <= names, sorted(modules - names)
        manifest = "relay_bridge/engines/manifest.toml"
        assert zf.read(manifest) == (source / manifest).read_bytes()
        tops = {name.split("/")[0] for name in names}  # no tests/, benchmarks/, models/ or config/
        [dist_info] = [t for t in tops if t.endswith(".dist-info")]
        assert tops == {"relay_bridge", dist_info}, tops
        assert "relay-bridge = relay_bridge.cli:main" in zf.read(f"{dist_info}/entry_points.txt").decode()


def test_the_command_runs_the_installed_package(venv: Path, outside: Path) -> None:
    env = clean_env(outside)
    where = ok(run([venv / "bin" / "python", "-c", "import relay_bridge; print(relay_bridge.__file__)"],
                   cwd=outside, env=env)).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert ok(run([venv / "bin" / "relay-bridge", "--version"], cwd=outside, env=env)).stdout.strip() == (
        f"relay-bridge {version}")


def test_check_finds_every_model_in_the_fresh_environment(venv: Path, outside: Path) -> None:
    """``relay-bridge check`` on a deployment's config, the token handed over as a systemd credential."""
    credentials = outside / "credentials"
    credentials.mkdir()
    (credentials / "twilio_auth_token").write_text("0123456789abcdef0123456789abcdef\n")
    config = outside / "relay-bridge.toml"
    config.write_text('[server]\napp_url = "wss://app.example.com/relay"\n'
                      'public_url = "wss://bridge.example.com/media"\n')
    env = clean_env(outside) | {"CREDENTIALS_DIRECTORY": str(credentials)}
    result = ok(run([venv / "bin" / "relay-bridge", "check", "--config", config], cwd=outside, env=env))
    found = [line for line in result.stdout.splitlines() if "(package " in line]
    # The speech model, the voice and the end-of-turn model, each from the fresh environment.
    assert len(found) == 3 and all(str(venv) in line for line in found), result.stdout
    assert "end-of-turn model" in result.stdout
    assert str(REPO) not in result.stdout + result.stderr
    assert "ok: the config and every model it names are good" in result.stdout, result.stdout + result.stderr


def test_demo_runs_a_call_with_the_real_models(venv: Path, outside: Path) -> None:
    out = outside / "out"
    result = ok(run([venv / "bin" / "relay-bridge", "demo", "--out", out], cwd=outside, env=clean_env(outside)))
    wav = out / "demo-call.wav"
    assert f"Call audio (left: caller, right: what the caller heard): {wav}" in result.stdout
    assert "Demo finished in" in result.stdout, result.stdout
    assert "no end-of-turn model" not in result.stderr, result.stderr
    with wave.open(str(wav)) as w:
        assert w.getnchannels() == 2
        assert w.getnframes() > 10 * w.getframerate()  # the call lasts well over ten seconds
