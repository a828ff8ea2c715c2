"""The agent's voice: the conversation's chunks rendered to 8 kHz mu-law audio, one at a time.

A text chunk is synthesised on the shared TTS engine and resampled to 8 kHz in the worker thread
(each chunk as one continuous signal, so there is no click where Piper's sentence pieces meet);
``sendDigits`` becomes in-band DTMF tones, so digits wait behind speech and a barge-in cuts them like
speech, as on ConversationRelay; a ``play`` source is fetched and decoded (or found in the process's
cache). The audio goes back to the conversation as a ``Rendered`` event, which queues it and its marks
for the pacer; a source that cannot be played comes back as ``RenderFailed``.

Synthesis stays at most ``max_ahead_ms`` ahead of playback, so a barge-in throws away little work,
and waits for the process's synthesis slots in order of urgency: a reply's first chunk (the caller
hears nothing until it is ready), then a chunk due within ``URGENT_AHEAD_MS``, then chunks made ahead.
``cancel`` abandons the chunk being rendered (a barge-in): it leaves the synthesis queue, or its
result is dropped.
"""

from __future__ import annotations

import logging

import trio

from relay_bridge.audio.dtmf import dtmf_tones
from relay_bridge.audio.g711 import ulaw_encode
from relay_bridge.audio.telephony import SAMPLE_RATE_HZ
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.call.inbox import Inbox
from relay_bridge.call.playback import Playback
from relay_bridge.conversation.events import Event, Rendered, RenderFailed, SpeechChunk
from relay_bridge.engines.schedule import Priority
from relay_bridge.net.media import MediaError, MediaLoader

# A chunk is urgent (synthesised before chunks made ahead) when the caller has less than this to hear
# before it: about the time one long sentence takes to synthesise on one core.
URGENT_AHEAD_MS = 1000


class Speaker:
    def __init__(self, engines: SpeechEngines, playback: Playback, events: Inbox[Event], *, max_ahead_ms: int,
                 logger: logging.LoggerAdapter[logging.Logger], load_media: MediaLoader | None = None) -> None:
        self._engines = engines
        self._playback = playback
        self._events = events
        self._max_ahead_ms = max_ahead_ms
        self._log = logger
        self._load_media = load_media
        self._next: SpeechChunk | None = None
        self._current: SpeechChunk | None = None
        self._scope: trio.CancelScope | None = None
        self._wake = trio.Event()

    def render(self, chunk: SpeechChunk) -> None:
        """Render ``chunk`` next (the conversation hands over one chunk at a time)."""
        self._next = chunk
        self._wake.set()

    def cancel(self, seq: int) -> None:
        """The chunk ``seq`` is no longer wanted."""
        if self._next is not None and self._next.seq == seq:
            self._next = None
        if self._current is not None and self._current.seq == seq and self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        while True:
            while self._next is None:
                self._wake = trio.Event()
                await self._wake.wait()
            chunk, self._next = self._next, None
            event: Rendered | RenderFailed | None = None
            with trio.CancelScope() as self._scope:
                self._current = chunk
                try:
                    event = await self._render(chunk)
                except MediaError as exc:
                    event = RenderFailed(chunk.seq, str(exc))
                except Exception:
                    self._log.exception("speech synthesis failed; the chunk %r is skipped", chunk.text)
                    event = RenderFailed(chunk.seq)
            self._scope, self._current = None, None
            if event is not None:
                self._events.put_nowait(event)

    async def _render(self, chunk: SpeechChunk) -> Rendered:
        if chunk.digits:
            return Rendered(chunk.seq, ulaw_encode(dtmf_tones(chunk.digits)))
        if chunk.play:
            if self._load_media is None:
                raise MediaError("play is not available on this bridge")
            audio = ulaw_encode(await self._load_media(chunk.play))
            await self._playback.wait_queued_below(self._max_ahead_ms)
            return Rendered(chunk.seq, audio, repeat=chunk.loop)
        if not chunk.text.strip():
            return Rendered(chunk.seq, b"")
        await self._playback.wait_queued_below(self._max_ahead_ms)
        claim = self._engines.tts_scheduler.claim(self, self._urgency(chunk))
        pcm = await self._engines.synthesize(chunk.text, SAMPLE_RATE_HZ, language=chunk.language, claim=claim)
        return Rendered(chunk.seq, ulaw_encode(pcm))

    def _urgency(self, chunk: SpeechChunk) -> Priority:
        """A reply's first chunk is the most urgent (the caller hears nothing until it is ready); a
        later one is due soon when less than ``URGENT_AHEAD_MS`` is left to hear before it."""
        if chunk.first:
            return Priority.FINAL
        return Priority.SPECULATIVE if self._playback.ahead_ms() < URGENT_AHEAD_MS else Priority.PARTIAL
