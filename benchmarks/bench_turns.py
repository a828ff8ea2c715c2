"""Turn-taking: when the caller's turn ends, with the end-of-turn model (``smart``) and on silence alone.

Runs on purpose (``make bench-turns``), never in CI. Real models, the real server on loopback, the
simulated caller saying recorded English prompts (Asterisk's, 8 kHz human speech), side by side in
one run for ``vad.turn_detection`` "smart" and "silence", on two sets:

  complete   each utterance as recorded
  paused     utterances with their longest pause between words (inside the middle 80% of the
             speech, at least 40 ms) stretched to ``--pause-ms`` (800) of silence: a caller who
             stops to think mid-sentence (from all the one-sentence prompts, up to ``--clips``)

Only utterances of one sentence are used, so every stretched pause is a mid-sentence one.

Reported per variant and set: end of speech -> final prompt p50/p90 (the last prompt of each
utterance), the share of utterances split into more than one prompt, WER, and, for the model, the
CPU time of one decision (``TurnModel.complete`` on each complete utterance, one at a time) and a
sweep of the model alone over thresholds and rechecks (``threshold_sweep``): how many stretched
pauses it takes for finished turns against how long finished utterances wait for its yes.

Then sounds over agent speech, one call per variant: the caller presses a key, the app answers
with a reply of a few sentences, and 0.8-2.0 s into it the caller makes a sound:

  ack        a real acknowledgement ("Thank you.", twice; "Oh."; "O. K.", spoken as two letters)
  noise      a synthetic cough, knock, line crackle or hum (``relay_bridge.sim.noise``)
  words      a real utterance (a prompt of the set): a real interruption

Reported: the share of each kind that cut the agent (the app got ``interrupt``), the share after
which the caller lost words of the reply (its ``tokensPlayed`` do not add up to the whole reply), onset of
the sound -> ``clear`` at the caller (the agent stops), onset -> ``interrupt`` at the app, and how
long the agent paused before it went on. Variants: ``smart`` and ``silence`` (with
``ignoreBackchannel`` on), and ``barge-in`` (turns on silence, no holds: the behaviour before holds,
where every sound over the agent cuts it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
import webrtcvad
from bench_calls import asr_trial, summary
from machine import machine
from speechset import SOUNDS, phone_line, select_clips

from relay_bridge import logs
from relay_bridge.audio.telephony import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE_HZ
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.config import load, replace
from relay_bridge.daemon import load_engines
from relay_bridge.engines.turn import TurnModel
from relay_bridge.loopback import first_after, run_loopback_call
from relay_bridge.sim.agent import AgentScript
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip, load_clip
from relay_bridge.sim.noise import KINDS, noise_burst
from relay_bridge.sim.scoring import normalise

MIN_GAP_MS = 40  # a gap between words the VAD can see (two 20 ms frames)
REPLY = ("Here is a long answer, so that you have time to interrupt me. It goes on for a while, "
         "sentence after sentence, the way a talkative agent does.")
ACKS = ("auth-thankyou", "privacy-thankyou", "digits/oh", "letters/o+letters/k")
QUIET_S = 1.5  # agent silence that ends a trial (longer than any hold)
SETTLE_S = 2.5  # after a sound: its turn has ended and its prompt reached the app


def one_sentence(clip: Clip) -> bool:
    """One sentence: no sentence punctuation before its end (a pause inside it is mid-sentence)."""
    return not any(mark in clip.text.rstrip(" .!?") for mark in ".!?;:")


def acknowledgements(root: Path) -> list[Clip]:
    sounds = root / SOUNDS["en"]
    clips = []
    for name in ACKS:
        parts = [load_clip(sounds / f"{part}.wav", "") for part in name.split("+")]
        samples = np.concatenate([p.samples for p in parts])
        text = {"digits/oh": "Oh.", "letters/o+letters/k": "OK."}.get(name, "Thank you.")
        clips.append(Clip(name, text, samples, parts[0].speech_start,
                          sum(len(p.samples) for p in parts[:-1]) + parts[-1].speech_end))
    return clips


async def over_speech_trial(engines: SpeechEngines, cfg: Any, sounds: list[tuple[str, Clip, float]]) -> dict[str, Any]:
    """One call: a clean reply, then for each (kind, sound, offset) a reply with the sound ``offset`` s in."""
    trials: list[dict[str, Any]] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.pause(0.5)
        for kind, clip, offset in [("clean", None, 0.0), *sounds]:
            start = trio.current_time()
            await caller.press("1")
            with trio.fail_after(20):
                await caller.wait_agent_audio()
            onset = None
            if clip is not None:
                await caller.pause(offset)
                onset = caller.start_saying(clip).onset
                await caller.finish_saying()
                await caller.pause(SETTLE_S)  # the turn it may start is over before the next key
            with trio.fail_after(60):
                await caller.wait_agent_quiet(QUIET_S)
            trials.append({"kind": kind, "sound": clip.name if clip else "", "start": start, "onset": onset,
                           "end": trio.current_time()})
        await caller.hang_up()

    agent = AgentScript(greeting="", answer=lambda heard, turn: "", on_key=lambda digit: REPLY)
    call = await run_loopback_call(engines, cfg, script, agent_script=agent)
    ear, caller = call.caller.ear, call.caller
    interrupts = [t for t, _ in call.timeline.find("app", "<- interrupt")]
    tokens_played = [(t, d["value"]) for t, d in call.timeline.find("app", "<- info")
                     if d.get("name") == "tokensPlayed"]

    def within(trial: dict[str, Any], t: float | None) -> float | None:
        return t if t is not None and t < trial["end"] else None

    rows = []
    for trial in trials:
        ticks = caller.agent_ticks_between(trial["start"], trial["end"])
        played = [i for i, heard in enumerate(ticks) if heard]
        heard_ms = len(played) * FRAME_MS
        span_ms = (played[-1] - played[0] + 1) * FRAME_MS if played else 0
        heard_text = " ".join(text for t, text in tokens_played if trial["start"] <= t < trial["end"])
        row = {"kind": trial["kind"], "sound": trial["sound"], "heard_ms": heard_ms, "gaps_ms": span_ms - heard_ms,
               "heard_all": normalise(heard_text) == normalise(REPLY)}
        onset = trial["onset"]
        if onset is not None:
            interrupt = within(trial, first_after(interrupts, onset))
            clear = within(trial, first_after(ear.clears, onset))
            row |= {"cut": interrupt is not None,
                    "onset_to_interrupt_ms": None if interrupt is None else (interrupt - onset) * 1000,
                    "onset_to_clear_ms": None if clear is None else (clear - onset) * 1000}
        rows.append(row)
    clean = rows[0]
    assert clean["heard_all"], "the reply without a sound over it was not heard in full"
    for row in rows[1:]:
        row["lost"] = not row["heard_all"]
        row["paused_ms"] = max(0, row["gaps_ms"] - clean["gaps_ms"]) if not row["cut"] else None
    out: dict[str, Any] = {"clean_reply_ms": clean["heard_ms"], "trials": rows[1:]}
    for kind in ("ack", "noise", "words"):
        mine = [r for r in rows[1:] if r["kind"] == kind]
        if not mine:
            continue
        paused = [r["paused_ms"] for r in mine if r["paused_ms"] is not None and r["paused_ms"] > 0]
        out[kind] = {"n": len(mine), "cut_share": round(sum(r["cut"] for r in mine) / len(mine), 3),
                     "lost_share": round(sum(r["lost"] for r in mine) / len(mine), 3),
                     "onset_to_clear_ms": summary([r["onset_to_clear_ms"] for r in mine
                                                   if r["onset_to_clear_ms"] is not None]),
                     "onset_to_interrupt_ms": summary([r["onset_to_interrupt_ms"] for r in mine
                                                       if r["onset_to_interrupt_ms"] is not None]),
                     "paused_ms": summary(paused)}
    return out


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


SWEEP_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
SWEEP_CHECKS_MS = (160, 460, 760)  # the model's first decision and its rechecks within an 800 ms pause


def pause_start(clip: Clip, pause_ms: int) -> int:
    """Where ``stretch_pause`` put the pause in ``clip`` (8 kHz samples)."""
    silent = np.convolve((clip.samples == 0).astype(np.int32), np.ones(pause_ms * 8, dtype=np.int32), "valid")
    return int(np.flatnonzero(silent == pause_ms * 8)[0])


def threshold_sweep(model: TurnModel, clips: list[Clip], paused: list[Clip], pause_ms: int) -> list[dict[str, Any]]:
    """The model alone, on the same audio the bridge gives it: for each threshold and number of checks,
    the share of stretched pauses it takes for a finished turn (a split), and how long finished
    utterances wait for its yes (p50/p90; the cap, 1,500 ms, when no check says yes)."""
    at_end = [[model.complete(phone_line(c)[: 2 * c.speech_end + 16 * ms]) for ms in SWEEP_CHECKS_MS] for c in clips]
    at_pause = [[model.complete(phone_line(c)[: 2 * pause_start(c, pause_ms) + 16 * ms]) for ms in SWEEP_CHECKS_MS]
                for c in paused]
    rows = []
    for threshold in SWEEP_THRESHOLDS:
        for checks in range(1, len(SWEEP_CHECKS_MS) + 1):
            waits = [next((SWEEP_CHECKS_MS[i] for i in range(checks) if p[i] >= threshold), 1500) for p in at_end]
            split = sum(any(p[i] >= threshold for i in range(checks)) for p in at_pause) / len(at_pause)
            rows.append({"threshold": threshold, "checks_ms": SWEEP_CHECKS_MS[:checks],
                         "pause_split_share": round(split, 3), "finished_wait_ms": summary([float(w) for w in waits])})
    return rows


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
    out: dict[str, Any] = {"variants": {}}
    if "turns" in args.sets or "sweep" in args.sets:
        pool = [c for c in select_clips(args.speech_dir, "en", None, args.seed, min_s=1.5, max_s=6.0)
                if one_sentence(c)]
        clips = pool[: args.clips]
        # Few prompts have a gap between words long enough to find: the paused set looks through all of them.
        paused = [c for c in (stretch_pause(c, args.pause_ms) for c in pool) if c is not None][: args.clips]
        out |= {"clips": len(clips), "paused_clips": len(paused), "pause_ms": args.pause_ms}
    if "turns" in args.sets:
        for name, cfg in (("smart", base), ("silence", replace(base, vad__turn_detection="silence"))):
            for set_name, chosen in (("complete", clips), ("paused", paused)):
                print(f"[{name}] {set_name}: {len(chosen)} utterances ...", file=sys.stderr, flush=True)
                r = await asr_trial(engines, cfg, chosen)
                out["variants"].setdefault(name, {})[set_name] = {
                    "eos_to_prompt_ms": r["eos_to_prompt_ms"], "wer": r["wer"],
                    "split_share": round(r["split_utterances"] / len(chosen), 3), "missed": r["missed"],
                    "clips": r["clips"]}
    if "sweep" in args.sets:
        print("[model] decisions and the threshold sweep ...", file=sys.stderr, flush=True)
        assert isinstance(engines.turn_model, TurnModel)
        out["decision_cpu_ms"] = decision_cpu_ms(engines.turn_model, clips)
        out["threshold_sweep"] = threshold_sweep(engines.turn_model, clips, paused, args.pause_ms)
    if "over" in args.sets:
        rng = random.Random(args.seed)
        acks = acknowledgements(args.speech_dir)
        words = select_clips(args.speech_dir, "en", args.over, args.seed + 1, min_s=1.5, max_s=4.0)
        sounds = ([("ack", acks[i % len(acks)], 0.0) for i in range(args.over)]
                  + [("noise", noise_burst(KINDS[i % len(KINDS)], i), 0.0) for i in range(args.over)]
                  + [("words", clip, 0.0) for clip in words])
        rng.shuffle(sounds)
        sounds = [(kind, clip, round(rng.uniform(0.8, 2.0), 2)) for kind, clip, _ in sounds]
        base = replace(base, session__events="tokens-played")  # what the caller heard, word by word
        ignoring = replace(base, session__ignore_backchannel=True)
        variants = {"smart": ignoring, "silence": replace(ignoring, vad__turn_detection="silence"),
                    "barge-in": replace(base, vad__turn_detection="silence",
                                        session__resume_after_false_barge_in=False)}
        for name, cfg in variants.items():
            print(f"[{name}] sounds over agent speech: {len(sounds)} ...", file=sys.stderr, flush=True)
            out["variants"].setdefault(name, {})["over"] = await over_speech_trial(engines, cfg, sounds)
    return out


def print_table(r: dict[str, Any]) -> None:
    variants = r["variants"]
    if "smart" in variants and "complete" in variants["smart"]:
        print(f"\n{r['clips']} one-sentence utterances, {r['paused_clips']} of them with a pause stretched "
              f"to {r['pause_ms']} ms")
        print(f"{'':46}{'smart':>12}{'silence':>12}")
        rows = [("complete: end of speech -> prompt p50 (ms)", "complete",
                 lambda x: round(x["eos_to_prompt_ms"]["p50"])),
                ("complete: end of speech -> prompt p90 (ms)", "complete",
                 lambda x: round(x["eos_to_prompt_ms"]["p90"])),
                ("complete: split into several prompts", "complete", lambda x: f"{x['split_share']:.0%}"),
                ("complete: word error rate", "complete", lambda x: f"{x['wer']:.1%}"),
                ("paused: split into several prompts", "paused", lambda x: f"{x['split_share']:.0%}"),
                ("paused: end of speech -> prompt p50 (ms)", "paused", lambda x: round(x["eos_to_prompt_ms"]["p50"]))]
        for label, set_name, fn in rows:
            print(f"{label:46}" + "".join(f"{fn(variants[v][set_name])!s:>12}" for v in ("smart", "silence")))
    if "decision_cpu_ms" in r:
        cpu = r["decision_cpu_ms"]
        print(f"end-of-turn model CPU per decision: p50 {cpu['p50']} ms, max {cpu['max']} ms")
        print(f"\nthe model alone on {r['clips']} finished utterances and {r['paused_clips']} stretched pauses: "
              "pauses taken for finished turns, and finished turns' wait for a yes (p50/p90)")
        for row in r["threshold_sweep"]:
            wait = row["finished_wait_ms"]
            print(f"  threshold {row['threshold']:.1f}, checks at {', '.join(map(str, row['checks_ms']))} ms: "
                  f"pauses split {row['pause_split_share']:.0%}, "
                  f"finished wait {wait['p50']:.0f} / {wait['p90']:.0f} ms")
    names = [v for v in ("smart", "silence", "barge-in") if "over" in variants.get(v, {})]
    if not names:
        return
    print("\nsounds over agent speech (smart and silence with ignoreBackchannel; barge-in: no holds)")
    print(f"{'':46}" + "".join(f"{v:>12}" for v in names))

    def cell(over: dict[str, Any], kind: str, key: str) -> str:
        x = over.get(kind)
        if x is None:
            return "-"
        if key.endswith("share"):
            return f"{x[key]:.0%}"
        p50 = x[key]["p50"]
        return "-" if p50 != p50 else str(round(p50))  # nan: none

    rows2 = [("acknowledgements that cut the agent", "ack", "cut_share"),
             ("acknowledgements: agent paused p50 (ms)", "ack", "paused_ms"),
             ("noise bursts that cut the agent", "noise", "cut_share"),
             ("noise bursts after which words were lost", "noise", "lost_share"),
             ("noise bursts: agent paused p50 (ms)", "noise", "paused_ms"),
             ("real interruptions that cut the agent", "words", "cut_share"),
             ("real interruptions: onset -> clear p50 (ms)", "words", "onset_to_clear_ms"),
             ("real interruptions: onset -> interrupt p50 (ms)", "words", "onset_to_interrupt_ms")]
    for label, kind, key in rows2:
        print(f"{label:46}" + "".join(f"{cell(variants[v]['over'], kind, key):>12}" for v in names))
    for v in names:
        clears = variants[v]["over"].get("words", {}).get("onset_to_clear_ms", {})
        if clears:
            print(f"  {v}: real interruptions onset -> clear p90 {clears['p90']:.0f} ms, max {clears['max']:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, required=True, help="root of the unpacked Debian packages")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--pause-ms", type=int, default=800)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--over", type=int, default=12, help="sounds of each kind over agent speech")
    parser.add_argument("--sets", default="turns,sweep,over", help="turns (complete and paused utterances), over "
                        "(sounds over agent speech), sweep (the model alone: thresholds and rechecks), or several")
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
