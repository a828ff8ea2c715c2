"""faster-whisper recogniser, tuned for short telephone utterances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.engines.base import Transcript

# Whisper's usual guard against hallucinated text on silence or noise (faster-whisper #826).
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0


@dataclass(frozen=True)
class WhisperSettings:
    beam_size: int = 5
    compute_type: str = "int8"
    device: str = "cpu"
    cpu_threads: int = 2
    hints: str = ""  # for every utterance; a call's own hints are added to these


def join_hints(*hints: str) -> str:
    """Comma-separated phrases, blanks and repeats dropped, order kept."""
    phrases: list[str] = []
    for h in hints:
        for phrase in (p.strip() for p in h.split(",")):
            if phrase and phrase not in phrases:
                phrases.append(phrase)
    return ", ".join(phrases)


class WhisperTranscriber:
    sample_rate = 16000

    def __init__(self, model_dir: Path, settings: WhisperSettings | None = None) -> None:
        from faster_whisper import WhisperModel

        self.settings = s = settings or WhisperSettings()
        self.model = WhisperModel(str(model_dir), device=s.device, compute_type=s.compute_type,
                                  cpu_threads=s.cpu_threads)
        self.multilingual = bool(self.model.model.is_multilingual)

    def transcribe(self, audio: NDArray[np.float32], language: str, *, hints: str = "") -> Transcript:
        # An English-only model can only be asked for English; "" lets a multilingual one detect.
        lang = language if self.multilingual else "en"
        if len(audio) == 0:
            return Transcript("", lang)
        # Hints go in as Whisper's hotwords: prompt text the decoder continues from, which costs a
        # few tokens of decoder context and no extra pass (benchmarks/bench_languages.py measures it).
        segments, info = self.model.transcribe(
            audio, language=lang or None, beam_size=self.settings.beam_size, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, temperature=0.0,
            hotwords=join_hints(self.settings.hints, hints) or None,
        )
        parts = [seg.text for seg in segments
                 if not (seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB)]
        return Transcript("".join(parts).strip(), lang or str(info.language))

    def warm_up(self) -> None:
        """One decode so the first call does not pay for lazy initialisation."""
        self.transcribe(np.zeros(self.sample_rate, dtype=np.float32), "en")
