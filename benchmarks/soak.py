"""Soak test: the real daemon, N simulated calls back to back for M minutes; RSS, descriptors, errors.

Runs on purpose (``make soak``), never in CI. The daemon is started as a subprocess
(``python -m relay_bridge.cli serve``) on a free loopback port with a generated config and the real
models; the example app (``ScriptedAgent``) runs in this process on another loopback port. N call
slots each run simulated Twilio calls (``SimulatedCaller`` over a real WebSocket to ``/media``) one
after another until M minutes have passed. A call lasts a seeded random 20-40 s: it hears the
greeting, then alternates pauses with turns: a bundled clip and the reply, now and then a barge-in
(a second clip over the reply) or a key press, then hangs up with ``stop``. One call runs alone
first (the warm-up call) to set the descriptor baseline.

Targets (from the issue): 20 calls x 60 min, RSS growth under 5% after the first 5 minutes, no
errors, no leaked descriptors. The exit status is 0 when all are met, 1 when not, 2 when the run
could not start (bad config, the daemon did not come up).

Measured:
  rss            VmRSS of the daemon every ``--sample-s``. Growth is the median of the last
                 ``--window-min`` minutes of the soak against the median of the ``--window-min`` minutes
                 after ``--warmup-min``, in percent. (RSS swings by tens of MiB with the calls in flight,
                 so a window of a few minutes, not one sample or one minute, says where it stands.) The
                 Theil-Sen slope of the samples after the warm-up, in MiB per hour, is reported beside it.
  py_blocks      the daemon's Python heap (``sys.getallocatedblocks``, from its statistics line): growth
                 over the same windows. A leak of Python objects shows here, whatever the allocator does.
  fds            open descriptors (/proc/PID/fd). Leaked: the count once every call has ended and the
                 daemon has settled, minus the count after the warm-up call (up to 15 s are allowed for
                 it to come back down).
  threads, cpu_s from /proc/PID/status and /proc/PID/stat.
  tasks          the daemon's live trio tasks: each sample sends the daemon SIGUSR1, which makes it log
                 one "stats: tasks=N ..." line, and reads the newest such line from its log. Growth
                 is the tasks left once every call has ended, against those after the warm-up call.
  late frames    at the callers. Each outbound media message is one 20 ms frame. A frame is late when
                 it arrived more than LATE_GAP_MS after the previous one *of the same reply*: a gap that
                 contains something that starts a new reply (the caller starting to speak or pressing a
                 key, or a ``clear``) is not counted, however long. Late frames that arrived after the
                 caller's playout buffer had run dry (the gap exceeded the audio buffered when the
                 previous frame arrived) are also counted as ``audible``. A gap during which this
                 process's own event loop stalled (``harness`` stalls, over HARNESS_STALL_MS) is
                 counted apart, as ``late_harness``: it says nothing about the daemon.
  ping_rtt_ms    WebSocket pings from each simulated caller to the daemon every PING_EVERY_S: how long the
                 daemon took to read a frame on a call's socket (its reader stalls show here first).
  response_ms    end of a caller's clip (last voiced frame sent), or a key press, to the first frame of
                 the reply at the caller. It includes the end-of-speech silence (vad) for speech. A
                 reply later than SLOW_REPLY_S is counted as slow (the daemon is over capacity: a latency
                 figure, reported); one that never comes within LOST_REPLY_S is an error.
  errors         calls that ended abnormally (a connection error or exception, no greeting or reply
                 within LOST_REPLY_S, the bridge closing the call first, an invalid frame at the
                 caller, no setup or an ``error`` message at the app, fewer final prompts than clips
                 spoken, the app's socket still open APP_CLOSE_TIMEOUT_S after the hang-up), ERROR
                 records and unlogged tracebacks in the daemon's log (written next to ``--out``), and
                 the daemon not exiting 0 on SIGTERM. Known failures of the simulated caller's own
                 WebSocket library after it hung up are listed under ``harness`` and not counted.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio
from machine import machine
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto.utilities import LocalProtocolError

from relay_bridge.config import ConfigError, load
from relay_bridge.loopback import first_after
from relay_bridge.server import ServerSettings
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller, Spoken
from relay_bridge.sim.clips import Clip, bundled_clips
from relay_bridge.sim.timeline import Timeline

LATE_GAP_MS = 60.0
GAP_BUCKETS_MS = ((60, 100), (100, 200), (200, 500), (500, 1000), (1000, 1_000_000))
HARNESS_STALL_MS = 20.0  # a lag of this process's event loop that could delay a frame's arrival
HARNESS_TICK_S = 0.01
PING_EVERY_S = 2.0
PING_TIMEOUT_S = 15.0  # past the daemon's own pong deadline (10 s): the call is over by then
SLOW_REPLY_S = 30.0  # a greeting or reply later than this is slow (recognition queues under load)
LOST_REPLY_S = 120.0  # and one that has not come by now is lost: an error
APP_CLOSE_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 180.0  # model loading and warm-up
STATS_WAIT_S = 0.3  # for the daemon to write its statistics line after SIGUSR1
STOP_TIMEOUT_S = 60.0  # past the default shutdown grace (30 s); no call should be left by then
FD_SETTLE_S = 15.0
BASELINE_SETTLE_S = 2.0
MAX_LOG_LINES = 20  # of each kind kept in the JSON
LOG_TAIL_LINES = 20  # of the daemon's log, shown when the run could not complete
KEY_PRESS_P = 0.15
BARGE_IN_P = 0.2
DIGITS = "0123456789*#"
GREETING = "Hello, this is the soak test. Go ahead."
LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


# -- the daemon from outside: /proc ------------------------------------------------------------


def proc_sample(pid: int) -> dict[str, Any] | None:
    """RSS (KiB), open descriptors, threads and CPU seconds of ``pid``; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None  # exited, not yet reaped (a zombie has no memory)
    after_comm = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; field 3 is index 0
    cpu_s = (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "fds": fds, "threads": int(fields["Threads"]),
            "tasks": None, "py_blocks": None, "cpu_s": round(cpu_s, 2)}


