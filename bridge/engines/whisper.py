"""faster-whisper recogniser, tuned for short telephone utterances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# Whisper's usual guard against hallucinated text on silence or noise (faster-whisper #826).
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0


@dataclass(frozen=True)
class WhisperSettings:
    beam_size: int = 5
    compute_type: str = "int8"
    device: str = "cpu"
    cpu_threads: int = 2
    hints: str = ""


class WhisperTranscriber:
    sample_rate = 16000

    def __init__(self, model_dir: Path, settings: WhisperSettings | None = None) -> None:
        from faster_whisper import WhisperModel

        self.settings = s = settings or WhisperSettings()
        self.model = WhisperModel(str(model_dir), device=s.device, compute_type=s.compute_type,
                                  cpu_threads=s.cpu_threads)
        self.multilingual = bool(self.model.model.is_multilingual)

    def transcribe(self, audio: NDArray[np.float32], language: str) -> str:
        if len(audio) == 0:
            return ""
        lang = language if self.multilingual else "en"
        segments, _info = self.model.transcribe(
            audio, language=lang or None, beam_size=self.settings.beam_size, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, temperature=0.0,
            initial_prompt=self.settings.hints or None,
        )
        parts = [seg.text for seg in segments
                 if not (seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB)]
        return "".join(parts).strip()

    def warm_up(self) -> None:
        """One decode so the first call does not pay for lazy initialisation."""
        self.transcribe(np.zeros(self.sample_rate, dtype=np.float32), "en")
