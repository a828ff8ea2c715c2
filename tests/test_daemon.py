"""The real daemon process: ``relay-bridge serve`` as a user runs it (marked ``models``)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import trio

from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.scoring import wer
from relay_bridge.sim.timeline import Timeline
from tests.test_admin import get, samples, value

pytestmark = pytest.mark.models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for_port(port: int, proc: trio.Process) -> None:
    """The bridge is ready when its port accepts connections."""
    while True:
        assert proc.returncode is None, "the daemon exited before it was ready"
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.1)
            continue
        await stream.aclose()
        return


async def terminate(proc: trio.Process) -> int:
    """Stop the daemon as systemd does: SIGTERM, then its exit status (within 10 s)."""
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        return await proc.wait()


async def http_get(port: int, path: str) -> tuple[int, str]:
    """A plain GET of the admin listener: the status and body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        status, _, body = await get(stream, path)
    return status, body


async def first_admin_answer(port: int, proc: trio.Process) -> tuple[tuple[int, str], tuple[int, str]]:
    """/healthz and /readyz as soon as the admin listener answers (while the models load)."""
    while True:
        assert proc.returncode is None, "the daemon exited before its admin listener opened"
        try:
            return await http_get(port, "/healthz"), await http_get(port, "/readyz")
        except OSError:
            await trio.sleep(0.05)


def test_serve_answers_a_call_and_stops_cleanly_on_sigterm(tmp_path: Path, clips: dict[str, Clip]) -> None:
    """... under a systemd-like supervisor: READY=1, WATCHDOG=1 pings with STATUS=, then STOPPING=1; its
    admin listener says it is alive but not ready while the models load, then ready, and counts the call."""
    port, admin_port = free_port(), free_port()
    admin: dict[str, object] = {}
    notify_dir = tempfile.mkdtemp(dir="/tmp")  # a unix socket path must be short
    notify_path = os.path.join(notify_dir, "notify")
    messages: list[str] = []
    log = tmp_path / "daemon.log"
    agents: list[ScriptedAgent] = []
    returncode: list[int | None] = []

    async def main() -> None:
        timeline = Timeline()
        agent = ScriptedAgent(timeline, AgentScript(greeting="Hello.", answer=lambda heard, turn: f"You said {heard}"))
        agents.append(agent)
        notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await notify.bind(notify_path)

        async def supervise() -> None:  # systemd's side of NOTIFY_SOCKET
            while True:
                messages.append((await notify.recv(4096)).decode())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervise)
            app_port = await nursery.start(agent.serve, "127.0.0.1", 0)
            config = tmp_path / "relay-bridge.toml"
            config.write_text(f'[server]\nallow_unauthenticated = true\nadmin_listen = "127.0.0.1:{admin_port}"\n')
            env = {**os.environ, "RELAY_BRIDGE_CONFIG": str(config), "NOTIFY_SOCKET": notify_path,
                   "WATCHDOG_USEC": "400000"}
            with log.open("wb") as out:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "relay_bridge.cli", "serve", "--listen", f"127.0.0.1:{port}",
                     "--app-url", f"ws://127.0.0.1:{app_port}"], stdout=out, stderr=subprocess.STDOUT, env=env)
                try:
                    with trio.fail_after(60):
                        admin["loading"] = await first_admin_answer(admin_port, proc)
                        await wait_for_port(port, proc)
                    admin["ready"] = await http_get(admin_port, "/readyz")

                    async def script(caller: SimulatedCaller) -> None:
                        with trio.fail_after(30):
                            await caller.wait_agent_done(quiet_s=0.4)
                            await caller.say(clips["agent-pass"])
                            await caller.wait_agent_done(quiet_s=0.4)
                        await caller.hang_up()

                    await SimulatedCaller(f"ws://127.0.0.1:{port}/media", timeline).run(script)
                    await trio.sleep(0.3)  # the call's end is counted as its socket closes
                    admin["metrics"] = await http_get(admin_port, "/metrics")
                    proc.send_signal(signal.SIGUSR1)  # one statistics line
                    await trio.sleep(0.5)
                    returncode.append(await terminate(proc))
                finally:
                    if proc.returncode is None:
                        proc.kill()
            nursery.cancel_scope.cancel()
        notify.close()

    trio.run(main)
    output = log.read_text()
    assert returncode == [0], output
    shutil.rmtree(notify_dir)
    assert messages[0] == "READY=1" and "STOPPING=1" in messages
    pings = [m for m in messages if m.startswith("WATCHDOG=1\nSTATUS=")]
    assert len(pings) >= 5  # every 0.2 s (half the 0.4 s WatchdogSec) while the call went on
    assert any("1 call(s) in progress" in m for m in pings) and any("0 call(s) in progress" in m for m in pings)
    assert "listening on ws://127.0.0.1:" in output
    assert f"config: {tmp_path / 'relay-bridge.toml'} ($RELAY_BRIDGE_CONFIG)" in output
    assert "WARNING" in output and "calls are not authenticated" in output
    assert re.search(r"stats: tasks=\d+ py_blocks=\d+ ", output) and "calls_total=1" in output
    assert "SIGTERM received" in output and "stopped after 1 call(s)" in output
    assert admin["loading"] == ((200, "alive\n"), (503, "not ready: loading models\n"))
    assert admin["ready"] == (200, "ready: 0 call(s) in progress\n")
    status, exposition = admin["metrics"]  # type: ignore[misc]
    scraped = samples(exposition)
    assert status == 200 and value(scraped, "relay_bridge_calls_total", reason="provider_stopped") == 1
    assert value(scraped, "relay_bridge_end_of_speech_to_prompt_seconds_count") == 1
    assert value(scraped, "relay_bridge_first_token_to_audio_seconds_count") == 1
    assert f"admin endpoints on http://127.0.0.1:{admin_port}/" in output
    assert re.search(r"turn 1: end of speech to prompt \d+ ms, app's first token \d+ ms, first token to first "
                     r"audio \d+ ms", output)
    assert re.search(r"call ended: provider sent stop after [\d.]+ s, 1 turn\(s\), 0 barge-in\(s\); end of "
                     r"speech to prompt p50 \d+ ms / max \d+ ms", output)
    session = agents[0].sessions[0]
    assert session.setup is not None and session.setup.session_id.startswith("VX")
    assert len(session.prompts) == 1 and wer([(clips["agent-pass"].text, session.prompts[0].voice_prompt)]) <= 0.2


