"""The caller's side: inbound audio to utterances to ``prompt`` frames, with speculative recognition.

Theory of operation. Every inbound 20 ms frame is decoded once and goes two ways: to the endpointer
(8 kHz, webrtcvad) and into a ring that holds the recent call audio. The endpointer reports
utterances by absolute sample positions, so the audio of an utterance is a slice of the ring; it is
resampled to the recogniser's rate in one piece, in the worker thread. (A streaming resampler here
would lag: soxr emits its output in blocks, up to ~110 ms behind the input, which cut the end off
utterances recognised speculatively.)

Recognition costs a few hundred ms on a small CPU, about as long as the end-of-speech wait itself.
So when the endpointer reports a probable end (``SpeechPaused``, after ``speculate_ms`` of
silence) recognition starts at once; if the silence lasts (``SpeechEnded`` with the same bounds)
that result becomes the prompt, and if speech resumes it is discarded. The prompt then goes out
soon after the end-of-speech wait instead of a full recognition later.

Prompts leave in utterance order through one sender task, whatever order recognitions finish in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import trio
from numpy.typing import NDArray

from bridge.audio.g711 import ulaw_decode
from bridge.audio.ring import SampleRing
from bridge.call.engines import SpeechEngines
from bridge.engines.base import asr_language
from bridge.speech.endpointer import (
    SAMPLE_RATE,
    Endpointer,
    EndpointerSettings,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)

RING_MARGIN_S = 10  # beyond the longest utterance the endpointer can report


@dataclass
class Recognition:
    start: int  # 8 kHz sample positions
    end: int
    speech_end: int = 0
    text: str = ""
    done: trio.Event = field(default_factory=trio.Event)
    ended_at: float = 0.0  # clock time the endpointer declared the end
    finished_at: float = 0.0  # clock time recognition finished


class Listener:
    def __init__(self, engines: SpeechEngines, settings: EndpointerSettings, *, language: str,
                 on_speech_started: Callable[[SpeechStarted], Awaitable[None]],
                 on_speech_ended: Callable[[SpeechEnded], Awaitable[None]],
                 on_utterance: Callable[[Recognition], Awaitable[None]],
                 logger: logging.LoggerAdapter[logging.Logger]) -> None:
        self._engines = engines
        self.endpointer = Endpointer(settings)
        self.language = language
        self._on_speech_started = on_speech_started
        self._on_speech_ended = on_speech_ended
        self._on_utterance = on_utterance
        self._log = logger
        longest_ms = settings.max_utterance_ms + settings.pre_roll_ms + settings.hangover_ms
        self._ring = SampleRing(SAMPLE_RATE * (longest_ms // 1000 + RING_MARGIN_S), dtype=np.int16)
        self._speculation: Recognition | None = None
        self._send, self._receive = trio.open_memory_channel[Recognition](32)
        self._nursery: trio.Nursery | None = None
        self.speculations_used = 0
        self.speculations_wasted = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the recognition tasks and send prompts in order."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for rec in self._receive:
                await rec.done.wait()
                if rec.text:
                    await self._on_utterance(rec)
                else:
                    self._log.info("utterance of %.2f s had no words; no prompt",
                                   (rec.end - rec.start) / SAMPLE_RATE)

    async def feed(self, ulaw: bytes) -> None:
        pcm = ulaw_decode(ulaw)
        self._ring.write(pcm)
        for event in self.endpointer.feed(pcm):
            match event:
                case SpeechStarted():
                    self._log.debug("speech started at %.2f s", event.start / SAMPLE_RATE)
                    await self._on_speech_started(event)
                case SpeechPaused():
                    self._speculation = self._recognise(event.start, event.end)
                case SpeechResumed():
                    if self._speculation is not None:
                        self.speculations_wasted += 1
                    self._speculation = None
                case SpeechEnded():
                    spec = self._speculation
                    self._speculation = None
                    if spec is not None and (spec.start, spec.end) == (event.start, event.end):
                        rec = spec
                        self.speculations_used += 1
                    else:
                        rec = self._recognise(event.start, event.end)
                    rec.speech_end, rec.ended_at = event.speech_end, trio.current_time()
                    await self._send.send(rec)
                    await self._on_speech_ended(event)

    def _recognise(self, start: int, end: int) -> Recognition:
        rec = Recognition(start=start, end=end)
        audio: NDArray[np.int16] = self._ring.read(start, end).astype(np.int16)
        assert self._nursery is not None, "Listener.run must be started first"
        self._nursery.start_soon(self._transcribe, rec, audio)
        return rec

    async def _transcribe(self, rec: Recognition, audio: NDArray[np.int16]) -> None:
        try:
            rec.text = await self._engines.transcribe(audio, SAMPLE_RATE, asr_language(self.language))
        except Exception:
            self._log.exception("recognition failed; the utterance is dropped")
            rec.text = ""
        finally:
            rec.finished_at = trio.current_time()
            rec.done.set()
