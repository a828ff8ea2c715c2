"""Simulated calls through the real engines on real recorded speech: latency, WER and pacing.

Runs on purpose (``make bench``), never in CI. Every trial is a whole call on loopback: the real
server and codecs, faster-whisper and Piper, the example app, and the simulated Twilio caller
speaking Asterisk's recorded English prompts (8 kHz human speech) with known transcripts.

Variants are run side by side in one process: ``speculative`` (the default: recognition starts
after ``vad.speculate_ms`` of silence, overlapping the end-of-speech wait) and ``no-speculation``
(recognition starts only once the end-of-speech silence has elapsed).

Measured (at the simulated caller and app, on one monotonic clock):
  eos_to_prompt_ms    end of the caller's speech (last voiced frame on the wire) -> final prompt at the app
  token_to_audio_ms   the app's first text token of a reply -> first outbound audio frame at the caller
  onset_to_clear_ms   onset of caller speech during agent playback -> clear at the caller
  wer                 word error rate of the prompts against the transcripts (normalised text)
  frame_interval_ms   spacing of outbound frames after the initial lead, and lead_ms, the audio buffered
                      at the caller when each frame arrived
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
from machine import machine
from speechset import transcripts

from relay_bridge import logs
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.config import Config, load, replace
from relay_bridge.daemon import load_engines
from relay_bridge.engines.whisper import FULL_WINDOW_S, WhisperTranscriber
from relay_bridge.loopback import first_after, run_loopback_call
from relay_bridge.sim.agent import AgentScript
from relay_bridge.sim.caller import SimulatedCaller, Spoken
from relay_bridge.sim.clips import Clip, load_clip
from relay_bridge.sim.scoring import normalise, wer

LONG_REPLY = ("Here is a long answer, so that you have time to interrupt me. It goes on for a while, "
              "sentence after sentence, the way a talkative agent does. I will keep talking about "
              "nothing in particular until you say something. Still here, still talking, still waiting.")


def select_clips(root: Path, count: int, seed: int) -> list[Clip]:
    candidates = [(path, text) for path, text in transcripts(root, "en")
                  if "(" not in text and len(normalise(text).split()) >= 2]
    random.Random(seed).shuffle(candidates)
    clips = []
    for path, text in candidates:
        clip = load_clip(path, text)
        if 1.0 <= (clip.speech_end - clip.speech_start) / 8000 <= 7.0:
            clips.append(clip)
        if len(clips) == count:
            break
    return clips


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 0.5), "p90": pct(values, 0.9),
            "max": max(values, default=float("nan"))}


async def asr_trial(engines: SpeechEngines, cfg: Config, clips: list[Clip]) -> dict[str, Any]:
    """One call: the caller says every clip in turn; the app listens silently."""
    spoken: list[Spoken] = []
    # The longest a turn can wait for its end: the model's cap with turn_detection "smart".
    vad = cfg.vad
    eos_s = (vad.max_turn_silence_ms if vad.turn_detection == "smart" else vad.end_of_speech_silence_ms) / 1000

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(0.5)
        for clip in clips:
            spoken.append(await caller.say(clip))
            await caller.pause(eos_s + 1.0)
        await caller.hang_up()

    silent = AgentScript(greeting="", answer=lambda heard, turn: "")
    call = await run_loopback_call(engines, cfg, script, agent_script=silent)
    prompts = call.timeline.find("app", "<- prompt")
    partials = [t for t, _ in call.timeline.find("app", "<- partial")]
    latencies, pairs, rows = [], [], []
    for i, s in enumerate(spoken):
        until = spoken[i + 1].onset if i + 1 < len(spoken) else float("inf")
        mine = [(t, d) for t, d in prompts if s.onset <= t < until]
        heard = " ".join(d["prompt"] for _, d in mine)
        if mine:
            latencies.append((mine[-1][0] - s.end) * 1000)
        pairs.append((s.clip.text, heard))
        rows.append({"clip": s.clip.name, "reference": s.clip.text, "prompts": [d["prompt"] for _, d in mine],
                     "eos_to_prompt_ms": (mine[-1][0] - s.end) * 1000 if mine else None})
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(partials) if b - a < 2.0]  # within an utterance
    return {"eos_to_prompt_ms": summary(latencies), "wer": wer(pairs), "clips": rows,
            "partials": len(partials), "partial_interval_ms": summary(gaps),
            "split_utterances": sum(1 for r in rows if len(r["prompts"]) > 1),
            "missed": sum(1 for r in rows if not r["prompts"])}


async def conversation_trial(engines: SpeechEngines, cfg: Config, clips: list[Clip], barge_ins: int) -> dict[str, Any]:
    """One call: the app replies at length; the caller talks over each reply after a random wait."""
    rng = random.Random(7)
    onsets: list[float] = []
    heard_windows: list[tuple[float, float]] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done(quiet_s=0.4)  # greeting
        await caller.say(clips[-1])  # the first long reply; each later one answers a barge-in
        for clip in clips[:barge_ins]:
            with trio.fail_after(20):
                started = await caller.wait_agent_audio()
            await caller.pause(rng.uniform(0.8, 2.5))
            spoken = caller.start_saying(clip)
            onsets.append(spoken.onset)
            heard_windows.append((started, spoken.onset))
            await caller.finish_saying()
        with trio.fail_after(30):
            await caller.wait_agent_done(quiet_s=0.4)
        await caller.hang_up()

    talker = AgentScript(greeting="Hello, this is the benchmark agent. Talk to me whenever you like.",
                         answer=lambda heard, turn: f"You said {heard} {LONG_REPLY}")
    call = await run_loopback_call(engines, cfg, script, agent_script=talker)
    ear = call.caller.ear
    session = call.agent.sessions[0]
    token_to_audio = call.token_to_audio_ms()
    onset_to_clear = call.onset_to_clear_ms(onsets)
    intervals = []
    arrivals = ear.media_arrivals
    for prev, cur in itertools.pairwise(arrivals):
        gap = (cur - prev) * 1000
        if 1.0 < gap < 100:  # steady state: skip the initial lead burst and pauses between replies
            intervals.append(gap)
    interrupt_error = []
    for (start, onset), intr in zip(heard_windows, session.interrupts, strict=False):
        clear = first_after(ear.clears, onset)
        if clear is not None:
            actual = call.caller.heard_ms_between(start, clear)
            interrupt_error.append(abs(intr.duration_until_interrupt_ms - actual))
    return {
        "token_to_audio_ms": summary(token_to_audio),
        "onset_to_clear_ms": summary(onset_to_clear),
        "interrupts": len(session.interrupts),
        "interrupt_duration_error_ms": summary(interrupt_error),
        "frame_interval_ms": {"median": statistics.median(intervals) if intervals else float("nan"),
                              "p95": pct(intervals, 0.95)},
        "lead_ms": {"max": max(ear.leads_ms, default=0.0), "median": statistics.median(ear.leads_ms or [0.0]),
                    "configured": cfg.playback.lead_ms,
                    "frames_over_lead": sum(1 for x in ear.leads_ms if x > cfg.playback.lead_ms)},
    }


def use_windows(engines: SpeechEngines, cfg: Config) -> None:
    """Give the loaded recognisers ``cfg``'s recognition settings (encoder windows), without reloading."""
    for lang in engines.declared:
        if isinstance(lang.transcriber, WhisperTranscriber):
            lang.transcriber.settings = cfg.asr.whisper()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = load(args.config)
    clips = select_clips(args.speech_dir, args.clips, args.seed)
    engines = load_engines(base)
    eos = base.vad.end_of_speech_silence_ms
    available = {
        "speculative": base,
        # Turns end after vad.end_of_speech_silence_ms of silence, without the end-of-turn model.
        "silence-turns": replace(base, vad__turn_detection="silence"),
        "no-speculation": replace(base, vad__speculate_ms=eos),
        "vad-aggressiveness-3": replace(base, vad__aggressiveness=3),
        "vad-aggressiveness-2": replace(base, vad__aggressiveness=2),
        "partial-prompts": replace(base, session__partial_prompts=True),
        # The same with the full 30 s encoder window only (as before the shorter windows).
        "full-window": replace(base, asr__windows_s=(FULL_WINDOW_S,)),
        "partial-prompts-full-window": replace(base, session__partial_prompts=True, asr__windows_s=(FULL_WINDOW_S,)),
    }
    variants = {name: available[name] for name in args.variants}
    results: dict[str, Any] = {"clips": len(clips), "speech_seconds": sum(c.seconds for c in clips),
                               "end_of_speech_silence_ms": eos, "variants": {}}
    for name, cfg in variants.items():
        use_windows(engines, cfg)
        t0 = time.perf_counter()
        print(f"[{name}] {len(clips)} utterances ...", file=sys.stderr, flush=True)
        results["variants"][name] = await asr_trial(engines, cfg, clips)
        results["variants"][name]["wall_s"] = time.perf_counter() - t0
    use_windows(engines, base)
    print(f"[conversation] {args.barge_ins} barge-ins ...", file=sys.stderr, flush=True)
    results["conversation"] = await conversation_trial(engines, base, clips, args.barge_ins)
    return results


