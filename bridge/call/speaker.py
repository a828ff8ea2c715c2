"""The agent's voice: app text chunks to paced mu-law audio, one cancel scope per chunk.

Chunks are synthesised in order on the shared TTS engine, resampled to 8 kHz with a resampler
that runs continuously through the chunk (no click where Piper's sentence pieces meet), encoded,
and queued for playback followed by a mark that records the text heard through that chunk. A
talk cycle opens with a start mark queued right before its first audio, so its echo tells the
ledger when the caller started hearing the cycle.

``cancel`` (barge-in) empties the queue of chunks and cancels the one being synthesised.
Synthesis stays at most ``max_ahead_ms`` ahead of playback so a barge-in throws away little work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import trio

from bridge.audio.g711 import ulaw_encode
from bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float
from bridge.call.engines import SpeechEngines
from bridge.call.playback import MarkRequest, Playback

OUTPUT_RATE = 8000


@dataclass(frozen=True)
class SpeechChunk:
    cycle: int
    text: str
    final: bool  # the last chunk of the talk cycle


class Speaker:
    def __init__(self, engines: SpeechEngines, playback: Playback, *, max_ahead_ms: int,
                 logger: logging.LoggerAdapter[logging.Logger]) -> None:
        self._engines = engines
        self._playback = playback
        self._max_ahead_ms = max_ahead_ms
        self._log = logger
        self._send, self._receive = trio.open_memory_channel[SpeechChunk](256)
        self._scope: trio.CancelScope | None = None
        self._busy = False
        self._cycle_text: dict[int, str] = {}
        self._resampler = StreamResampler(engines.synthesizer.sample_rate, OUTPUT_RATE)

    async def submit(self, chunk: SpeechChunk) -> None:
        await self._send.send(chunk)

    @property
    def active(self) -> bool:
        return self._busy or self._receive.statistics().current_buffer_used > 0

    def cancel(self) -> int:
        """Drop queued chunks and stop the current one; return how many chunks were dropped."""
        dropped = 0
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            dropped += 1
        if self._scope is not None:
            self._scope.cancel()
            dropped += 1
        self._cycle_text.clear()
        return dropped

    async def run(self) -> None:
        async for chunk in self._receive:
            self._busy = True
            with trio.CancelScope() as scope:
                self._scope = scope
                await self._speak(chunk)
            self._scope = None
            self._busy = False
            if scope.cancelled_caught:
                self._resampler.flush()  # discard the filter state of the cut chunk

    async def _speak(self, chunk: SpeechChunk) -> None:
        if chunk.text.strip():
            await self._playback.wait_queued_below(self._max_ahead_ms)
            pieces = await self._engines.synthesize(chunk.text)
            # A barge-in may have cancelled this chunk after synthesis finished but before this task
            # resumed; never queue audio behind a clear.
            await trio.lowlevel.checkpoint_if_cancelled()
            out = [self._resampler.process(pcm16_to_float(p)) for p in pieces]
            out.append(self._resampler.flush())
            samples = float_to_pcm16(np.concatenate(out))
            self._start_cycle(chunk.cycle)
            self._playback.enqueue_audio(chunk.cycle, ulaw_encode(samples))
        if chunk.text.strip() or chunk.final:
            self._start_cycle(chunk.cycle)
            text = self._cycle_text[chunk.cycle] + chunk.text
            self._cycle_text[chunk.cycle] = text
            self._playback.enqueue_mark(MarkRequest(chunk.cycle, text.strip(), chunk.text.strip(), chunk.final))
        if chunk.final:
            self._cycle_text.pop(chunk.cycle, None)

    def _start_cycle(self, cycle: int) -> None:
        """Open a talk cycle with a mark right before its first audio: its echo dates the playback start."""
        if cycle not in self._cycle_text:
            self._cycle_text[cycle] = ""
            self._playback.enqueue_mark(MarkRequest(cycle, "", "", final=False))