STATS_LINE = re.compile(rb"stats: tasks=(\d+) (?:py_blocks=(\d+) )?")


def last_stats(log_path: Path) -> tuple[int | None, int | None]:
    """Tasks and Python heap blocks from the newest statistics line the daemon logged (SIGUSR1), if any."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(0, log_path.stat().st_size - 65536))
            found = STATS_LINE.findall(f.read())
    except OSError:
        return None, None
    if not found:
        return None, None
    tasks, blocks = found[-1]
    return int(tasks), int(blocks) if blocks else None


def listening(port: int) -> bool:
    """Whether a socket listens on ``port``, without connecting (a bare connect is a logged warning)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            parts = row.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scan_log(path: Path) -> dict[str, Any]:
    """ERROR records, tracebacks not under one (a crash, "Exception ignored"), and WARNING records."""
    errors: list[str] = []
    warnings: list[str] = []
    unlogged = 0
    level = ""
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_RECORD.match(line)
        if m:
            level = m.group(1)
            if level in ("ERROR", "CRITICAL"):
                errors.append(line)
            elif level == "WARNING":
                warnings.append(line)
        elif line.startswith(("Traceback (most recent call last)", "Exception ignored")):
            if level not in ("ERROR", "CRITICAL"):
                unlogged += 1
                errors.append(line)
            level = ""
    return {"errors": len(errors), "unlogged_tracebacks": unlogged, "warnings": len(warnings),
            "error_lines": errors[:MAX_LOG_LINES], "warning_lines": warnings[:MAX_LOG_LINES]}


# -- the daemon's config ------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are valid in a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} as a TOML value")


def to_toml(data: dict[str, Any]) -> str:
    """The config's shape only: tables of scalars and arrays of tables (``[[languages]]``)."""
    lines: list[str] = []
    for name, body in data.items():
        tables = body if isinstance(body, list) else [body]
        if not all(isinstance(t, dict) for t in tables):
            raise ValueError(f"config: {name!r} must be a table or an array of tables")
        for table in tables:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            lines.append("")
    return "\n".join(lines)


def soak_config(calls: int, extra: Path | None) -> dict[str, Any]:
    """The daemon's config: quiet logs, room for every call, and ``extra`` (a TOML file) on top."""
    server: dict[str, Any] = {"max_calls": calls + 10}
    # The simulated caller does not sign its upgrades, so the daemon must accept unsigned ones. Only
    # daemons that know the setting require it (older ones reject it as an unknown key).
    known = {f.name for f in dataclasses.fields(ServerSettings)}
    if "allow_unauthenticated" in known:
        server["allow_unauthenticated"] = True
    if "admin_listen" in known:
        server["admin_listen"] = ""  # the soak reads the daemon's SIGUSR1 line; its fixed port may be taken

    # INFO: the daemon's statistics line (asked for with SIGUSR1 at every sample) is logged at INFO.
    data: dict[str, Any] = {"server": server, "logging": {"level": "INFO"}}
    if extra is not None:
        with extra.open("rb") as f:
            for name, body in tomllib.load(f).items():
                if isinstance(body, dict) and isinstance(data.get(name), dict):
                    data[name] = {**data[name], **body}
                else:
                    data[name] = body
    data["server"].pop("listen", None)  # the soak picks the ports
    data["server"].pop("app_url", None)
    if data["server"].get("twilio_auth_token"):
        raise ConfigError("server.twilio_auth_token: the simulated caller does not sign its requests; leave it empty")
    if data["server"].get("max_calls", ServerSettings.max_calls) < calls:
        raise ConfigError(f"server.max_calls must be at least --calls ({calls})")
    return data