def test_a_sigterm_as_soon_as_the_daemon_is_ready_stops_it_cleanly(tmp_path: Path) -> None:
    """A supervisor may stop the daemon the moment it reports READY=1: the signal is already its to handle."""
    notify_dir = tempfile.mkdtemp(dir="/tmp")
    notify_path = os.path.join(notify_dir, "notify")
    config = tmp_path / "relay-bridge.toml"
    config.write_text('[server]\nallow_unauthenticated = true\nadmin_listen = ""\n')
    returncode: list[int] = []

    async def main() -> None:
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            await notify.bind(notify_path)
            env = {**os.environ, "NOTIFY_SOCKET": notify_path}
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "relay_bridge.cli", "serve", "--listen", f"127.0.0.1:{free_port()}",
                 "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            try:
                with trio.fail_after(60):
                    while (await notify.recv(4096)).decode() != "READY=1":
                        pass
                returncode.append(await terminate(proc))
            finally:
                if proc.returncode is None:
                    proc.kill()

    trio.run(main)
    shutil.rmtree(notify_dir)
    assert returncode == [0]


def test_serve_refuses_a_bad_config_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vad]\nspeech_start_msx = 3\n")
    proc = subprocess.run([sys.executable, "-m", "relay_bridge.cli", "serve", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown key 'vad.speech_start_msx'" in proc.stderr


def test_a_missing_config_named_by_the_environment_is_an_error(tmp_path: Path) -> None:
    env = {**os.environ, "RELAY_BRIDGE_CONFIG": str(tmp_path / "missing.toml")}
    proc = subprocess.run([sys.executable, "-m", "relay_bridge.cli", "serve"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2
    assert "cannot read config" in proc.stderr


def test_serve_without_any_authentication_exits_2_naming_both_ways_out() -> None:
    shipped = Path(__file__).parents[1] / "config/relay-bridge.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    proc = subprocess.run([sys.executable, "-m", "relay_bridge.cli", "serve", "--config", str(shipped)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "server.twilio_auth_token" in proc.stderr and "server.telnyx_stream_token" in proc.stderr
    assert "server.allow_unauthenticated = true" in proc.stderr


def test_a_twilio_token_without_public_url_is_a_startup_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\ntwilio_auth_token = "secret"\n')
    proc = subprocess.run([sys.executable, "-m", "relay_bridge.cli", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "twilio_auth_token needs public_url" in proc.stderr


def test_the_config_origin_says_which_file_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay_bridge.cli import config_origin

    given = tmp_path / "a.toml"
    assert config_origin(given, given) == f"{given} (--config)"
    monkeypatch.delenv("RELAY_BRIDGE_CONFIG", raising=False)
    assert config_origin(None, None).startswith("no file: the built-in defaults")
    assert config_origin(None, Path("/etc/relay-bridge/relay-bridge.toml")).endswith("(the default location)")
    monkeypatch.setenv("RELAY_BRIDGE_CONFIG", str(given))
    assert config_origin(None, given) == f"{given} ($RELAY_BRIDGE_CONFIG)"


async def test_watchdog_pings_come_from_the_event_loop_and_stop_when_it_is_blocked() -> None:
    from relay_bridge.daemon import notify_systemd, watchdog_interval

    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process's
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "x"}) is None

    class Server:
        active_calls = pending = calls_total = 0

        async def wait_idle(self) -> None:
            pass

    pings: list[float] = []
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notify_systemd, Server(), shutdown, 0.05, lambda state: pings.append(time.monotonic()))
        await trio.sleep(0.3)
        time.sleep(0.5)  # noqa: ASYNC251 -- the event loop is stuck on purpose: no pings
        await trio.sleep(0.3)
        shutdown.set()
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 8 and max(gaps) >= 0.5 and sorted(gaps)[len(gaps) // 2] < 0.1
