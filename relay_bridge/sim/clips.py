"""Recorded speech for the simulated caller: 8 kHz clips with their transcripts and speech bounds."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from relay_bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float
from relay_bridge.audio.telephony import FRAME_SAMPLES, SAMPLE_RATE_HZ

BUNDLED = Path(__file__).parent / "clips"


@dataclass(frozen=True)
class Clip:
    name: str
    text: str
    samples: NDArray[np.int16]
    speech_start: int  # first 20 ms frame with speech energy
    speech_end: int  # end of the last such frame
    language: str = "en"  # the spoken language, as Whisper names it

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE_HZ


def read_wav(path: Path) -> NDArray[np.int16]:
    """Mono 16-bit samples at 8 kHz from a PCM WAV file (resampled and downmixed if needed)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        channels, rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != SAMPLE_RATE_HZ:
        r = StreamResampler(rate, SAMPLE_RATE_HZ)
        x = pcm16_to_float(data)
        data = float_to_pcm16(np.concatenate((r.process(x), r.flush())))
    return data


def speech_bounds(samples: NDArray[np.int16]) -> tuple[int, int]:
    """Where the speech is, by frame energy (the clips are clean recordings with silent padding)."""
    n = len(samples) // FRAME_SAMPLES
    if n == 0:
        return 0, len(samples)
    frames = samples[: n * FRAME_SAMPLES].astype(np.float64).reshape(n, FRAME_SAMPLES)
    rms = np.sqrt((frames**2).mean(axis=1))
    threshold = max(rms.max() * 0.05, 60.0)
    voiced = np.flatnonzero(rms > threshold)
    if len(voiced) == 0:
        return 0, 0
    return int(voiced[0]) * FRAME_SAMPLES, int(voiced[-1] + 1) * FRAME_SAMPLES


def load_transcripts(path: Path, language: str = "en") -> dict[str, str]:
    """``name: text`` lines; those after a ``[xx]`` line are in language xx (before any: English)."""
    out = {}
    current = "en"
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
            continue
        if not stripped or line.startswith(";") or ":" not in line or current != language:
            continue
        name, _, text = line.partition(":")
        out[name.strip()] = text.strip()
    return out


def load_clip(path: Path, text: str, language: str = "en") -> Clip:
    samples = read_wav(path)
    start, end = speech_bounds(samples)
    return Clip(name=path.stem, text=text, samples=samples, speech_start=start, speech_end=end, language=language)


def bundled_clips(language: str = "en") -> dict[str, Clip]:
    """The bundled clips spoken in ``language`` (Whisper's name: "en", "es")."""
    transcripts = load_transcripts(BUNDLED / "transcripts.txt", language)
    return {name: load_clip(BUNDLED / f"{name}.wav", text, language) for name, text in transcripts.items()}
