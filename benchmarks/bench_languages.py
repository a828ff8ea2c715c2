"""Recognition per language: decode time and WER of tiny.en and the multilingual base, and hints.

Runs on purpose (``make bench-languages``), never in CI. Each utterance is a recorded Asterisk
prompt (8 kHz human speech) sent through the phone line (mu-law) and recognised by the same
``WhisperTranscriber`` the daemon uses, one utterance at a time, as a call would.

Modes:
  tiny.en/en      the default English model on English speech
  base/en         the multilingual base on English speech
  base/es         the multilingual base on Spanish speech, told the language
  base/multi      the multilingual base on Spanish speech, detecting the language ("multi")
Hints (on Spanish with base/es, and English with tiny.en/en): the two longest words of each
reference, given as the bridge gives them (Whisper's initial prompt, closed with a full stop:
``hint_prompt``) or as an open prompt (the phrases as they are, e.g. faster-whisper ``hotwords``).

Measured: decode_ms per utterance (p50, p90, mean), real-time factor (decode time / speech time),
WER on normalised text with accents folded (the Spanish transcripts are written without them), and
for multi the share of utterances detected as Spanish.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine
from numpy.typing import NDArray
from speechset import fold, phone_line, select_clips

from relay_bridge.config import MULTILINGUAL_MODEL
from relay_bridge.engines.models import resolve
from relay_bridge.engines.whisper import LOW_LOGPROB, NO_SPEECH_PROB, WhisperSettings, WhisperTranscriber
from relay_bridge.sim.clips import Clip, bundled_clips
from relay_bridge.sim.scoring import wer


def hints_for(clip: Clip) -> str:
    words = sorted({w.strip(".,;:!?¿¡") for w in clip.text.split()}, key=len, reverse=True)
    return ", ".join(words[:2])


def with_open_prompt(t: WhisperTranscriber, audio: NDArray[np.float32], language: str, prompt: str) -> str:
    """As ``WhisperTranscriber.transcribe``, but with ``prompt`` as it is."""
    segments, _ = t.model.transcribe(audio, language=language, beam_size=t.settings.beam_size,
                                     without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                                     temperature=0.0, initial_prompt=prompt)
    return "".join(s.text for s in segments
                   if not (s.no_speech_prob > NO_SPEECH_PROB and s.avg_logprob < LOW_LOGPROB)).strip()


def summary(times_ms: list[float], speech_s: float) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {"n": len(ordered), "p50": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "mean": statistics.fmean(ordered), "rtf": sum(ordered) / 1000 / speech_s}


def run_mode(t: WhisperTranscriber, clips: list[Clip], language: str, hints: str = "") -> dict[str, Any]:
    times, pairs, rows, detected = [], [], [], []
    for clip in clips:
        audio = phone_line(clip)
        h = hints_for(clip) if hints else ""
        t0 = time.perf_counter()
        if hints == "open":
            text, lang = with_open_prompt(t, audio, language, h), language
        else:
            result = t.transcribe(audio, language, hints=h)
            text, lang = result.text, result.language
        times.append((time.perf_counter() - t0) * 1000)
        pairs.append((fold(clip.text), fold(text)))
        detected.append(lang)
        rows.append({"clip": clip.name, "reference": clip.text, "heard": text, "language": lang,
                     "hints": h, "decode_ms": round(times[-1], 1)})
    out: dict[str, Any] = {"decode_ms": summary(times, sum(c.seconds for c in clips)), "wer": wer(pairs)}
    if not language:
        out["detected"] = {lang: detected.count(lang) for lang in sorted(set(detected))}
    out["clips"] = rows
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-dir", type=Path, default=None,
                        help="unpacked asterisk-core-sounds-{en,es}(-wav) (make speech-data); default: bundled clips")
    parser.add_argument("--clips", type=int, default=20, help="utterances per language from --speech-dir")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench-languages.json"))
    args = parser.parse_args()

    if args.speech_dir:
        clips = {lang: select_clips(args.speech_dir, lang, args.clips, args.seed, min_s=1.5, max_s=8.0, digits=False)
                 for lang in ("en", "es")}
    else:
        clips = {lang: list(bundled_clips(lang).values()) for lang in ("en", "es")}
    settings = WhisperSettings(cpu_threads=args.cpu_threads)
    tiny = WhisperTranscriber(resolve("tiny.en", "asr").path, settings)
    base = WhisperTranscriber(resolve(MULTILINGUAL_MODEL, "asr").path, settings)
    for t in (tiny, base):
        t.warm_up()

    modes = {
        "tiny.en/en": (tiny, "en", "en", ""),
        "base/en": (base, "en", "en", ""),
        "base/es": (base, "es", "es", ""),
        "base/multi": (base, "es", "", ""),
        "tiny.en/en+hints": (tiny, "en", "en", "bridge"),
        "tiny.en/en+hints-open": (tiny, "en", "en", "open"),
        "base/es+hints": (base, "es", "es", "bridge"),
        "base/es+hints-open": (base, "es", "es", "open"),
    }
    results: dict[str, Any] = {
        "machine": machine(),
        "cpu_threads": args.cpu_threads, "beam_size": settings.beam_size, "compute_type": settings.compute_type,
        "clips": {lang: len(c) for lang, c in clips.items()},
        "speech_seconds": {lang: sum(x.seconds for x in c) for lang, c in clips.items()},
        "modes": {},
    }
    print(f"{'mode':28} {'n':>3} {'p50 ms':>8} {'p90 ms':>8} {'RTF':>6} {'WER':>6}")
    for name, (t, lang, asked, hints) in modes.items():
        r = run_mode(t, clips[lang], asked, hints)
        results["modes"][name] = r
        d = r["decode_ms"]
        extra = f"  detected {r['detected']}" if "detected" in r else ""
        print(f"{name:28} {d['n']:>3} {d['p50']:>8.0f} {d['p90']:>8.0f} {d['rtf']:>6.2f} {r['wer']:>6.3f}{extra}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
