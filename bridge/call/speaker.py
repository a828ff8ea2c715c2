"""The agent's voice: app text chunks to paced mu-law audio, one cancel scope per chunk.

Chunks are synthesised in order on the shared TTS engine and resampled to 8 kHz in the worker thread
(each chunk as one continuous signal, so there is no click where Piper's sentence pieces meet),
then encoded and queued for playback followed by a mark that records the text heard through it. A
talk cycle opens with a start mark queued right before its first audio, so its echo tells the
ledger when the caller started hearing the cycle.

``sendDigits`` rides the same queue as in-band DTMF tones, so digits wait behind speech and a
barge-in cuts them like speech, as on ConversationRelay. ``play`` does too: the source is fetched
and decoded (or found in the process's cache) when its turn comes, inside the chunk's cancel scope,
and each loop is queued only once playback has room, so ``loop: 1000`` never holds 1,000 copies.
A source that cannot be played is reported through ``on_play_error`` and the queue goes on.

``cancel`` (barge-in) empties the queue of chunks, cancels the one being synthesised, and drops any
chunk of an interrupted cycle that is still on its way in.
Synthesis stays at most ``max_ahead_ms`` ahead of playback so a barge-in throws away little work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import trio
from numpy.typing import NDArray

from bridge.audio.dtmf import dtmf_tones
from bridge.audio.g711 import ulaw_encode
from bridge.call.engines import SpeechEngines
from bridge.call.media import MediaError
from bridge.call.playback import MarkRequest, Playback
from bridge.engines.schedule import Priority

OUTPUT_RATE = 8000
# A chunk is urgent (synthesised before chunks made ahead) when the caller has less than this to hear
# before it: about the time one long sentence takes to synthesise on one core.
URGENT_AHEAD_MS = 1000


@dataclass(frozen=True)
class SpeechChunk:
    cycle: int
    text: str
    final: bool  # the last chunk of the talk cycle
    digits: str = ""  # sendDigits: play these as DTMF tones instead of speaking ``text``
    interruptible: str = "any"  # what caller input may cut it: none | dtmf | speech | any
    language: str = ""  # the voice's language ("": the default voice)
    play: str = ""  # play: the media URL to play instead of speaking ``text``
    loop: int = 1


MediaLoader = Callable[[str], Awaitable[NDArray[np.int16]]]


class Speaker:
    def __init__(self, engines: SpeechEngines, playback: Playback, *, max_ahead_ms: int,
                 logger: logging.LoggerAdapter[logging.Logger], load_media: MediaLoader | None = None,
                 on_play_error: Callable[[SpeechChunk, str], Awaitable[None]] | None = None) -> None:
        self._engines = engines
        self._load_media = load_media
        self._on_play_error = on_play_error
        self._playback = playback
        self._max_ahead_ms = max_ahead_ms
        self._log = logger
        self._send, self._receive = trio.open_memory_channel[SpeechChunk](256)
        self._scope: trio.CancelScope | None = None
        self._cycle_text: dict[int, str] = {}
        self._keep_from_cycle = 0
        self.current: SpeechChunk | None = None  # the chunk being synthesised

    async def submit(self, chunk: SpeechChunk) -> None:
        await self._send.send(chunk)

    @property
    def active(self) -> bool:
        return self._scope is not None or self._receive.statistics().current_buffer_used > 0

    def cancel(self, keep_from_cycle: int) -> int:
        """Barge-in: drop every chunk of a cycle before ``keep_from_cycle``, queued, in progress or still
        to be submitted; return how many were dropped."""
        self._keep_from_cycle = keep_from_cycle
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
            if chunk.cycle < self._keep_from_cycle:
                continue  # submitted after (or handed over during) a barge-in that cut its cycle
            with trio.CancelScope() as scope:
                self._scope, self.current = scope, chunk
                try:
                    if chunk.play:
                        await self._play(chunk)
                    else:
                        await self._speak(chunk)
                except MediaError as exc:
                    if self._on_play_error is not None:  # the call logs it (rate-limited) and tells the app
                        await self._on_play_error(chunk, str(exc))
                    else:
                        self._log.warning("%s", exc)
                except Exception:
                    self._log.exception("speech synthesis failed; the chunk %r is skipped", chunk.text)
            self._scope, self.current = None, None

    async def _speak(self, chunk: SpeechChunk) -> None:
        audio = b""
        if chunk.digits:
            audio = ulaw_encode(dtmf_tones(chunk.digits))
        elif chunk.text.strip():
            await self._playback.wait_queued_below(self._max_ahead_ms)
            claim = self._engines.tts_scheduler.claim(self, self._urgency(chunk))
            audio = ulaw_encode(await self._engines.synthesize(chunk.text, OUTPUT_RATE, language=chunk.language,
                                                               claim=claim))
            # A barge-in may have cancelled this chunk after synthesis finished but before this task
            # resumed; never queue audio behind a clear.
            await trio.lowlevel.checkpoint_if_cancelled()
        elif not (chunk.final and chunk.cycle in self._cycle_text):
            return  # nothing to say, and no started cycle to close
        self._start_cycle(chunk)
        if audio:
            self._playback.enqueue_audio(chunk.cycle, audio)
        text = self._cycle_text[chunk.cycle] + chunk.text
        self._cycle_text[chunk.cycle] = text
        self._playback.enqueue_mark(MarkRequest(chunk.cycle, text.strip(), chunk.digits or chunk.text.strip(),
                                                chunk.final, chunk.interruptible, samples=len(audio)))
        if chunk.final:
            self._cycle_text.pop(chunk.cycle, None)

    def _urgency(self, chunk: SpeechChunk) -> Priority:
        """A reply's first chunk is the most urgent (the caller hears nothing until it is ready); a
        later one is due soon when less than ``URGENT_AHEAD_MS`` is left to hear before it."""
        if chunk.cycle not in self._cycle_text:
            return Priority.FINAL
        return Priority.SPECULATIVE if self._playback.ahead_ms() < URGENT_AHEAD_MS else Priority.PARTIAL

    async def _play(self, chunk: SpeechChunk) -> None:
        if self._load_media is None:
            raise MediaError("play is not available on this bridge")
        audio = ulaw_encode(await self._load_media(chunk.play))
        await trio.lowlevel.checkpoint_if_cancelled()
        self._start_cycle(chunk)
        for _ in range(chunk.loop):
            await self._playback.wait_queued_below(self._max_ahead_ms)
            await trio.lowlevel.checkpoint_if_cancelled()  # never queue a loop behind a clear
            self._playback.enqueue_audio(chunk.cycle, audio)
        self._playback.enqueue_mark(MarkRequest(chunk.cycle, "", "", True, chunk.interruptible))
        self._cycle_text.pop(chunk.cycle, None)

    def _start_cycle(self, chunk: SpeechChunk) -> None:
        """Open a talk cycle with a mark right before its first audio: its echo dates the playback start."""
        if chunk.cycle not in self._cycle_text:
            self._cycle_text[chunk.cycle] = ""
            self._playback.enqueue_mark(MarkRequest(chunk.cycle, "", "", False, chunk.interruptible))
