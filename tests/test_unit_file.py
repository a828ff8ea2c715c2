"""config/relay-bridge.service: the sandbox it sets up, a reason for every hardening check it leaves
open, systemd's own reading of it, and the daemon starting under its system call filter."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import pytest

from relay_bridge.config import SECRETS
from relay_bridge.settings import ServerSettings

UNIT = Path(__file__).resolve().parents[1] / "config" / "relay-bridge.service"
EXECUTABLE = "/opt/relay-bridge/venv/bin/relay-bridge"  # where the install puts the wheel's command
FALSE = ("no", "false", "0", "off")

# What `systemd-analyze security` scores: each must be set in the unit, or said in a comment
# ("# Name= is off: ...") why it is not.
HARDENING_CHECKS = (
    "DynamicUser", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
    "PrivateNetwork", "PrivateUsers", "PrivateMounts", "ProtectKernelTunables", "ProtectKernelModules",
    "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc",
    "ProcSubset", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
    "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter", "RestrictAddressFamilies",
    "CapabilityBoundingSet", "DeviceAllow", "IPAddressDeny", "RemoveIPC", "RootDirectory", "UMask",
)
# The groups of system calls that check asks to filter, and the ones @system-service leaves out.
FILTER_CHECKS = ("@clock", "@cpu-emulation", "@debug", "@module", "@mount", "@obsolete", "@privileged",
                 "@raw-io", "@reboot", "@resources", "@swap")
NOT_IN_SYSTEM_SERVICE = {"@clock", "@cpu-emulation", "@debug", "@module", "@mount", "@obsolete", "@raw-io",
                         "@reboot", "@swap"}
MAX_EXPOSURE = 2.0  # systemd-analyze security's score for this unit (0 best, 10 worst); it was 1.5


def unit_text() -> str:
    return UNIT.read_text(encoding="utf-8")


def settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting, in order; a key may repeat."""
    found = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line!r}"
        found.append((section, key.strip(), value.strip()))
    return found


def values(key: str) -> list[str]:
    return [v for _, k, v in settings(unit_text()) if k == key]


def value(key: str) -> str:
    found = values(key)
    assert len(found) == 1, f"{key}= is set {len(found)} times"
    return found[0]


def explanations(text: str) -> str:
    """The unit's comments, less commented-out settings ("#LoadCredential=...")."""
    return "\n".join(line for line in text.splitlines()
                     if line.startswith("#") and not re.match(r"#[A-Z][A-Za-z]*=", line))


def is_true(v: str) -> bool:
    return v.lower() in ("yes", "true", "1", "on")


def test_the_daemon_runs_sandboxed_as_a_dynamic_user() -> None:
    assert value("Type") == "notify"
    assert is_true(value("DynamicUser"))
    assert is_true(value("PrivateUsers"))
    assert value("ProtectProc") == "invisible"
    assert value("ProtectSystem") == "strict"
    assert is_true(value("NoNewPrivileges"))
    assert value("CapabilityBoundingSet") == ""
    assert value("CacheDirectory") == "relay-bridge"  # the model cache ($CACHE_DIRECTORY, daemon.model_cache_dir)


def test_system_calls_are_filtered_but_the_engines_keep_what_they_use() -> None:
    filters = values("SystemCallFilter")
    assert filters[0] == "@system-service"
    denied = {group for f in filters if f.startswith("~") for group in f[1:].split()}
    assert "@privileged" in denied
    # setpriority() lowers the engine threads below the event loop (call/engines.py).
    assert "@resources" not in denied
    assert value("SystemCallErrorNumber") == "EPERM"
    # CTranslate2 compiles kernels at run time; /proc/cpuinfo tells ONNX Runtime the CPU's features.
    assert not any(is_true(v) for v in values("MemoryDenyWriteExecute"))
    assert "pid" not in values("ProcSubset")


def test_every_hardening_check_is_set_or_said_why_not() -> None:
    text = unit_text()
    comments = explanations(text)
    set_keys = {k: v for _, k, v in settings(text)}
    for name in HARDENING_CHECKS:
        if name in set_keys:
            assert set_keys[name].lower() not in FALSE, f"{name}={set_keys[name]}: turned off, say why instead"
        else:
            assert f"{name}=" in comments, f"{name}= is neither set nor explained"
    denied = {g for f in values("SystemCallFilter") if f.startswith("~") for g in f[1:].split()}
    assert values("SystemCallFilter")[0] == "@system-service"
    for group in FILTER_CHECKS:
        assert group in NOT_IN_SYSTEM_SERVICE or group in denied or f"~{group}" in comments, (
            f"{group} is allowed by @system-service: deny it or say why not")


def test_secrets_come_as_credentials_the_config_loader_reads() -> None:
    text = unit_text()
    for name in SECRETS:
        assert re.search(rf"^#?LoadCredential={name}:/\S+$", text, re.MULTILINE), f"no LoadCredential= for {name}"