# -- calls --------------------------------------------------------------------------------------


@dataclass
class CallRecord:
    slot: int
    index: int
    call_sid: str
    started: float  # monotonic clock
    ended: float = 0.0
    clips: int = 0
    keys: int = 0
    barge_ins: int = 0  # clips started while the agent was audibly replying
    clears: int = 0
    prompts: int = 0
    frames: int = 0
    late_frames: int = 0
    late_harness: int = 0
    audible: int = 0
    late_gaps_ms: list[float] = field(default_factory=list)
    late_into_reply_ms: list[float] = field(default_factory=list)  # how far into its reply each came
    response_ms: list[float] = field(default_factory=list)
    ping_rtt_ms: list[float] = field(default_factory=list)  # this harness's pings to the daemon, over /media
    errors: list[str] = field(default_factory=list)  # "kind: detail"
    harness_errors: list[str] = field(default_factory=list)  # the simulated caller's own, known failures


@dataclass
class Turns:
    """What the caller did, on the caller's clock: reply boundaries and the ends that replies answer."""

    starts: list[float] = field(default_factory=list)  # speech started (queued) or a key pressed
    ends: list[float] = field(default_factory=list)  # end of speech, or the key press


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]


def known_harness_bug(exc: BaseException) -> bool:
    """trio-websocket answering a ping after the caller began closing (python-trio/trio-websocket#184).

    The daemon's keep-alive pings make it likely at every hang-up; it is the simulated caller's
    library failing after the call is over, not the daemon.
    """
    return all(isinstance(e, LocalProtocolError) and "Pong" in str(e) and "LOCAL_CLOSING" in str(e)
               for e in leaves(exc))


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))], 1)


def growth(samples: list[dict[str, Any]], key: str, warmup_s: float, window_s: float) -> dict[str, Any]:
    """``key``'s median over the last ``window_s`` of ``samples`` against its median over the
    ``window_s`` after ``warmup_s``, in percent."""
    if not samples:
        return {"growth_pct": None}
    end = samples[-1]["t_s"]
    early = [s[key] for s in samples if warmup_s <= s["t_s"] < warmup_s + window_s]
    last = [s[key] for s in samples if s["t_s"] > end - window_s]
    out: dict[str, Any] = {"early_window_s": [warmup_s, warmup_s + window_s],
                           "last_window_s": [round(end - window_s, 1), end],
                           "median_early": statistics.median(early) if early else None,
                           "median_last": statistics.median(last) if last else None, "growth_pct": None}
    if early and last and end - window_s >= warmup_s:
        out["growth_pct"] = round((statistics.median(last) / statistics.median(early) - 1) * 100, 2)
    return out


def theil_sen(xs: list[float], ys: list[float], max_points: int = 1000) -> float | None:
    """The median of the slopes between every pair of points (robust to the swings of a busy daemon)."""
    step = max(1, len(xs) // max_points)
    xs, ys = xs[::step], ys[::step]
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    return statistics.median(slopes) if slopes else None


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 0.5), "p90": pct(values, 0.9), "p99": pct(values, 0.99),
            "max": pct(values, 1.0)}


