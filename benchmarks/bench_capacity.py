"""Capacity: how many concurrent conversational calls one daemon carries within the latency targets.

Runs on purpose (``make bench-capacity``), never in CI. For every number of calls in ``--levels`` and
every variant, a fresh daemon (``python -m relay_bridge.cli serve``, real models) is started on a loopback
port; the example app (``ScriptedAgent``) and that many simulated Twilio callers run in this process.
Calls arrive ``--stagger-s`` apart. Each call hears the greeting, then takes ``--turns`` turns: it says
a real recorded utterance (Asterisk's prompts, 8 kHz human speech), the app answers with a
two-sentence reply streamed as tokens, and the caller waits for the reply to end, or, with
probability ``--barge-in-p``, starts its next utterance over the reply (a barge-in). Partial prompts
are on. Variants run interleaved, level by level, ``--reps`` times; figures are medians over reps.

Variants: ``new`` is this checkout with its defaults; ``old`` is the daemon of ``--old-rev`` (the
last commit before the recognition scheduler and encoder windows: one recognition at a time over the
full 30 s window, two threads) with its defaults, unpacked with ``git archive`` under ``.cache/``.

Measured (at the simulated callers and app, on this process's monotonic clock):
  eos_to_prompt_ms     end of an utterance (last voiced frame sent) -> its final prompt at the app
  token_to_audio_ms    the app's first text token of a reply -> the first agent frame at its caller
  onset_to_clear_ms    onset of a barge-in -> ``clear`` at the caller
  partial_interval_ms  between consecutive partial prompts of one utterance
  lateness_ms          of each outbound frame against its reply's pacing schedule: frame k of a reply
                       is due 20 ms x k after the reply's earliest-anchored frame (min over j <= k of
                       arrival_j - 20 ms x j); a reply ends at a barge-in, a ``clear`` or the caller's
                       next turn. Frames that arrived while this process's own event loop stalled
                       (over HARNESS_STALL_MS) are counted apart: they say nothing about the daemon.
  cpu                  the daemon's CPU seconds per wall second over the level (2.0 = both cores),
                       and this process's (the callers and the app share the same two cores)
  rss_mib              the daemon's largest RSS
  refused              calls whose upgrade the daemon refused (503), and ``missed``: utterances
                       without a final prompt within LOST_S

A level meets the targets when, in the median over reps: eos_to_prompt p95 <= silence + 500 ms,
token_to_audio p95 <= 250 ms, onset_to_clear p95 <= 150 ms, lateness p99.9 <= 20 ms, no call refused
and no utterance missed.

``--media`` measures the media path alone: the daemon with deterministic engines
(``benchmarks/fake_daemon.py``) at ``--media-levels`` calls, the same conversation, reporting lateness.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from machine import machine
from soak import free_port, listening, pct, proc_sample, scan_log, to_toml
from speechset import select_clips
from trio_websocket import ConnectionRejected

from relay_bridge.config import load
from relay_bridge.loopback import first_after
from relay_bridge.sim.agent import AgentScript, AgentSession, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller, Spoken
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline

ROOT = Path(__file__).resolve().parent.parent
OLD_REV = "2cf2626"
FRAME_MS = 20.0
HARNESS_STALL_MS = 20.0
HARNESS_TICK_S = 0.01
READY_TIMEOUT_S = 180.0
LOST_S = 30.0  # an utterance without its final prompt by then is missed; a reply not begun, lost
REPLY_WINDOW_S = 10.0
BARGE_IN_WINDOW_S = 2.0
STOP_TIMEOUT_S = 60.0
TOKEN_INTERVAL_S = 0.02  # 50 tokens a second, an LLM's pace
GREETING = "Hello, you are through to the capacity benchmark. How can I help?"
TARGETS = {"eos_to_prompt_p95_over_silence_ms": 500, "token_to_audio_p95_ms": 250, "onset_to_clear_p95_ms": 150,
           "lateness_p999_ms": 20}


def answer(heard: str, turn: int) -> str:
    return (f"Thanks, I have noted that you said {heard.strip().rstrip('.')}. "
            "Let me look into it for you, and I will be right back with an answer in a moment.")


# -- one level ----------------------------------------------------------------------------------


@dataclass
class CallResult:
    call_sid: str
    refused: bool = False
    error: str = ""
    spoken: list[tuple[Spoken, bool]] = field(default_factory=list)  # (utterance, over the agent)
    arrivals: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)


@dataclass
class Level:
    variant: str
    calls: int
    rep: int
    results: list[CallResult] = field(default_factory=list)
    sessions: list[AgentSession] = field(default_factory=list)
    stalls: list[tuple[float, float]] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    refused_logged: int = 0
    log: dict[str, Any] = field(default_factory=dict)


async def watch_harness(stalls: list[tuple[float, float]]) -> None:
    while True:
        t = trio.current_time()
        await trio.sleep(HARNESS_TICK_S)
        now = trio.current_time()
        if (now - t - HARNESS_TICK_S) * 1000 > HARNESS_STALL_MS:
            stalls.append((t + HARNESS_TICK_S, now))


async def run_call(url: str, index: int, clips: list[Clip], args: argparse.Namespace, rep: int) -> CallResult:
    rng = random.Random(f"{args.seed}:{rep}:{index}")
    sid = f"{index + 1:08x}{rep:024x}"
    result = CallResult("CA" + sid)
    caller = SimulatedCaller(url, Timeline(), call_sid=result.call_sid, stream_sid="MZ" + sid)

    async def script(c: SimulatedCaller) -> None:
        with trio.move_on_after(LOST_S):
            await c.wait_agent_done(quiet_s=0.4)  # the greeting
        barge = False
        for turn in range(args.turns):
            clip = rng.choice(clips)
            spoken = c.start_saying(clip)
            result.spoken.append((spoken, barge))
            await c.finish_saying()
            barge = turn + 1 < args.turns and rng.random() < args.barge_in_p
            with trio.move_on_after(LOST_S):
                if barge:
                    await c.wait_agent_audio()
                    await c.pause(rng.uniform(0.6, 1.5))
                else:
                    await c.wait_agent_done(quiet_s=0.4)
                    await c.pause(rng.uniform(0.3, 1.0))
        with trio.move_on_after(LOST_S):
            await c.wait_agent_done(quiet_s=0.4)
        await c.hang_up()

    try:
        await caller.run(script)
    except ConnectionRejected as exc:
        result.refused = exc.status_code == 503
        result.error = f"rejected with status {exc.status_code}"
    except Exception as exc:  # a failed call is a figure of the level, not the end of the benchmark
        result.error = f"{type(exc).__name__}: {exc}"
    result.arrivals = caller.ear.media_arrivals
    result.clears = caller.ear.clears
    result.marks = caller.ear.marks
    return result


def daemon_command(variant: str, port: int, app_port: int, config: Path, trees: dict[str, Path],
                   media: bool) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    listen, app = f"127.0.0.1:{port}", f"ws://127.0.0.1:{app_port}"
    if media:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "fake_daemon.py")]
    else:
        cmd = [sys.executable, "-m", f"{package_of(trees[variant])}.cli", "serve"]
    env["PYTHONPATH"] = str(trees[variant])
    return [*cmd, "--listen", listen, "--app-url", app, "--config", str(config)], env


async def run_level(level: Level, args: argparse.Namespace, clips: list[Clip], config: Path,
                    trees: dict[str, Path], log_path: Path, media: bool) -> None:
    agent = ScriptedAgent(Timeline(), AgentScript(greeting=GREETING, answer=answer), token_interval_s=TOKEN_INTERVAL_S)
    async with trio.open_nursery() as nursery:
        app_port = await nursery.start(agent.serve, "127.0.0.1", 0)
        port = free_port()
        cmd, env = daemon_command(level.variant, port, app_port, config, trees, media)
        with log_path.open("wb") as log:
            proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            try:
                with trio.fail_after(READY_TIMEOUT_S):
                    while not listening(port):
                        if proc.poll() is not None:
                            raise RuntimeError(f"the daemon exited with status {proc.returncode}; see {log_path}")
                        await trio.sleep(0.2)
                nursery.start_soon(watch_harness, level.stalls)

                async def sample() -> None:
                    while True:
                        s = proc_sample(proc.pid)
                        if s is not None:
                            level.rss_kib.append(s["rss_kib"])
                        await trio.sleep(1.0)

                nursery.start_soon(sample)
                before = proc_sample(proc.pid)
                self_before = resource.getrusage(resource.RUSAGE_SELF)
                t0 = trio.current_time()
                url = f"ws://127.0.0.1:{port}/media"

                async def one(i: int) -> None:
                    await trio.sleep(i * args.stagger_s)
                    level.results.append(await run_call(url, i, clips, args, level.rep))

                async with trio.open_nursery() as calls:
                    for i in range(level.calls):
                        calls.start_soon(one, i)
                wall = trio.current_time() - t0
                after = proc_sample(proc.pid)
                self_after = resource.getrusage(resource.RUSAGE_SELF)
                if before and after:
                    level.cpu["daemon"] = round((after["cpu_s"] - before["cpu_s"]) / wall, 2)
                level.cpu["harness"] = round((self_after.ru_utime + self_after.ru_stime - self_before.ru_utime
                                              - self_before.ru_stime) / wall, 2)
                level.cpu["wall_s"] = round(wall, 1)
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        level.sessions = list(agent.sessions)
        nursery.cancel_scope.cancel()

def read_log(level: Level, log_path: Path) -> None:
    level.log = scan_log(log_path)
    level.refused_logged = sum(1 for line in log_path.read_text(errors="replace").splitlines()
                               if "refused a connection (capacity)" in line
                               or "refused a connection (recognition)" in line)


# -- figures ------------------------------------------------------------------------------------


def summary(values: list[float], *qs: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values)}
    for q in qs:
        out[f"p{q * 100:g}"] = pct(values, q)
    return out


def in_stall(t: float, stalls: list[tuple[float, float]], ends: list[float]) -> bool:
    """Whether ``t`` fell in one of ``stalls`` (in time order; ``ends`` their ends), give or take 5 ms."""
    i = bisect.bisect_left(ends, t - 0.005)
    return i < len(stalls) and stalls[i][0] - 0.005 <= t


def lateness(result: CallResult, stalls: list[tuple[float, float]]) -> tuple[list[float], list[float], int]:
    """Each frame's lateness against its chunk's pacing schedule, the caller's playout underruns within
    a reply (ms each), and the frames left out (they arrived in a harness stall).

    The audio of one chunk is queued for the pacer at once and closed by a ``mark``, so within a chunk
    every delay is the pacer's. Between the chunks of a reply the caller's buffer may run dry while
    the next chunk is synthesised: an underrun, counted apart.
    """
    replies = sorted([s.onset for s, _ in result.spoken] + result.clears)
    chunks = sorted(replies + result.marks)
    ends = [b for _, b in stalls]
    late: list[float] = []
    underruns: list[float] = []
    skipped = 0
    anchor = play_end = float("inf")
    k = 0
    chunk = reply = -1
    for t in result.arrivals:
        r = bisect.bisect_right(replies, t)
        c = bisect.bisect_right(chunks, t)
        if r != reply:
            reply, play_end = r, float("inf")
        if c != chunk:
            chunk, anchor, k = c, float("inf"), 0
        if t > play_end:
            underruns.append((t - play_end) * 1000)
        play_end = max(t, play_end if play_end != float("inf") else t) + FRAME_MS / 1000
        anchor = min(anchor, t - k * FRAME_MS / 1000)
        due = anchor + k * FRAME_MS / 1000
        if in_stall(t, stalls, ends):
            skipped += 1
        else:
            late.append(max(0.0, (t - due) * 1000))
        k += 1
    return late, underruns, skipped


def figures(level: Level, silence_ms: int) -> dict[str, Any]:
    sessions = {s.setup.call_sid: s for s in level.sessions if s.setup is not None}
    eos, t2a, o2c, partial_gaps, late, underruns = [], [], [], [], [], []
    missed = skipped = 0
    for r in level.results:
        s = sessions.get(r.call_sid)
        for i, (spoken, barge) in enumerate(r.spoken):
            nxt = r.spoken[i + 1][0].onset if i + 1 < len(r.spoken) else float("inf")
            finals = [t for t in (s.prompt_times if s else []) if spoken.onset <= t < nxt]
            if finals and finals[-1] - spoken.end < LOST_S:
                eos.append((finals[-1] - spoken.end) * 1000)
            else:
                missed += 1
            partials = [t for t in (s.partial_times if s else []) if spoken.onset <= t < nxt]
            partial_gaps += [(b - a) * 1000 for a, b in itertools.pairwise(partials)]
            if barge:
                c = first_after(r.clears, spoken.onset)
                if c is not None and c - spoken.onset < BARGE_IN_WINDOW_S:
                    o2c.append((c - spoken.onset) * 1000)
        for t in (s.replies_started if s else []):
            a = first_after(r.arrivals, t)
            if a is not None and a - t < REPLY_WINDOW_S:
                t2a.append((a - t) * 1000)
        frames_late, frames_underruns, frames_skipped = lateness(r, level.stalls)
        late += frames_late
        underruns += frames_underruns
        skipped += frames_skipped
    refused = sum(1 for r in level.results if r.refused)
    out = {
        "calls": level.calls, "rep": level.rep, "refused": refused, "refused_logged": level.refused_logged,
        "failed": sum(1 for r in level.results if r.error and not r.refused),
        "errors": sorted({r.error for r in level.results if r.error})[:5],
        "utterances": sum(len(r.spoken) for r in level.results), "missed": missed,
        "eos_to_prompt_ms": summary(eos, 0.5, 0.95), "token_to_audio_ms": summary(t2a, 0.5, 0.95),
        "onset_to_clear_ms": summary(o2c, 0.5, 0.95), "partial_interval_ms": summary(partial_gaps, 0.5, 0.95),
        "lateness_ms": {**summary(late, 0.5, 0.99, 0.999), "max": max(late, default=None),
                        "over_20ms": sum(1 for x in late if x > 20)},
        "underruns_ms": {**summary(underruns, 0.5, 0.95), "max": max(underruns, default=None)},
        "frames": len(late), "frames_in_harness_stalls": skipped, "harness_stalls": len(level.stalls),
        "cpu": level.cpu, "rss_mib": round(max(level.rss_kib, default=0) / 1024),
        "daemon_log_errors": level.log.get("errors", 0), "daemon_log_warnings": level.log.get("warnings", 0),
    }
    out["meets"] = meets(lambda path: dig(out, path), silence_ms)
    return out


def meets(value: Callable[[tuple[str, ...]], Any], silence_ms: int) -> bool:
    """Whether the figures ``value`` gives (by path, e.g. ("lateness_ms", "p99.9")) meet the targets."""
    def within(path: tuple[str, ...], bound: float) -> bool:
        v = value(path)
        return v is None or v <= bound  # no sample (no barge-in at one call): nothing missed

    eos = value(("eos_to_prompt_ms", "p95"))
    return (value(("refused",)) == 0 and value(("missed",)) == 0 and value(("failed",)) == 0
            and eos is not None and eos <= silence_ms + TARGETS["eos_to_prompt_p95_over_silence_ms"]
            and within(("token_to_audio_ms", "p95"), TARGETS["token_to_audio_p95_ms"])
            and within(("onset_to_clear_ms", "p95"), TARGETS["onset_to_clear_p95_ms"])
            and within(("lateness_ms", "p99.9"), TARGETS["lateness_p999_ms"]))


MEDIAN_KEYS: list[tuple[str, ...]] = [
    ("eos_to_prompt_ms", "p50"), ("eos_to_prompt_ms", "p95"), ("token_to_audio_ms", "p50"),
    ("token_to_audio_ms", "p95"), ("onset_to_clear_ms", "p95"), ("partial_interval_ms", "p50"),
    ("lateness_ms", "p99.9"), ("lateness_ms", "max"), ("underruns_ms", "n"), ("underruns_ms", "p95"),
    ("cpu", "daemon"), ("cpu", "harness"), ("rss_mib",),
    ("refused",), ("missed",), ("failed",)]


def dig(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


def median_of_reps(reps: list[dict[str, Any]], silence_ms: int) -> dict[str, Any]:
    med: dict[str, Any] = {"reps": len(reps), "meets_in_reps": sum(1 for r in reps if r["meets"])}
    for path in MEDIAN_KEYS:
        values = [v for r in reps if (v := dig(r, path)) is not None]
        med[".".join(path)] = round(statistics.median(values), 1) if values else None
    med["meets"] = meets(lambda path: med[".".join(path)], silence_ms)
    return med


# -- the run ------------------------------------------------------------------------------------


PACKAGES = ("relay_bridge", "bridge")  # the import package's name now, and before the rename


def package_of(tree: Path) -> str:
    return next((name for name in PACKAGES if (tree / name).is_dir()), PACKAGES[0])


def unpack_rev(rev: str) -> Path:
    """The tree of ``rev``'s import package under .cache/ (git archive), once."""
    sha = subprocess.run(["git", "rev-parse", "--short=12", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = ROOT / ".cache" / f"rev-{sha}"
    if not any((tree / name).is_dir() for name in PACKAGES):
        tree.mkdir(parents=True, exist_ok=True)
        listed = subprocess.run(["git", "ls-tree", "--name-only", sha], cwd=ROOT, check=True, capture_output=True,
                                text=True).stdout.split()
        package = next(name for name in PACKAGES if name in listed)
        archive = subprocess.run(["git", "archive", sha, package], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        with tempfile.TemporaryFile() as f:
            f.write(archive)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(tree, filter="data")
    return tree


def daemon_config(max_calls: int, extra: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"server": {"max_calls": max_calls, "allow_unauthenticated": True},
                            "session": {"partial_prompts": True}, "logging": {"level": "INFO"}}
    for name, body in extra.items():
        data[name] = {**data.get(name, {}), **body}
    return data


def bench(args: argparse.Namespace, out_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    clips = select_clips(args.speech_dir, "en", None, args.seed, min_s=1.0, max_s=6.0)
    old_tree = unpack_rev(args.old_rev) if "old" in args.variants and not args.media else None
    levels = args.media_levels if args.media else args.levels
    variants = ["new"] if args.media else args.variants
    per: dict[str, dict[int, list[dict[str, Any]]]] = {v: {n: [] for n in levels} for v in variants}
    silence_ms = load(None).vad.end_of_speech_silence_ms
    with tempfile.TemporaryDirectory(prefix="relay-bridge-capacity-") as tmp:
        # The daemons run a copy of this checkout's package as it was at the start of the run.
        shutil.copytree(ROOT / "relay_bridge", Path(tmp) / "new" / "relay_bridge")
        trees = {"new": Path(tmp) / "new", **({"old": old_tree} if old_tree else {})}
        config = Path(tmp) / "capacity.toml"
        extra: dict[str, Any] = {}
        for item in args.set:
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            extra.setdefault(section, {})[name] = tomllib.loads(f"v = {value}")["v"]
        config.write_text(to_toml(daemon_config(max(levels) + 10, extra)))
        for rep in range(args.reps):
            for n in levels:
                for variant in variants:
                    level = Level(variant, n, rep)
                    log_path = out_dir / f"capacity-{'media' if args.media else variant}-{n}-{rep}.log"
                    t0 = time.perf_counter()
                    try:
                        trio.run(run_level, level, args, clips, config, trees, log_path, args.media)
                    except Exception as exc:  # one broken level is reported, the rest still run
                        progress(f"[rep {rep + 1}/{args.reps}] {variant} {n} calls: the level failed: {exc!r}")
                        continue
                    read_log(level, log_path)
                    fig = figures(level, silence_ms)
                    per[variant][n].append(fig)
                    progress(f"[rep {rep + 1}/{args.reps}] {variant:>3} {n:>3} calls: "
                             f"eos->prompt p50/p95 {fig['eos_to_prompt_ms']['p50']}/"
                             f"{fig['eos_to_prompt_ms']['p95']} ms, "
                             f"token->audio p95 {fig['token_to_audio_ms']['p95']} ms, "
                             f"onset->clear p95 {fig['onset_to_clear_ms']['p95']} ms, "
                             f"partials p50 {fig['partial_interval_ms']['p50']} ms, "
                             f"lateness p99.9 {fig['lateness_ms']['p99.9']} ms, cpu {fig['cpu'].get('daemon')}, "
                             f"refused {fig['refused']}, missed {fig['missed']}, failed {fig['failed']} "
                             f"({time.perf_counter() - t0:.0f} s)")
    medians = {v: {str(n): median_of_reps(per[v][n], silence_ms) for n in levels} for v in variants}
    best = {v: max((n for n in levels if medians[v][str(n)]["meets"]), default=0) for v in variants}
    return {"mode": "media" if args.media else "conversational", "levels": levels, "variants": variants,
            "old_rev": args.old_rev if old_tree else None, "silence_ms": silence_ms, "targets": TARGETS,
            "params": {"reps": args.reps, "turns": args.turns, "stagger_s": args.stagger_s,
                       "barge_in_p": args.barge_in_p, "seed": args.seed, "clips": len(clips),
                       "token_interval_s": TOKEN_INTERVAL_S},
            "medians": medians, "most_calls_meeting_targets": best, "runs": per}


def print_table(r: dict[str, Any]) -> None:
    cols = [("eos->prompt p50", "eos_to_prompt_ms.p50"), ("p95", "eos_to_prompt_ms.p95"),
            ("tok->audio p50", "token_to_audio_ms.p50"), ("p95", "token_to_audio_ms.p95"),
            ("onset->clear p95", "onset_to_clear_ms.p95"), ("partials p50", "partial_interval_ms.p50"),
            ("late p99.9", "lateness_ms.p99.9"), ("underruns", "underruns_ms.n"), ("cpu", "cpu.daemon"),
            ("harness cpu", "cpu.harness"),
            ("RSS MiB", "rss_mib"), ("refused", "refused"), ("missed", "missed"), ("meets", "meets")]
    print(f"\n{r['mode']} load, medians of {r['params']['reps']} runs (ms; silence {r['silence_ms']} ms)")
    print(f"{'variant':>8}{'calls':>6}" + "".join(f"{c:>17}" for c, _ in cols))
    for v in r["variants"]:
        for n in r["levels"]:
            m = r["medians"][v][str(n)]
            print(f"{v:>8}{n:>6}" + "".join(f"{m[k]!s:>17}" for _, k in cols))
    best = r["most_calls_meeting_targets"]
    print("most calls meeting the targets: " + ", ".join(f"{v} {n}" for v, n in best.items()))
    if "old" in r["most_calls_meeting_targets"] and "new" in r["most_calls_meeting_targets"]:
        old, new = r["most_calls_meeting_targets"]["old"], r["most_calls_meeting_targets"]["new"]
        print(f"ratio new/old: {new / old:.1f}x" if old else "old meets the targets at no level")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, required=True, help="root of the unpacked Debian packages")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 16, 24, 32, 40])
    parser.add_argument("--variants", nargs="+", choices=["new", "old"], default=["new", "old"])
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--stagger-s", type=float, default=0.5)
    parser.add_argument("--barge-in-p", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--media", action="store_true", help="the media path alone, with deterministic engines")
    parser.add_argument("--media-levels", type=int, nargs="+", default=[50, 100, 150, 200])
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="daemon config settings for every variant (a TOML value)")
    parser.add_argument("--out", type=Path, default=Path("out/bench-capacity.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = bench(args, args.out.parent, lambda line: print(line, file=sys.stderr, flush=True))
    results["machine"] = machine()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nJSON: {args.out}  ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