def test_it_runs_the_installed_wheel_and_outlasts_the_shutdown_grace() -> None:
    command = value("ExecStart").split()
    assert command[:2] == [EXECUTABLE, "serve"]
    text = unit_text()
    assert ".venv" not in text and "pip install -e" not in text, "the daemon runs from a wheel, not a checkout"
    assert float(value("TimeoutStopSec")) > ServerSettings().shutdown_grace_s
    assert float(value("WatchdogSec")) > 0
    assert value("RestartPreventExitStatus") == "2"  # a config or model error: restarting cannot help


# systemd's own reading of the unit, where systemd-analyze is installed.

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def installable_copy(tmp_path: Path) -> Path:
    """The unit, its ExecStart pointing at an executable that exists here (verify checks that)."""
    fake = tmp_path / "relay-bridge"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(unit_text().replace(EXECUTABLE, str(fake)))
    return copy


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    copy = installable_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys and bad values: what it says about the unit is the verdict.
    said = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not said, "\n".join(said) or result.stderr


@needs_systemd_analyze
def test_systemd_analyze_security_leaves_open_only_what_the_unit_explains(tmp_path: Path) -> None:
    copy = installable_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(copy)],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze cannot score a unit file offline: {result.stderr.strip()}")
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, result.stdout
    comments = explanations(unit_text())
    open_checks = [line.split()[1] for line in result.stdout.splitlines() if line.split()[:1] in (["✗"], ["-"])]
    assert open_checks  # the unit serves the network: PrivateNetwork= stays open
    for check in open_checks:
        _, _, rest = check.partition("=")
        if rest.startswith("~"):  # SystemCallFilter=~@resources, RestrictAddressFamilies=~AF_UNIX
            assert rest in comments, f"{check} is open and the unit does not say why"
        else:  # ProcSubset=, RootDirectory=/RootImage=
            for name in check.split("/"):
                assert name in comments, f"{check} is open and the unit does not say why"


# The daemon under the unit's system call filter (loaded as systemd loads it, with libseccomp).


@cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a systemd group such as @system-service, its nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= syscall_group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def unit_filter() -> tuple[frozenset[str], int]:
    """The system calls the unit allows, and the errno the others fail with."""
    allowed: set[str] = set()
    for f in values("SystemCallFilter"):
        deny = f.startswith("~")
        names: set[str] = set()
        for item in f.removeprefix("~").split():
            names |= syscall_group(item) if item.startswith("@") else {item}
        if deny:
            allowed -= names
        else:
            allowed |= names
    return frozenset(allowed), getattr(errno, value("SystemCallErrorNumber"))


def sandboxed(command: list[str]) -> list[str]:
    allowed, err = unit_filter()
    mdwe = ["--mdwe"] if any(is_true(v) for v in values("MemoryDenyWriteExecute")) else []
    return [sys.executable, str(Path(__file__).with_name("sandbox_exec.py")), "--errno", str(err),
            "--allow", ",".join(sorted(allowed)), *mdwe, "--", *command]


@pytest.mark.models
@needs_systemd_analyze
@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")
def test_serve_loads_the_models_and_stops_under_the_units_filter(tmp_path: Path) -> None:
    """Model loading and warm-up (CTranslate2, ONNX Runtime, their thread pools), listening, READY=1
    and a clean stop on SIGTERM, with every system call outside the unit's filter refused."""
    # The filter is really loaded: setuid() (@privileged) fails with the unit's errno.
    probe = subprocess.run(sandboxed([sys.executable, "-c", "import os; os.setuid(os.getuid())"]),
                           capture_output=True, text=True, timeout=60)
    if probe.returncode == 77:
        pytest.skip(f"cannot load a seccomp filter here: {probe.stderr.strip()}")
    assert probe.returncode == 1 and "PermissionError" in probe.stderr, probe.stderr

    credentials = tmp_path / "credentials"  # as LoadCredential= hands it over
    credentials.mkdir()
    (credentials / "twilio_auth_token").write_text("0123456789abcdef0123456789abcdef\n")
    config = tmp_path / "relay-bridge.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:0"\nadmin_listen = ""\napp_url = "ws://127.0.0.1:9/app"\n'
                      'public_url = "wss://bridge.example.com/media"\n')
    notify_dir = tempfile.mkdtemp(dir="/tmp")  # a unix socket path must be short
    notify_path = os.path.join(notify_dir, "notify")
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_BRIDGE_")}
    env.update(NOTIFY_SOCKET=notify_path, CREDENTIALS_DIRECTORY=str(credentials),
               CACHE_DIRECTORY=str(tmp_path / "cache"))
    command = [str(Path(sys.executable).with_name("relay-bridge")), "serve", "--config", str(config)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, log.open("wb") as out:
        notify.bind(notify_path)
        notify.settimeout(0.5)
        proc = subprocess.Popen(sandboxed(command), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            messages = ""
            while "READY=1" not in messages:  # the daemon handles SIGTERM from then on
                assert proc.poll() is None, "the daemon exited before it was ready:\n" + log.read_text()
                assert time.monotonic() < deadline, "not ready after 120 s:\n" + log.read_text()
                with contextlib.suppress(TimeoutError):
                    messages += notify.recv(4096).decode() + "\n"
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(notify_dir, ignore_errors=True)
    text = log.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text and " ERROR " not in text, text
    assert "listening on ws://127.0.0.1:" in text and "stopped after 0 call(s)" in text, text