class Soak:
    def __init__(self, args: argparse.Namespace, log: IO[bytes], config_path: Path, log_path: Path) -> None:
        self.args = args
        self.log = log
        self.log_path = log_path
        self.config_path = config_path
        self.clips: list[Clip] = list(bundled_clips("en").values())
        self.agent = ScriptedAgent(Timeline(t0=0.0), AgentScript(  # t0: built before trio runs
            greeting=GREETING, answer=lambda heard, turn: f"I heard: {heard}",
            on_key=lambda digit: f"You pressed {digit}."))
        self.url = ""
        self.proc: trio.Process | None = None
        self.command: list[str] = []
        self.phase = "startup"
        self.t0 = 0.0  # monotonic time the soak (the call slots) started
        self.active = 0
        self.records: list[CallRecord] = []
        self.warmup: CallRecord | None = None
        self.samples: list[dict[str, Any]] = []
        self.stalls: list[tuple[float, float]] = []  # this process's event loop, (start, end)
        self.max_lag_ms = 0.0
        self.baseline: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.failures: list[str] = []  # of the run, not of a call: the daemon died, did not stop
        self.startup_s = 0.0
        self.exit_status: int | None = None

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            app_port = await nursery.start(self.agent.serve, "127.0.0.1", 0)
            port = free_port()
            self.url = f"ws://127.0.0.1:{port}/media"
            self.command = [sys.executable, "-m", "relay_bridge.cli", "serve", "--listen", f"127.0.0.1:{port}",
                            "--app-url", f"ws://127.0.0.1:{app_port}", "--config", str(self.config_path)]
            started = trio.current_time()
            self.proc = await trio.lowlevel.open_process(self.command, stdin=subprocess.DEVNULL,
                                                         stdout=self.log, stderr=self.log)
            try:
                nursery.start_soon(self._sample_loop)
                nursery.start_soon(self._watch_harness)
                await self._wait_ready(port)
                self.startup_s = trio.current_time() - started
                await self._calls()
                self.phase = "stop"
                await self._stop()
            finally:
                if self.proc.returncode is None:
                    self.proc.kill()
            nursery.cancel_scope.cancel()

    async def _wait_ready(self, port: int) -> None:
        assert self.proc is not None
        with trio.fail_after(READY_TIMEOUT_S):
            while not listening(port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with status {self.proc.returncode} before listening")
                await trio.sleep(0.2)

    async def _calls(self) -> None:
        self.phase = "warmup"
        self.warmup = await self._one_call(-1, 0)
        await trio.sleep(BASELINE_SETTLE_S)
        self.baseline = await self._take_sample()
        self.phase = "soak"
        self.t0 = trio.current_time()
        end_at = self.t0 + self.args.minutes * 60
        stagger = min(1.5, 30.0 / self.args.calls)  # spread the first calls, then the durations do
        async with trio.open_nursery() as slots:
            for slot in range(self.args.calls):
                slots.start_soon(self._slot, slot, self.t0 + slot * stagger, end_at)
        self.phase = "drain"
        assert self.baseline is not None
        with trio.move_on_after(FD_SETTLE_S):  # sockets of the last calls may still be closing
            while True:
                s = await self._take_sample()
                if s is None or s["fds"] <= self.baseline["fds"]:
                    break
                await trio.sleep(0.5)
        self.final = await self._take_sample()

    async def _slot(self, slot: int, start_at: float, end_at: float) -> None:
        await trio.sleep_until(start_at)
        index = 0
        while trio.current_time() < end_at and not self.failures:
            self.records.append(await self._one_call(slot, index))
            index += 1

    async def _stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_S):
            await self.proc.wait()
        if self.proc.returncode is None:
            self.failures.append(f"the daemon did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killed")
            self.proc.kill()
            await self.proc.wait()
        self.exit_status = self.proc.returncode
        if self.exit_status != 0:
            self.failures.append(f"the daemon exited with status {self.exit_status} on SIGTERM")

    # -- sampling -------------------------------------------------------------------------------

    async def _take_sample(self) -> dict[str, Any] | None:
        assert self.proc is not None
        s = proc_sample(self.proc.pid)
        if s is not None and self.proc.returncode is None and self.phase != "startup":
            self.proc.send_signal(signal.SIGUSR1)
            await trio.sleep(STATS_WAIT_S)
            s["tasks"], s["py_blocks"] = last_stats(self.log_path)
        if s is not None:
            s.update(t=trio.current_time(), phase=self.phase, active_calls=self.active,
                     calls_done=len(self.records))
            self.samples.append(s)
        return s

    async def _sample_loop(self) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None and self.phase != "stop":
                self.failures.append(f"the daemon exited with status {self.proc.returncode} during the {self.phase}")
                return
            await self._take_sample()
            self.agent.timeline.entries.clear()  # nothing reads the app's timeline; keep this process flat
            await trio.sleep(self.args.sample_s)

    async def _watch_harness(self) -> None:
        """Record when this process's own event loop was too busy to deliver frames on time."""
        while True:
            t = trio.current_time()
            await trio.sleep(HARNESS_TICK_S)
            now = trio.current_time()
            lag_ms = (now - t - HARNESS_TICK_S) * 1000
            self.max_lag_ms = max(self.max_lag_ms, lag_ms)
            if lag_ms > HARNESS_STALL_MS:
                self.stalls.append((t + HARNESS_TICK_S, now))

    # -- one call -------------------------------------------------------------------------------

    async def _one_call(self, slot: int, index: int) -> CallRecord:
        rng = random.Random(f"{self.args.seed}:{slot}:{index}")
        sid = f"{slot + 1:08x}{index:024x}"
        rec = CallRecord(slot=slot, index=index, call_sid="CA" + sid, started=trio.current_time())
        caller = SimulatedCaller(self.url, Timeline(), call_sid=rec.call_sid, stream_sid="MZ" + sid)
        turns = Turns()
        duration = rng.uniform(self.args.call_min_s, self.args.call_max_s)

        async def reply(what: str) -> bool:
            with trio.move_on_after(LOST_REPLY_S) as scope:
                await caller.wait_agent_done(quiet_s=0.5)
            if caller.bridge_closed:
                rec.errors.append(f"bridge-closed: the bridge closed the call while the caller waited for {what}")
            elif scope.cancelled_caught:
                rec.errors.append(f"no-reply: no {what} within {LOST_REPLY_S:.0f} s")
            else:
                return True
            return False

        async def say(clip: Clip) -> Spoken:
            turns.starts.append(trio.current_time())
            spoken = caller.start_saying(clip)
            await caller.finish_saying()
            turns.ends.append(spoken.end)
            rec.clips += 1
            return spoken

        sockets: list[WebSocketConnection] = []

        @asynccontextmanager
        async def connect() -> AsyncIterator[WebSocketConnection]:
            async with open_websocket_url(self.url) as ws:
                sockets.append(ws)  # for the pinger
                yield ws

        async def ping(ws: WebSocketConnection) -> None:
            while True:
                await trio.sleep(PING_EVERY_S)
                t = trio.current_time()
                with trio.move_on_after(PING_TIMEOUT_S):
                    try:
                        await ws.ping()
                    except ConnectionClosed:
                        return
                rec.ping_rtt_ms.append(round((trio.current_time() - t) * 1000, 1))

        async def script(c: SimulatedCaller) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping, sockets[0])
                await converse(c)
                nursery.cancel_scope.cancel()
            await c.hang_up()

        async def converse(c: SimulatedCaller) -> None:
            ok = await reply("greeting")
            hang_up_at = rec.started + duration
            while ok and trio.current_time() + 6.0 < hang_up_at:  # room for a turn and its reply
                await c.pause(rng.uniform(1.5, 4.0))
                roll = rng.random()
                if roll < KEY_PRESS_P:
                    now = trio.current_time()
                    turns.starts.append(now)
                    turns.ends.append(now)
                    rec.keys += 1
                    await c.press(rng.choice(DIGITS))
                    ok = await reply("reply to a key")
                elif roll < KEY_PRESS_P + BARGE_IN_P:
                    await say(rng.choice(self.clips))
                    with trio.move_on_after(LOST_REPLY_S):
                        await c.wait_agent_audio()
                    await c.pause(rng.uniform(0.3, 1.0))
                    if trio.current_time() - c.ear.last_agent_frame_at < 0.1:  # still playing the reply
                        rec.barge_ins += 1
                    await say(rng.choice(self.clips))
                    ok = await reply("reply after a barge-in")
                else:
                    await say(rng.choice(self.clips))
                    ok = await reply("reply")
            if caller.bridge_closed and ok:
                rec.errors.append("bridge-closed: the bridge closed the call before the caller hung up")

        self.active += 1
        try:
            with trio.move_on_after(duration + 4 * LOST_REPLY_S) as backstop:
                await caller.run(script, connect)
            if backstop.cancelled_caught:
                rec.errors.append("hung: the call did not end")
        except Exception as exc:
            if known_harness_bug(exc):
                rec.harness_errors.append(describe(exc))
            else:
                rec.errors.append(f"exception: {describe(exc)}")
        finally:
            self.active -= 1
        rec.ended = trio.current_time()
        await self._check_app(rec)
        self._measure(rec, caller, turns)
        rec.errors += [f"invalid-frame: {reason}" for reason in caller.invalid_frames]
        return rec

    async def _check_app(self, rec: CallRecord) -> None:
        """The app's side of the call: it got set up, prompted, no errors, and its socket was closed."""
        sessions = [s for s in self.agent.sessions if s.setup is not None and s.setup.call_sid == rec.call_sid]
        if not sessions:
            if not any(e.startswith(("exception:", "hung:")) for e in rec.errors):
                rec.errors.append("no-setup: the app never got a setup for this call")
            return
        session = sessions[0]
        with trio.move_on_after(APP_CLOSE_TIMEOUT_S):
            await session.closed.wait()
        if not session.closed.is_set():
            rec.errors.append(f"app-not-closed: the app's socket was open {APP_CLOSE_TIMEOUT_S:.0f} s after hang-up")
        rec.prompts = len(session.prompts)
        if rec.prompts < rec.clips and not rec.errors:
            rec.errors.append(f"missed-prompt: {rec.clips} clips spoken, {rec.prompts} final prompts")
        rec.errors += [f"app-error: {e}" for e in session.errors]
        # Drop finished sessions (and any that never got a setup and are closed) to keep this process flat.
        self.agent.sessions[:] = [s for s in self.agent.sessions
                                  if s is not session and not (s.setup is None and s.closed.is_set())]

    def _measure(self, rec: CallRecord, caller: SimulatedCaller, turns: Turns) -> None:
        ear = caller.ear
        arrivals = ear.media_arrivals
        rec.frames = len(arrivals)
        rec.clears = len(ear.clears)
        boundaries = sorted(turns.starts + ear.clears)
        stall_ends = [e for _, e in self.stalls]
        reply_start = arrivals[0] if arrivals else 0.0
        for i in range(1, len(arrivals)):
            prev, cur = arrivals[i - 1], arrivals[i]
            gap_ms = (cur - prev) * 1000
            if gap_ms <= LATE_GAP_MS:
                continue
            b = bisect.bisect_right(boundaries, prev)
            if b < len(boundaries) and boundaries[b] <= cur:
                reply_start = cur
                continue  # a new reply
            s = bisect.bisect_left(stall_ends, prev)
            if s < len(self.stalls) and self.stalls[s][0] < cur:
                rec.late_harness += 1
                continue
            rec.late_frames += 1
            rec.late_gaps_ms.append(round(gap_ms, 1))
            rec.late_into_reply_ms.append(round((prev - reply_start) * 1000, 1))
            if gap_ms > ear.leads_ms[i - 1]:
                rec.audible += 1
        for i, end in enumerate(turns.ends):
            nxt = turns.starts[i + 1] if i + 1 < len(turns.starts) else float("inf")
            first = first_after(arrivals, end)
            if first is not None and first < nxt and first - end < LOST_REPLY_S:
                rec.response_ms.append((first - end) * 1000)

    # -- results --------------------------------------------------------------------------------

    def report(self, log_path: Path, config_text: str) -> dict[str, Any]:
        args = self.args
        records = self.records
        soak_samples = [s for s in self.samples if s["phase"] == "soak"]
        for s in self.samples:
            s["t_s"] = round(s.pop("t") - self.t0, 1) if self.t0 else None

        rss: dict[str, Any] = {"max_kib": max((s["rss_kib"] for s in self.samples), default=None),
                               **growth(soak_samples, "rss_kib", args.warmup_min * 60, args.window_min * 60)}
        after = [s for s in soak_samples if s["t_s"] >= args.warmup_min * 60]
        slope = theil_sen([s["t_s"] for s in after], [s["rss_kib"] for s in after])
        rss["slope_mib_per_hour"] = None if slope is None else round(slope * 3600 / 1024, 1)
        py_blocks = growth([s for s in soak_samples if s.get("py_blocks") is not None], "py_blocks",
                           args.warmup_min * 60, args.window_min * 60)

        leaked = None
        if self.baseline is not None and self.final is not None:
            leaked = max(0, self.final["fds"] - self.baseline["fds"])
        fds = {"baseline": self.baseline["fds"] if self.baseline else None,
               "final": self.final["fds"] if self.final else None, "leaked": leaked,
               "max": max((s["fds"] for s in self.samples), default=None)}

        tasks = {"baseline": self.baseline.get("tasks") if self.baseline else None,
                 "final": self.final.get("tasks") if self.final else None,
                 "max": max((s["tasks"] for s in self.samples if s.get("tasks") is not None), default=None)}
        tasks["leaked"] = None if tasks["baseline"] is None or tasks["final"] is None else \
            max(0, tasks["final"] - tasks["baseline"])

        log = scan_log(log_path)
        all_calls = records + ([self.warmup] if self.warmup else [])
        failed = [r for r in all_calls if r.errors]
        kinds: dict[str, int] = {}
        for r in failed:
            for e in r.errors:
                kind = e.split(":", 1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1
        errors = len(failed) + log["errors"] + len(self.failures)
        rss_growth = rss["growth_pct"]
        targets = {"rss_growth_pct_below": 5.0, "errors": 0, "leaked_fds": 0, "leaked_tasks": 0}
        checks = {"rss_growth": rss_growth is not None and rss_growth < 5.0, "errors": errors == 0,
                  "leaked_fds": leaked == 0, "leaked_tasks": tasks["leaked"] == 0}

        by_minute: dict[int, list[CallRecord]] = {}
        for r in records:
            by_minute.setdefault(int((r.ended - self.t0) // 60), []).append(r)
        per_minute = [{"minute": minute, "calls": len(ended), "failed": sum(1 for r in ended if r.errors),
                       "late_frames": sum(r.late_frames for r in ended),
                       "ping_rtt_ms": summary([x for r in ended for x in r.ping_rtt_ms]),
                       "response_ms_p50": pct([x for r in ended for x in r.response_ms], 0.5)}
                      for minute, ended in sorted(by_minute.items())]

        frames = sum(r.frames for r in all_calls)
        late_gaps = [g for r in all_calls for g in r.late_gaps_ms]
        harness_errors = [e for r in all_calls for e in r.harness_errors]
        return {
            "params": {"calls": args.calls, "minutes": args.minutes, "sample_s": args.sample_s,
                       "warmup_min": args.warmup_min, "window_min": args.window_min, "seed": args.seed,
                       "call_s": [args.call_min_s, args.call_max_s], "late_gap_ms": LATE_GAP_MS},
            "pass": all(checks.values()),
            "targets": targets,
            "checks": checks,
            "daemon": {"command": self.command, "config": config_text, "log": str(log_path),
                       "startup_s": round(self.startup_s, 1), "exit_status": self.exit_status},
            "rss": rss,
            "fds": fds,
            "tasks": tasks,
            "py_blocks": py_blocks,
            "errors": {"total": errors, "failed_calls": len(failed), "by_kind": kinds, "daemon_log": log["errors"],
                       "run": self.failures,
                       "calls": [{"slot": r.slot, "index": r.index, "call_sid": r.call_sid, "errors": r.errors}
                                 for r in failed[:50]]},
            "daemon_log": log,
            "calls": {"completed": len(records), "warmup": dataclasses.asdict(self.warmup) if self.warmup else None,
                      "clips": sum(r.clips for r in records), "keys": sum(r.keys for r in records),
                      "barge_ins": sum(r.barge_ins for r in records), "clears": sum(r.clears for r in records),
                      "prompts": sum(r.prompts for r in records),
                      "response_ms": summary([x for r in records for x in r.response_ms]),
                      "slow_replies": sum(1 for r in records for x in r.response_ms if x > SLOW_REPLY_S * 1000),
                      "slow_reply_s": SLOW_REPLY_S},
            "late_frames": {"frames": frames, "late": sum(r.late_frames for r in all_calls),
                            "audible": sum(r.audible for r in all_calls),
                            "late_harness": sum(r.late_harness for r in all_calls),
                            "late_per_1000": round(1000 * sum(r.late_frames for r in all_calls) / frames, 3)
                            if frames else None,
                            "gap_ms": summary(late_gaps),
                            "gap_histogram_ms": {f"{lo}-{hi}": sum(1 for g in late_gaps if lo < g <= hi)
                                                 for lo, hi in GAP_BUCKETS_MS},
                            "in_first_second_of_reply": sum(1 for r in all_calls for x in r.late_into_reply_ms
                                                            if x < 1000)},
            "ping_rtt_ms": summary([x for r in all_calls for x in r.ping_rtt_ms]),
            "harness": {"stalls": len(self.stalls), "max_lag_ms": round(self.max_lag_ms, 1),
                        "errors": len(harness_errors), "error_samples": harness_errors[:5],
                        "errors_note": "the simulated caller's WebSocket library answering a ping after it began "
                                       "closing (python-trio/trio-websocket#184); not counted against the daemon"},
            "per_minute": per_minute,
            "samples": self.samples,
            "call_log": [{"slot": r.slot, "index": r.index, "start_s": round(r.started - self.t0, 1),
                          "duration_s": round(r.ended - r.started, 1), "clips": r.clips, "keys": r.keys,
                          "barge_ins": r.barge_ins, "prompts": r.prompts, "frames": r.frames,
                          "late": r.late_frames, "audible": r.audible, "late_gaps_ms": r.late_gaps_ms,
                          "late_into_reply_ms": r.late_into_reply_ms, "errors": len(r.errors)} for r in records],
        }


def print_summary(r: dict[str, Any], out: Path) -> None:
    p = r["params"]
    c, rss, fds, late, err = r["calls"], r["rss"], r["fds"], r["late_frames"], r["errors"]
    kib_to_mib = 1 / 1024

    def mib(v: float | None) -> str:
        return "-" if v is None else f"{v * kib_to_mib:.0f} MiB"

    print(f"\nsoak: {p['calls']} call slots x {p['minutes']} min; {c['completed']} calls completed "
          f"({c['clips']} clips, {c['keys']} keys, {c['barge_ins']} barge-ins, {c['prompts']} prompts)")
    span = f"{p['window_min']:g} min"
    print(f"RSS         median of the {span} after minute {p['warmup_min']:g}: {mib(rss.get('median_early'))}, "
          f"of the last {span}: {mib(rss.get('median_last'))}, growth {rss['growth_pct']}% "
          f"(trend {rss['slope_mib_per_hour']} MiB/h, max {mib(rss['max_kib'])})")
    print(f"py heap     blocks, same windows: {r['py_blocks'].get('median_early')} -> "
          f"{r['py_blocks'].get('median_last')}, growth {r['py_blocks']['growth_pct']}%")
    print(f"descriptors baseline {fds['baseline']}, final {fds['final']}, leaked {fds['leaked']} (max {fds['max']})")
    t = r["tasks"]
    print(f"tasks       baseline {t['baseline']}, final {t['final']}, leaked {t['leaked']} (max {t['max']})")
    print(f"late frames {late['late']} of {late['frames']} (> {p['late_gap_ms']:.0f} ms; audible {late['audible']}, "
          f"gap p50 {late['gap_ms']['p50']} ms, worst {late['gap_ms']['max']} ms; "
          f"{late['in_first_second_of_reply']} in a reply's first second)\n"
          f"            {late['late_harness']} more during harness stalls "
          f"({r['harness']['stalls']} stalls, max lag {r['harness']['max_lag_ms']} ms)")
    rm = c["response_ms"]
    print(f"response    end of speech/key -> reply audio p50 {rm['p50']} ms, p90 {rm['p90']} ms, max {rm['max']} ms; "
          f"{c['slow_replies']} slower than {c['slow_reply_s']:.0f} s")
    pr = r["ping_rtt_ms"]
    print(f"ping        harness -> daemon over /media, round trip p50 {pr['p50']} ms, p99 {pr['p99']} ms, "
          f"max {pr['max']} ms")
    print(f"errors      {err['total']}: {err['failed_calls']} failed calls {err['by_kind']}, "
          f"{err['daemon_log']} in the daemon log, {r['daemon_log']['warnings']} warnings; run: {err['run'] or 'ok'}; "
          f"harness (not counted): {r['harness']['errors']}")
    print(f"daemon      up in {r['daemon']['startup_s']} s, exit status {r['daemon']['exit_status']}; "
          f"log {r['daemon']['log']}")
    verdict = ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in r["checks"].items())
    print(f"\n{'PASS' if r['pass'] else 'FAIL'}: {verdict}\nJSON: {out}  ({r['wall_s']:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="concurrent call slots (default 20)")
    parser.add_argument("--minutes", type=float, default=60.0, help="how long slots start new calls (default 60)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="sampling interval (default 10 s)")
    parser.add_argument("--warmup-min", type=float, default=5.0,
                        help="RSS growth is measured from this minute on (default 5)")
    parser.add_argument("--window-min", type=float, default=5.0,
                        help="minutes of samples whose median stands for the start and the end (default 5)")
    parser.add_argument("--call-min-s", type=float, default=20.0)
    parser.add_argument("--call-max-s", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--config", type=Path, help="extra daemon TOML, merged over the soak's own settings")
    parser.add_argument("--out", type=Path, default=Path("out/soak.json"))
    args = parser.parse_args()
    if (args.calls < 1 or args.minutes <= 0 or args.sample_s <= 0 or args.window_min <= 0
            or args.call_min_s > args.call_max_s):
        parser.error("--calls, --minutes, --sample-s and --window-min must be positive, "
                     "and --call-min-s <= --call-max-s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_suffix(".daemon.log")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relay-bridge-soak-") as tmp:
        config_path = Path(tmp) / "soak.toml"
        try:
            config_text = to_toml(soak_config(args.calls, args.config))
            config_path.write_text(config_text)
            load(config_path)  # the daemon's own loader: a bad key fails here, with its dotted name
        except (ConfigError, OSError, tomllib.TOMLDecodeError, ValueError) as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 2
        with log_path.open("wb") as log:
            soak = Soak(args, log, config_path, log_path)
            try:
                trio.run(soak.run)
            except Exception:
                traceback.print_exc()
                tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                print("\n".join(["", f"soak: the run did not complete; the daemon log ({log_path}) ends:", *tail]),
                      file=sys.stderr)
                return 2
    results = soak.report(log_path, config_text)
    results["machine"] = machine()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(results, indent=2))
    print_summary(results, args.out)
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
