"""Turn-taking: when the caller's turn ends, with the end-of-turn model (``smart``) and on silence alone.

Runs on purpose (``make bench-turns``), never in CI. Real models, the real server on loopback, the
simulated caller saying recorded English prompts (Asterisk's, 8 kHz human speech), side by side in
one run for ``vad.turn_detection`` "smart" and "silence", on two sets:

  complete   each utterance as recorded
  paused     the same utterances with their longest pause between words (inside the middle 80% of
             the speech, at least 60 ms) stretched to ``--pause-ms`` (800) of silence: a caller who
             stops to think mid-sentence

Reported per variant and set: end of speech -> final prompt p50/p90 (the last prompt of each
utterance), the share of utterances split into more than one prompt, WER, and, for the model, the
CPU time of one decision (``TurnModel.complete`` on each complete utterance, one at a time).

Not measured yet: acknowledgements and noise bursts over agent speech (backchannels and false
barge-ins are not built).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
import webrtcvad
from bench_calls import asr_trial
from machine import machine
from speechset import phone_line, select_clips

from bridge import logs
from bridge.audio.telephony import FRAME_SAMPLES, SAMPLE_RATE_HZ
from bridge.call.engines import SpeechEngines
from bridge.config import load, replace
from bridge.daemon import load_engines
from bridge.engines.turn import TurnModel
from bridge.sim.clips import Clip

MIN_GAP_MS = 60


def stretch_pause(clip: Clip, pause_ms: int) -> Clip | None:
    """``clip`` with its longest unvoiced run between words stretched to ``pause_ms``; None if it has none."""
    vad = webrtcvad.Vad(3)
    frames = [vad.is_speech(clip.samples[i : i + FRAME_SAMPLES].tobytes(), SAMPLE_RATE_HZ)
              for i in range(0, len(clip.samples) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
    first, last = clip.speech_start // FRAME_SAMPLES, clip.speech_end // FRAME_SAMPLES
    lo, hi = first + (last - first) // 10, last - (last - first) // 10
    best: tuple[int, int] | None = None
    run_start = None
    for i in range(lo, hi):
        if not frames[i] and run_start is None:
            run_start = i
        elif frames[i] and run_start is not None:
            if best is None or i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    if best is None or (best[1] - best[0]) * 20 < MIN_GAP_MS:
        return None
    start, end = best[0] * FRAME_SAMPLES, best[1] * FRAME_SAMPLES
    pause = np.zeros(pause_ms * SAMPLE_RATE_HZ // 1000, dtype=np.int16)
    samples = np.concatenate((clip.samples[:start], pause, clip.samples[end:]))
    grown = len(pause) - (end - start)
    return dataclasses.replace(clip, name=clip.name + "+pause", samples=samples, speech_end=clip.speech_end + grown)


def decision_cpu_ms(model: TurnModel, clips: list[Clip]) -> dict[str, float]:
    times = []
    for clip in clips:
        audio = phone_line(clip)[: 2 * clip.speech_end + 3200]
        t0 = time.process_time()
        model.complete(audio)
        times.append((time.process_time() - t0) * 1000)
    return {"p50": round(statistics.median(times), 1), "max": round(max(times), 1), "n": len(times)}


async def bench(args: argparse.Namespace, engines: SpeechEngines) -> dict[str, Any]:
    base = load(None)
    clips = select_clips(args.speech_dir, "en", args.clips, args.seed, min_s=1.5, max_s=6.0)
    paused = [c for c in (stretch_pause(c, args.pause_ms) for c in clips) if c is not None]
    variants = {"smart": base, "silence": replace(base, vad__turn_detection="silence")}
    out: dict[str, Any] = {"clips": len(clips), "paused_clips": len(paused), "pause_ms": args.pause_ms,
                           "variants": {}}
    for name, cfg in variants.items():
        out["variants"][name] = {}
        for set_name, chosen in (("complete", clips), ("paused", paused)):
            print(f"[{name}] {set_name}: {len(chosen)} utterances ...", file=sys.stderr, flush=True)
            r = await asr_trial(engines, cfg, chosen)
            out["variants"][name][set_name] = {
                "eos_to_prompt_ms": r["eos_to_prompt_ms"], "wer": r["wer"],
                "split_share": round(r["split_utterances"] / len(chosen), 3), "missed": r["missed"],
                "clips": r["clips"]}
    assert isinstance(engines.turn_model, TurnModel)
    out["decision_cpu_ms"] = decision_cpu_ms(engines.turn_model, clips)
    return out


def print_table(r: dict[str, Any]) -> None:
    print(f"\n{r['clips']} utterances, {r['paused_clips']} of them with a pause stretched to {r['pause_ms']} ms")
    print(f"{'':44}{'smart':>14}{'silence':>14}")
    rows = [("complete: end of speech -> prompt p50 (ms)", "complete", lambda x: round(x["eos_to_prompt_ms"]["p50"])),
            ("complete: end of speech -> prompt p90 (ms)", "complete", lambda x: round(x["eos_to_prompt_ms"]["p90"])),
            ("complete: split into several prompts", "complete", lambda x: f"{x['split_share']:.0%}"),
            ("complete: word error rate", "complete", lambda x: f"{x['wer']:.1%}"),
            ("paused: split into several prompts", "paused", lambda x: f"{x['split_share']:.0%}"),
            ("paused: end of speech -> prompt p50 (ms)", "paused", lambda x: round(x["eos_to_prompt_ms"]["p50"]))]
    for label, set_name, fn in rows:
        print(f"{label:44}" + "".join(f"{fn(r['variants'][v][set_name])!s:>14}" for v in ("smart", "silence")))
    cpu = r["decision_cpu_ms"]
    print(f"end-of-turn model CPU per decision: p50 {cpu['p50']} ms, max {cpu['max']} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, required=True, help="root of the unpacked Debian packages")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--pause-ms", type=int, default=800)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path("out/bench-turns.json"))
    args = parser.parse_args()
    logs.configure("WARNING")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    engines = load_engines(load(None))
    if engines.turn_model is None:
        print("the end-of-turn model is not installed (pip install --no-deps pipecat-ai==1.14.0)", file=sys.stderr)
        return 2
    r = trio.run(bench, args, engines)
    r["machine"] = machine()
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(r, indent=2))
    print_table(r)
    print(f"\nJSON: {args.out}  ({r['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
