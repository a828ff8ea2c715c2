"""Recognition cost and accuracy by encoder window: the whole recorded-speech set, side by side.

Runs on purpose (``make bench-asr``), never in CI. Every Asterisk prompt with a plain-text
transcript (English and Spanish, any length) goes through the phone line (mu-law at 8 kHz, then
16 kHz) and is recognised, one utterance at a time, on one model and language per mode:

  today       ``WhisperModel.transcribe`` as the bridge called it before it owned the decode: the
              encoder over the full 30 s window.
  W s, beam B ``WhisperTranscriber.decode_window``: the audio zero-padded to a fixed W-second
              window, encoded, decoded with beam B (for every W the clip fits in).

Then each *rule* (a set of windows and a fill: an utterance takes the shortest window it fills no
more than ``fill`` of, else the full one; ``WhisperSettings.window_for``) is scored from those
per-clip results: WER on normalised text (accents folded) and decode time p50/p90/mean, beside
``today``. For the multilingual model on Spanish, ``--detect-windows`` also runs language detection
(the language not given) at those windows: the share detected as Spanish, WER and decode time.

JSON out (``--out``), with every clip's text at every window.

``--throughput 1x2 2x1 ...`` measures instead how to spend the cores: for each ``WxT`` (W decodes
side by side, T threads each; CTranslate2's ``num_workers`` and ``cpu_threads``), W threads
decode the English clips with tiny.en and the default windows as fast as they can; reported are
decodes per second and each decode's time (p50, p90). ``WxTbB`` (e.g. ``1x2b2``) decodes B clips at
once in one CTranslate2 call (the same window, the longest clip's): encoder and decoder batched, as
a scheduler that merged queued decodes of several calls would run them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import machine
from speechset import fold, phone_line, select_clips

from relay_bridge.config import MULTILINGUAL_MODEL
from relay_bridge.engines.models import resolve
from relay_bridge.engines.whisper import FULL_WINDOW_S, WhisperSettings, WhisperTranscriber
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.scoring import wer

FILLS = (0.5, 0.67, 0.8, 1.0)


@dataclass
class Decoded:
    text: str
    ms: float
    language: str = ""


@dataclass
class ClipResult:
    clip: Clip
    today: Decoded | None = None
    windows: dict[tuple[int, int], Decoded] = field(default_factory=dict)  # (window, beam) -> result
    detected: dict[int, Decoded] = field(default_factory=dict)  # window -> result with the language not given


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000


def stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50": round(statistics.median(ordered), 1), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "mean": round(statistics.fmean(ordered), 1)}


def run_mode(t: WhisperTranscriber, clips: list[Clip], language: str, windows: list[int], beams: list[int],
             detect_windows: list[int], today: bool) -> list[ClipResult]:
    results = []
    for i, clip in enumerate(clips):
        audio = phone_line(clip)
        seconds = len(audio) / t.sample_rate
        r = ClipResult(clip)
        if today:
            transcript, ms = timed(t._transcribe_long, audio, language, "")
            r.today = Decoded(transcript.text, ms, transcript.language)
        for w, beam in itertools.product(windows, beams):
            if seconds <= w:
                transcript, ms = timed(t.decode_window, audio, language, "", w, beam_size=beam)
                r.windows[(w, beam)] = Decoded(transcript.text, ms, transcript.language)
                if w in detect_windows and beam == max(beams):
                    transcript, ms = timed(t.decode_window, audio, "", "", w, beam_size=beam)
                    r.detected[w] = Decoded(transcript.text, ms, transcript.language)
        results.append(r)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(clips)}", file=sys.stderr, flush=True)
    return results


def score_rules(results: list[ClipResult], windows: list[int], beams: list[int], language: str) -> list[dict[str, Any]]:
    """Every rule (windows ending with the full one, a fill, a beam) scored from the per-clip results."""
    rows = []
    if all(r.today is not None for r in results):
        today_pairs = [(fold(r.clip.text), fold(r.today.text)) for r in results if r.today]
        rows.append({"rule": "today", "windows_s": [FULL_WINDOW_S], "fill": 1.0, "beam": 5,
                     "wer": round(wer(today_pairs), 4), "decode_ms": stats([r.today.ms for r in results if r.today])})
    short = [w for w in windows if w < FULL_WINDOW_S]
    subsets = [list(c) for n in range(0, min(2, len(short)) + 1) for c in itertools.combinations(short, n)]
    for subset, fill, beam in itertools.product(subsets, FILLS, beams):
        if not subset and fill != 1.0:
            continue  # the full window alone: the fill does not matter
        settings = WhisperSettings(windows_s=(*subset, FULL_WINDOW_S), window_fill=fill)
        pairs, ms, used = [], [], {}
        for r in results:
            w = settings.window_for(r.clip.seconds)
            d = r.windows.get((w, beam))
            if d is None:  # longer than the full window: today's path (``transcribe`` splits it)
                d = r.today or Decoded("", 0.0)
            pairs.append((fold(r.clip.text), fold(d.text)))
            ms.append(d.ms)
            used[w] = used.get(w, 0) + 1
        row: dict[str, Any] = {"rule": f"{'+'.join(map(str, settings.windows_s))} fill {fill:g} beam {beam}",
                               "windows_s": list(settings.windows_s), "fill": fill, "beam": beam,
                               "wer": round(wer(pairs), 4), "decode_ms": stats(ms), "clips_per_window": used}
        rows.append(row)
    return rows


def detection(results: list[ClipResult], language: str) -> dict[str, Any]:
    """Per window: the share of utterances detected as ``language``, WER and decode time when detecting."""
    out = {}
    for w in sorted({w for r in results for w in r.detected}):
        found = [r for r in results if w in r.detected]
        out[f"{w}s"] = {"clips": len(found),
                        "detected_as_" + language: round(sum(r.detected[w].language == language for r in found)
                                                         / len(found), 4),
                        "wer": round(wer([(fold(r.clip.text), fold(r.detected[w].text)) for r in found]), 4),
                        "decode_ms": stats([r.detected[w].ms for r in found])}
    return out


def batched(tr: WhisperTranscriber, batch: list[Any], language: str) -> list[str]:
    """``batch`` decoded in one encoder and one decoder call over the window of its longest clip."""
    import ctranslate2
    import numpy as np

    window = tr.settings.window_for(max(len(a) for a in batch) / tr.sample_rate)
    extractor = tr.model.feature_extractor
    features = np.zeros((len(batch), tr.model.model.n_mels, window * tr.sample_rate // extractor.hop_length),
                        dtype=np.float32)
    for i, a in enumerate(batch):
        content = extractor(a)[:, :-1]
        features[i, :, :content.shape[1]] = content[:, :features.shape[2]]
    encoded = tr.model.model.encode(ctranslate2.StorageView.from_array(features))
    tokenizer, suppressed = tr._tokenizer(language)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    results = tr.model.model.generate(encoded, [prompt] * len(batch), beam_size=tr.settings.beam_size,
                                      max_length=min(tr.model.max_length, len(prompt) + 8 * window),
                                      suppress_blank=True, suppress_tokens=suppressed)
    return [tokenizer.decode(r.sequences_ids[0]) for r in results]


def throughput(speech_dir: Path, configs: list[str], clips_n: int | None, seed: int) -> dict[str, Any]:
    import concurrent.futures

    clips = select_clips(speech_dir, "en", clips_n, seed)
    audio = [phone_line(c) for c in clips]
    out: dict[str, Any] = {"clips": len(clips), "configs": {}}
    for config in configs:
        workers, _, rest = config.partition("x")
        threads, _, size = rest.partition("b")
        w, t, b = int(workers), int(threads), int(size or 1)
        tr = WhisperTranscriber(resolve("tiny.en", "asr").path, WhisperSettings(cpu_threads=t, workers=w))
        tr.warm_up()
        times: list[float] = []
        # Batches of clips of similar length (as a queue of the same window would give).
        order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
        groups = [[audio[i] for i in order[j:j + b]] for j in range(0, len(order), b)]

        def one(group: list[Any], tr: WhisperTranscriber = tr, times: list[float] = times) -> None:
            if len(group) == 1:
                times.append(timed(tr.transcribe, group[0], "en")[1])
            else:
                times.append(timed(batched, tr, group, "en")[1])

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(w) as pool:
            list(pool.map(one, groups))
        wall = time.perf_counter() - t0
        out["configs"][config] = {"decodes_per_s": round(len(audio) / wall, 2), "batch": b,
                                  "call_ms": stats(times)}
        print(f"{config}: {len(audio) / wall:.2f} decodes/s, call p50 {statistics.median(times):.0f} ms",
              file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, default=Path(".cache/speech/root"))
    parser.add_argument("--modes", nargs="+", default=["tiny.en/en", "base/en", "base/es"],
                        help="model/language: tiny.en or base (the multilingual one), en or es")
    parser.add_argument("--windows", type=int, nargs="+", default=[10, 12, 15, 20, 30])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--clips", type=int, default=None, help="per language (default: all)")
    parser.add_argument("--detect-windows", type=int, nargs="*", default=[],
                        help="windows at which to also detect the language of Spanish (base only)")
    parser.add_argument("--no-today", action="store_true",
                        help="skip today's decode (the full-window own decode stands for it)")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--throughput", nargs="+", metavar="WxT",
                        help="measure decodes per second for W parallel decodes of T threads each instead")
    parser.add_argument("--out", type=Path, default=Path("out/bench-asr.json"))
    args = parser.parse_args()
    if args.throughput:
        result = throughput(args.speech_dir, args.throughput, args.clips, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        return 0
    windows = sorted(set(args.windows) | {FULL_WINDOW_S})

    models = {"tiny.en": "tiny.en", "base": MULTILINGUAL_MODEL}
    loaded: dict[str, WhisperTranscriber] = {}
    out: dict[str, Any] = {
        "machine": machine(),
        "cpu_threads": args.cpu_threads, "compute_type": "int8", "windows_s": windows, "beams": args.beams,
        "modes": {},
    }
    for mode in args.modes:
        model, _, language = mode.partition("/")
        if model not in models or language not in ("en", "es"):
            parser.error(f"unknown mode {mode!r}")
        if model not in loaded:
            loaded[model] = WhisperTranscriber(resolve(models[model], "asr").path,
                                               WhisperSettings(cpu_threads=args.cpu_threads, windows_s=tuple(windows)))
            loaded[model].warm_up()
        clips = select_clips(args.speech_dir, language, args.clips, args.seed)
        print(f"{mode}: {len(clips)} clips, {sum(c.seconds for c in clips):.0f} s of speech", file=sys.stderr)
        detect = args.detect_windows if model == "base" and language == "es" else []
        results = run_mode(loaded[model], clips, language, windows, args.beams, detect, not args.no_today)
        rules = score_rules(results, windows, args.beams, language)
        out["modes"][mode] = {
            "clips": len(clips), "speech_s": round(sum(c.seconds for c in clips), 1),
            "rules": rules, "detection": detection(results, language),
            "per_clip": [{"clip": r.clip.name, "seconds": round(r.clip.seconds, 2), "reference": r.clip.text,
                          "today": r.today.__dict__ if r.today else None,
                          "windows": {f"{w}s/beam{b}": d.__dict__ for (w, b), d in r.windows.items()},
                          "detected": {f"{w}s": d.__dict__ for w, d in r.detected.items()}} for r in results],
        }
        print(f"\n{mode} ({len(clips)} clips)\n{'rule':32} {'WER':>7} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}")
        for row in sorted(rules, key=lambda x: x["decode_ms"]["mean"]):
            d = row["decode_ms"]
            print(f"{row['rule']:32} {row['wer']:>7.2%} {d['p50']:>8.0f} {d['p90']:>8.0f} {d['mean']:>8.0f}")
        for w, found in out["modes"][mode]["detection"].items():
            print(f"language not given, {w} window: detected as {language} {found['detected_as_' + language]:.1%}, "
                  f"WER {found['wer']:.2%}, p50 {found['decode_ms']['p50']:.0f} ms")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False))  # after every mode: partial results kept
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