def print_table(r: dict[str, Any]) -> None:
    eos = r["end_of_speech_silence_ms"]
    print(f"\n{r['clips']} recorded utterances ({r['speech_seconds']:.0f} s of audio); "
          f"end-of-speech silence {eos} ms\n")
    print(f"{'':36}" + "".join(f"{n:>18}" for n in r["variants"]))
    rows = [("end of speech -> prompt p50 (ms)", lambda v: f"{v['eos_to_prompt_ms']['p50']:.0f}"),
            ("end of speech -> prompt p90 (ms)", lambda v: f"{v['eos_to_prompt_ms']['p90']:.0f}"),
            ("  ... minus the silence, p50 (ms)", lambda v: f"{v['eos_to_prompt_ms']['p50'] - eos:.0f}"),
            ("word error rate", lambda v: f"{v['wer'] * 100:.1f}%"),
            ("utterances split / missed", lambda v: f"{v['split_utterances']} / {v['missed']}"),
            ("partial prompts / interval p50 (ms)",
             lambda v: f"{v['partials']} / {v['partial_interval_ms']['p50']:.0f}" if v["partials"] else "0")]
    for label, fn in rows:
        print(f"{label:36}" + "".join(f"{fn(v):>18}" for v in r["variants"].values()))
    c = r["conversation"]
    print(f"\napp first token -> first audio   p50 {c['token_to_audio_ms']['p50']:.0f} ms, "
          f"p90 {c['token_to_audio_ms']['p90']:.0f} ms (n={c['token_to_audio_ms']['n']})")
    print(f"speech onset -> clear             p50 {c['onset_to_clear_ms']['p50']:.0f} ms, "
          f"p90 {c['onset_to_clear_ms']['p90']:.0f} ms (n={c['onset_to_clear_ms']['n']})")
    print(f"interrupt duration vs heard       p50 error {c['interrupt_duration_error_ms']['p50']:.0f} ms")
    print(f"outbound frame interval           median {c['frame_interval_ms']['median']:.1f} ms, "
          f"p95 {c['frame_interval_ms']['p95']:.1f} ms")
    print(f"lead over real time               max {c['lead_ms']['max']:.0f} ms (configured "
          f"{c['lead_ms']['configured']} ms), frames over it: {c['lead_ms']['frames_over_lead']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, required=True, help="root of the unpacked Debian packages")
    parser.add_argument("--config", type=Path, help="relay-bridge config to benchmark (default: built-in defaults)")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--barge-ins", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--variants", nargs="+", default=["speculative", "no-speculation"],
                        choices=["speculative", "silence-turns", "no-speculation", "vad-aggressiveness-3",
                                 "vad-aggressiveness-2",
                                 "partial-prompts", "full-window", "partial-prompts-full-window"])
    parser.add_argument("--out", type=Path, default=Path("out/bench.json"))
    args = parser.parse_args()
    logs.configure("WARNING")
    t0 = time.perf_counter()
    results = trio.run(bench, args)
    results["machine"] = machine()
    results["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nJSON: {args.out}  ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
