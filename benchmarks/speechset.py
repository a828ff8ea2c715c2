"""The recorded-speech set for the benchmarks: Debian's Asterisk prompts (8 kHz human speech).

``make speech-data`` unpacks the English prompts and their transcripts into ``.cache/speech/root``,
and the Spanish ones for the benchmarks that need them.
"""

from __future__ import annotations

import gzip
import random
import unicodedata
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from relay_bridge.audio.g711 import ulaw_decode, ulaw_encode
from relay_bridge.audio.resample import pcm16_to_float, resample_once
from relay_bridge.sim.clips import Clip, load_clip
from relay_bridge.sim.scoring import normalise

SOUNDS = {"en": "usr/share/asterisk/sounds/en_US_f_Allison", "es": "usr/share/asterisk/sounds/es_MX_f_Allison"}
TRANSCRIPTS = {"en": "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz",
               "es": "usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz"}


def fold(text: str) -> str:
    """Normalised, with accents dropped ("extensión" and "extension" score as the same word)."""
    decomposed = unicodedata.normalize("NFKD", normalise(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def transcripts(root: Path, language: str) -> list[tuple[Path, str]]:
    """Every prompt of ``language`` that has a WAV and a plain-text transcript, in the file's order."""
    with gzip.open(root / TRANSCRIPTS[language], "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    found = []
    for line in lines:
        name, sep, text = line.partition(":")
        text = text.strip()
        path = root / SOUNDS[language] / f"{name.strip()}.wav"
        if sep and not line.startswith(";") and "/" not in name and text and "[" not in text and path.is_file():
            found.append((path, text))
    return found


def select_clips(root: Path, language: str, count: int | None, seed: int, *, min_s: float = 0.0,
                 max_s: float = float("inf"), digits: bool = True) -> list[Clip]:
    """``count`` prompts (None: all) of ``min_s``-``max_s`` seconds with plain-text transcripts, in a
    seeded random order; ``digits`` False leaves out transcripts with digits in them."""
    candidates = transcripts(root, language)
    random.Random(seed).shuffle(candidates)
    clips = []
    for path, text in candidates:
        clip = load_clip(path, text, language)
        if min_s <= clip.seconds <= max_s and (digits or not any(ch.isdigit() for ch in text)):
            clips.append(clip)
        if len(clips) == count:
            break
    return clips


def phone_line(clip: Clip) -> NDArray[np.float32]:
    """The clip as the bridge hears it: mu-law at 8 kHz, then 16 kHz float for Whisper."""
    line = ulaw_decode(ulaw_encode(clip.samples))
    return resample_once(pcm16_to_float(line), 8000, 16000).astype(np.float32)
