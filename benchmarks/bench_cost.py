"""Engine CPU per call: how many of ``bench_capacity``'s conversational calls the cores can carry at all.

Runs on purpose (``make bench-cost``), never in CI. The default models are loaded as the daemon loads
them (``relay_bridge.daemon.load_engines``, default config) and, one at a time in this otherwise idle
process, on a seeded sample of the capacity benchmark's clips (English prompts of 1-6 s):

  final_cpu_s      one final recognition of the clip as the bridge hears it (phone line, 16 kHz)
  partial_cpu_s    the partial recognitions of the clip at the bridge's cadence (the audio so far,
                   every ``PARTIAL_INTERVAL_MS`` of new speech)
  reply_cpu_s      the synthesis of the capacity benchmark's reply to it (Piper, then 8 kHz), and
  reply_s          the seconds of speech that reply lasts

and, for comparison, ``final_cpu_s`` again with numpy's BLAS at its default of a thread per core
(what the daemon paid before ``single_threaded_blas``). CPU time is the process's
(``time.process_time``: the engines' own threads included). Then the capacity benchmark's call
script (greeting, ``--turns`` turns, barge-ins with ``--barge-in-p``) is replayed on paper,
``--calls`` times with seeded draws over the sampled clips, to give the engine CPU
one call needs per second of call, two ways:

  floor            the least a call can cost: its final recognitions, its greeting (the app speaks
                   it as text), and only the reply speech its caller hears before a barge-in; no
                   partial or speculative recognition, no media path. Every wait in the call is taken
                   at the latency targets' bounds (end of speech -> prompt = silence + 500 ms, first
                   token -> first audio = 250 ms), so calls last as long as they can within target.
  with_partials    the floor plus partial recognitions at the bridge's cadence.

``cores / floor`` is the most calls the cores could carry within the targets if every cycle went to
the engines and none waited: an upper bound on capacity, whatever the scheduling.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_capacity import GREETING, TARGETS, answer
from machine import machine
from speechset import phone_line, select_clips

from relay_bridge.audio.resample import pcm16_to_float, resample_once
from relay_bridge.audio.telephony import SAMPLE_RATE_HZ
from relay_bridge.call.hearing import PARTIAL_INTERVAL_MS
from relay_bridge.config import load
from relay_bridge.daemon import load_engines
from relay_bridge.engines.schedule import cpu_cores

QUIET_S = 0.4  # the caller's wait for the agent to fall quiet (bench_capacity's wait_agent_done)
PAUSE_S = (0.3, 1.0)  # the caller's pause after a reply before its next utterance
BARGE_PAUSE_S = (0.6, 1.5)  # how long into the reply the caller barges in


@dataclass
class ClipCost:
    seconds: float
    final_cpu_s: float
    partial_cpu_s: float
    partials: int
    reply_s: float
    reply_cpu_s: float


def cpu_of(work: Any) -> tuple[float, Any]:
    t0 = time.process_time()
    result = work()
    return time.process_time() - t0, result


def synthesize(synthesizer: Any, text: str) -> tuple[float, float]:
    """CPU seconds to synthesise ``text`` at 8 kHz, and the seconds of speech it makes."""
    def work() -> int:
        samples = 0
        for piece in synthesizer.synthesize(text):
            samples += len(resample_once(pcm16_to_float(piece), synthesizer.sample_rate, SAMPLE_RATE_HZ))
        return samples
    cpu, samples = cpu_of(work)
    return cpu, samples / SAMPLE_RATE_HZ


def measure(clips: list[Any], engines: Any, progress: Any) -> list[ClipCost]:
    transcriber, synthesizer = engines.transcriber, engines.synthesizer
    step = PARTIAL_INTERVAL_MS * transcriber.sample_rate // 1000
    costs = []
    for i, clip in enumerate(clips):
        audio = phone_line(clip)
        final_cpu, heard = cpu_of(lambda a=audio: transcriber.transcribe(a, "en"))
        partial_cpu, partials = 0.0, 0
        for end in range(step, len(audio), step):
            cpu, _ = cpu_of(lambda a=audio[:end]: transcriber.transcribe(a, "en"))
            partial_cpu, partials = partial_cpu + cpu, partials + 1
        reply_cpu, reply_s = synthesize(synthesizer, answer(heard.text, 0))
        costs.append(ClipCost(clip.seconds, final_cpu, partial_cpu, partials, reply_s, reply_cpu))
        progress(f"[{i + 1}/{len(clips)}] {clip.seconds:.1f} s: final {final_cpu * 1000:.0f} ms, "
                 f"{partials} partials {partial_cpu * 1000:.0f} ms, reply {reply_s:.1f} s in {reply_cpu * 1000:.0f} ms")
    return costs


def final_with_default_blas(clips: list[Any], engines: Any) -> list[float]:
    """Each clip's final recognition CPU with OpenBLAS's own thread per core (and its spinning)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=cpu_cores(), user_api="blas"):
        return [cpu_of(lambda c=c: engines.transcriber.transcribe(phone_line(c), "en"))[0] for c in clips]


