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
# The longest hints worth passing on. Whisper reads at most 223 tokens of prompt (half its 448-token
# text context, less one) and faster-whisper keeps the *last* 223; at the usual few characters a
# token that is well under 4096 characters, so longer hints cannot reach the model and only cost
# tokenising time on every recognition. The settings layer refuses longer ones; hint_prompt trims.
MAX_HINTS_CHARS = 4096


@dataclass(frozen=True)
class WhisperSettings:
    beam_size: int = 5
    compute_type: str = "int8"
    device: str = "cpu"
    cpu_threads: int = 2
    hints: str = ""  # for every utterance; a call's own hints are added to these


def join_hints(*hints: str) -> str:
    """Comma-separated phrases, blanks and repeats dropped, order kept."""
    # A dict keeps the first-seen order and finds a repeat at once; searching a list for each phrase
    # made hints from a call's parameters cost quadratic time on every recognition.
    phrases = dict.fromkeys(phrase for h in hints for phrase in (p.strip() for p in h.split(",")) if phrase)
    return ", ".join(phrases)


def hint_prompt(*hints: str) -> str:
    """Whisper's initial prompt for ``hints``: the phrases as one finished sentence ("" for none).

    Whisper reads the prompt as what was said just before the utterance. Left open ("asterisco,
    obtener"), the model takes the utterance as its continuation and drops the hinted words that
    open it; closed with a full stop, the utterance starts afresh. On 20 Spanish telephone prompts
    with the multilingual base (benchmarks/bench_languages.py) WER went 16% -> 29% with the open
    prompt and 16% -> 12% with the closed one; on 20 English ones tiny.en went 0.7% -> 1.4% open
    and stayed at 0.7% closed. Decode time did not change measurably.
    """
    joined = join_hints(*hints)
    if len(joined) > MAX_HINTS_CHARS:
        # Keep the whole phrases at the end, the part Whisper would keep (see MAX_HINTS_CHARS).
        sep = joined.find(", ", len(joined) - MAX_HINTS_CHARS - 2)
        joined = joined[sep + 2:] if sep >= 0 else joined[-MAX_HINTS_CHARS:].lstrip()
    return f"{joined}." if joined and joined[-1] not in ".!?" else joined


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
        # Hints cost a few tokens of decoder context and no extra pass (see hint_prompt).
        segments, info = self.model.transcribe(
            audio, language=lang or None, beam_size=self.settings.beam_size, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, temperature=0.0,
            initial_prompt=hint_prompt(self.settings.hints, hints) or None,
        )
        parts = [seg.text for seg in segments
                 if not (seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB)]
        return Transcript("".join(parts).strip(), lang or str(info.language))

    def warm_up(self) -> None:
        """One decode so the first call does not pay for lazy initialisation."""
        self.transcribe(np.zeros(self.sample_rate, dtype=np.float32), "en")
