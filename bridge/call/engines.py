"""The shared engines as the runtime sees them: worker threads under process-wide limiters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trio
from numpy.typing import NDArray

from bridge.audio.resample import float_to_pcm16, pcm16_to_float, resample_once
from bridge.engines.base import Synthesizer, Transcriber


@dataclass
class SpeechEngines:
    transcriber: Transcriber
    synthesizer: Synthesizer
    asr_concurrency: int = 1
    tts_concurrency: int = 1
    _asr_limiter: trio.CapacityLimiter | None = field(default=None, init=False)
    _tts_limiter: trio.CapacityLimiter | None = field(default=None, init=False)

    def _limiters(self) -> tuple[trio.CapacityLimiter, trio.CapacityLimiter]:
        # Created lazily, inside the trio run that uses them.
        if self._asr_limiter is None or self._tts_limiter is None:
            self._asr_limiter = trio.CapacityLimiter(self.asr_concurrency)
            self._tts_limiter = trio.CapacityLimiter(self.tts_concurrency)
        return self._asr_limiter, self._tts_limiter

    async def transcribe(self, audio: NDArray[np.int16], rate: int, language: str) -> str:
        """Recognise one utterance of ``rate`` Hz audio (resampled to the model's rate in the worker)."""
        limiter = self._limiters()[0]

        def run() -> str:
            x = resample_once(pcm16_to_float(audio), rate, self.transcriber.sample_rate)
            return self.transcriber.transcribe(x, language)

        return await trio.to_thread.run_sync(run, limiter=limiter, abandon_on_cancel=True)

    async def synthesize(self, text: str, rate: int) -> NDArray[np.int16]:
        """Speech for ``text`` at ``rate`` Hz, resampled in the worker as one continuous signal."""
        limiter = self._limiters()[1]

        def run() -> NDArray[np.int16]:
            pieces = [pcm16_to_float(p) for p in self.synthesizer.synthesize(text)]
            if not pieces:
                return np.zeros(0, dtype=np.int16)
            return float_to_pcm16(resample_once(np.concatenate(pieces), self.synthesizer.sample_rate, rate))

        return await trio.to_thread.run_sync(run, limiter=limiter, abandon_on_cancel=True)