def one_call(rng: random.Random, costs: list[ClipCost], greeting: tuple[float, float], turns: int,
             barge_in_p: float, silence_s: float) -> tuple[float, float, float]:
    """Replays bench_capacity's call script: (call seconds, floor engine CPU s, partials' CPU s)."""
    eos_s = silence_s + TARGETS["eos_to_prompt_p95_over_silence_ms"] / 1000
    first_audio_s = TARGETS["token_to_audio_p95_ms"] / 1000
    greeting_cpu, greeting_s = greeting
    wall, floor, partials = greeting_s + QUIET_S, greeting_cpu, 0.0
    for turn in range(turns):
        c = rng.choice(costs)
        wall += c.seconds + eos_s + first_audio_s
        floor += c.final_cpu_s
        partials += c.partial_cpu_s
        barge = turn + 1 < turns and rng.random() < barge_in_p
        if barge:
            heard_s = min(c.reply_s, rng.uniform(*BARGE_PAUSE_S))
            wall += heard_s
            floor += c.reply_cpu_s * heard_s / c.reply_s
        else:
            wall += c.reply_s + QUIET_S + (rng.uniform(*PAUSE_S) if turn + 1 < turns else 0.0)
            floor += c.reply_cpu_s
    return wall, floor, partials


def bench(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    cfg = load(None)
    engines = load_engines(cfg)
    clips = select_clips(args.speech_dir, "en", args.clips, args.seed, min_s=1.0, max_s=6.0)
    greeting = synthesize(engines.synthesizer, GREETING)
    costs = measure(clips, engines, progress)
    blas_default = final_with_default_blas(clips, engines)
    silence_s = cfg.vad.end_of_speech_silence_ms / 1000
    rng = random.Random(args.seed)
    calls = [one_call(rng, costs, greeting, args.turns, args.barge_in_p, silence_s) for _ in range(args.calls)]
    wall = sum(w for w, _, _ in calls)
    floor = sum(f for _, f, _ in calls) / wall
    with_partials = sum(f + p for _, f, p in calls) / wall
    speech = sum(c.reply_s for c in costs)
    cores = args.cores or cpu_cores()

    def p50(name: str) -> float:
        return round(statistics.median(getattr(c, name) for c in costs), 4)

    return {
        "clips": len(costs), "calls_replayed": args.calls, "turns": args.turns, "barge_in_p": args.barge_in_p,
        "silence_s": silence_s, "cores": cores,
        "per_clip_p50": {k: p50(k) for k in ("seconds", "final_cpu_s", "partial_cpu_s", "partials", "reply_s",
                                             "reply_cpu_s")},
        "tts_cpu_s_per_speech_s": round(sum(c.reply_cpu_s for c in costs) / speech, 4),
        "asr_final_cpu_s_mean": round(statistics.fmean(c.final_cpu_s for c in costs), 4),
        "asr_final_cpu_s_mean_blas_default": round(statistics.fmean(blas_default), 4),
        "greeting": {"speech_s": round(greeting[1], 2), "cpu_s": round(greeting[0], 3)},
        "call_s_mean": round(wall / len(calls), 1),
        "cores_per_call": {"floor": round(floor, 4), "with_partials": round(with_partials, 4)},
        "most_calls": {"floor": round(cores / floor, 1), "with_partials": round(cores / with_partials, 1)},
        "cores_needed_for": {str(n): {"floor": round(n * floor, 2), "with_partials": round(n * with_partials, 2)}
                             for n in args.levels},
        "per_clip": [asdict(c) for c in costs],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, required=True, help="root of the unpacked Debian packages")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--calls", type=int, default=10000, help="calls replayed on paper")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--barge-in-p", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--cores", type=int, default=0, help="cores to size for (0: this machine's)")
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16, 30])
    parser.add_argument("--out", type=Path, default=Path("out/bench-cost.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    r = bench(args, lambda line: print(line, file=sys.stderr, flush=True))
    r["machine"] = machine()
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(r, indent=2))
    print(f"\n{r['clips']} clips, p50 each: {r['per_clip_p50']}")
    print(f"TTS {r['tts_cpu_s_per_speech_s']} CPU s per second of speech; final recognition "
          f"{r['asr_final_cpu_s_mean']} CPU s on average ({r['asr_final_cpu_s_mean_blas_default']} with numpy's "
          f"BLAS at a thread per core); a call lasts {r['call_s_mean']} s on average")
    print(f"engine cores per call: floor {r['cores_per_call']['floor']}, "
          f"with partials {r['cores_per_call']['with_partials']}")
    print(f"most calls on {r['cores']} cores: floor {r['most_calls']['floor']}, "
          f"with partials {r['most_calls']['with_partials']}")
    for n, need in r["cores_needed_for"].items():
        print(f"  {n} calls need {need['floor']} cores (floor), {need['with_partials']} with partials")
    print(f"JSON: {args.out}  ({r['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
