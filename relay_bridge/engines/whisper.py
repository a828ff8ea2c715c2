"""faster-whisper recogniser, tuned for short telephone utterances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relay_bridge.engines.base import Transcript

# Whisper's usual guard against hallucinated text on silence or noise (faster-whisper #826).
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
# The longest hints worth passing on. Whisper reads at most 223 tokens of prompt (half its 448-token
# text context, less one) and faster-whisper keeps the *last* 223; at the usual few characters a
# token that is well under 4096 characters, so longer hints cannot reach the model and only cost
# tokenising time on every recognition. The settings layer refuses longer ones; hint_prompt trims.
MAX_HINTS_CHARS = 4096


# Whisper's window: the encoder was trained on 30 s of log-mel features (3,000 frames of 10 ms).
FULL_WINDOW_S = 30
# Decoder tokens a window may produce per second of it: speech runs at 2-4 tokens a second; a model
# stuck repeating itself (a known Whisper failure on noise) is stopped there instead of at 448.
TOKENS_PER_WINDOW_S = 8


@dataclass(frozen=True)
class WhisperSettings:
    beam_size: int = 5
    compute_type: str = "int8"
    device: str = "cpu"
    cpu_threads: int = 2  # per decode
    workers: int = 1  # decodes the model runs side by side (CTranslate2's inter_threads)
    hints: str = ""  # for every utterance; a call's own hints are added to these
    # Encoder windows in seconds, shortest first; an utterance is decoded in the shortest one it
    # fills no more than ``window_fill`` of, else in the full 30 s window (see decode_window). The
    # defaults come from benchmarks/bench_asr.py over all 353 English Asterisk prompts (tiny.en, beam
    # 5): WER 17.3% against 16.7% with the full window alone, decode p50 152 ms against 492 ms.
    windows_s: tuple[int, ...] = (12, 20, FULL_WINDOW_S)
    window_fill: float = 0.8

    def __post_init__(self) -> None:
        if not self.windows_s or any(not 1 <= w <= FULL_WINDOW_S for w in self.windows_s):
            raise ValueError(f"windows_s must be whole seconds from 1 to {FULL_WINDOW_S}, got {self.windows_s}")
        if list(self.windows_s) != sorted(set(self.windows_s)):
            raise ValueError(f"windows_s must be in increasing order without repeats, got {self.windows_s}")
        if not 0 < self.window_fill <= 1:
            raise ValueError(f"window_fill must be above 0 and at most 1, got {self.window_fill}")

    def window_for(self, seconds: float) -> int:
        """The encoder window for an utterance of ``seconds``."""
        for w in self.windows_s:
            if seconds <= w * self.window_fill:
                return w
        return FULL_WINDOW_S


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


def words_or_nothing(text: str) -> str:
    """``text`` stripped, or "" when it holds no word (Whisper sometimes reads silence as ".")."""
    text = text.strip()
    return text if any(c.isalnum() for c in text) else ""


class WhisperTranscriber:
    """faster-whisper's model, tokenizer and features; the decode call is this class's own.

    faster-whisper always runs the encoder over a 30 s window (its ``chunk_length`` does not shorten
    the encoder input), and the encoder is most of a short utterance's cost. Here the log-mel
    features of the audio are padded to a fixed shorter window chosen by its length
    (``WhisperSettings.window_for``), encoded, and decoded with CTranslate2's ``generate`` with the same
    prompt, suppressed tokens and no-speech guard as ``WhisperModel.transcribe``. (Cutting the window
    to the utterance's own length instead makes Whisper hallucinate.) Audio longer than the full
    window goes to ``WhisperModel.transcribe``, which splits it.
    """

    sample_rate = 16000

    def __init__(self, model_dir: Path, settings: WhisperSettings | None = None) -> None:
        from faster_whisper import WhisperModel

        self.settings = s = settings or WhisperSettings()
        self.model = WhisperModel(str(model_dir), device=s.device, compute_type=s.compute_type,
                                  cpu_threads=s.cpu_threads, num_workers=s.workers)
        self.multilingual = bool(self.model.model.is_multilingual)
        self._tokenizers: dict[str, tuple[Any, list[int]]] = {}

    def _tokenizer(self, language: str) -> tuple[Any, list[int]]:
        """faster-whisper's tokenizer for ``language`` and the tokens it suppresses, made once."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        found = self._tokenizers.get(language)
        if found is None:
            tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
            found = self._tokenizers[language] = (tokenizer, list(get_suppressed_tokens(tokenizer, (-1,)) or ()))
        return found

    def transcribe(self, audio: NDArray[np.float32], language: str, *, hints: str = "") -> Transcript:
        # An English-only model can only be asked for English; "" lets a multilingual one detect.
        lang = language if self.multilingual else "en"
        if len(audio) == 0:
            return Transcript("", lang)
        prompt = hint_prompt(self.settings.hints, hints)
        if len(audio) > FULL_WINDOW_S * self.sample_rate:
            return self._transcribe_long(audio, lang, prompt)
        return self.decode_window(audio, lang, prompt, self.settings.window_for(len(audio) / self.sample_rate))

    def decode_window(self, audio: NDArray[np.float32], lang: str, prompt: str, window_s: int, *,
                      beam_size: int | None = None) -> Transcript:
        """One utterance of at most ``window_s`` seconds, decoded over a window of that length (beam
        ``beam_size``, else the settings')."""
        import ctranslate2

        n = window_s * self.sample_rate
        if len(audio) > n:
            raise ValueError(f"{len(audio) / self.sample_rate:.1f} s of audio do not fit a {window_s} s window")
        # As faster-whisper: the log-mel features of the audio itself, then zeros up to the window (so
        # the 30 s window gives exactly its input; padding the audio instead, as openai-whisper does,
        # makes silence come out as "you").
        extractor = self.model.feature_extractor
        content = extractor(audio)[:, :-1]
        features = np.zeros((content.shape[0], n // extractor.hop_length), dtype=np.float32)
        features[:, :content.shape[1]] = content[:, :features.shape[1]]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(features[None]))
        if not lang:
            lang = self.model.model.detect_language(encoded)[0][0][0][2:-2]  # "<|es|>" -> "es"
        tokenizer, suppressed = self._tokenizer(lang)
        tokens = []
        if prompt:
            # As faster-whisper's initial_prompt: the hint tokens as the previous text, at most half
            # the text context (the last ones kept).
            tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt)[-(self.model.max_length // 2 - 1):]]
        tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        max_length = min(self.model.max_length, len(tokens) + TOKENS_PER_WINDOW_S * window_s)
        result = self.model.model.generate(
            encoded, [tokens], beam_size=beam_size or self.settings.beam_size, max_length=max_length,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=suppressed,
        )[0]
        ids = result.sequences_ids[0]
        # faster-whisper's average log-probability (its length penalty is 1).
        avg_logprob = result.scores[0] * len(ids) / (len(ids) + 1)
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB:
            return Transcript("", lang)
        return Transcript(words_or_nothing(tokenizer.decode(ids)), lang)

    def _transcribe_long(self, audio: NDArray[np.float32], lang: str, prompt: str) -> Transcript:
        segments, info = self.model.transcribe(
            audio, language=lang or None, beam_size=self.settings.beam_size, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, temperature=0.0, initial_prompt=prompt or None,
        )
        parts = [seg.text for seg in segments
                 if not (seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB)]
        return Transcript(words_or_nothing("".join(parts)), lang or str(info.language))

    def warm_up(self) -> None:
        """One decode in each window so the first call does not pay for lazy initialisation."""
        for w in self.settings.windows_s:
            self.decode_window(np.zeros(self.sample_rate, dtype=np.float32), "en", "", w)
