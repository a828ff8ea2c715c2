"""The call's hearing: inbound audio to speech events and recognitions, with speculative recognition.

Theory of operation. Inbound 20 ms frames wait in a ``FrameQueue`` (full, it drops the oldest, so
the provider's reader never waits). Each is decoded once and goes two ways: to the endpointer
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

What it hears goes to the conversation as events: ``SpeechStarted``, ``SpeechSustained``,
``SpeechEnded``, ``PartialRecognised`` and one ``Recognised`` per ended utterance, in utterance order
(one delivery task awaits them in turn), whatever order recognitions finish in. The conversation
decides what becomes a prompt.

All recognition queues for the process's decode slots (``SpeechEngines.asr_scheduler``) in three
classes: finals before speculations before partials, calls in turn within a class. A recognition
that turns out more urgent moves up (a partial that covers the whole utterance becomes the
speculation, a speculation becomes the final).

Partial prompts (``partialPrompts``) re-recognise the utterance so far while the caller speaks. A
call runs at most one partial at a time, starts the next once ``PARTIAL_INTERVAL_MS`` of new audio
has arrived, and never while a speculative final recognition runs. A partial still queued when the
next is due is replaced by it (it would only report less): under load partials thin out, and they
never hold up a final, which goes ahead of them in the queue. A partial that finishes after its
utterance ended is dropped, so it can never follow the final prompt. A partial begun once the
caller had stopped covers the whole utterance, so it doubles as the speculative recognition
instead of holding one up.

Recognition that is no longer wanted is cancelled: a speculation when the caller resumes (or when
another takes its place), a partial when its utterance ends without it or a newer one replaces it,
everything when the call ends. Work still waiting for a slot leaves the queue at once and never
runs; a decode already running in a worker thread cannot be interrupted, so it is abandoned and its
slot comes back when that one decode finishes. A call therefore has at most one speculation and one
partial alive besides its final recognitions, which queue in a bounded channel.

End of turn. With an end-of-turn model (``turn_threshold`` set: ``vad.turn_detection`` "smart"), the
model hears the utterance so far once it has paused for ``PAUSE_MS`` (a shorter silence is a gap
between words; the speculative recognition may start earlier), off the event loop under the recognition
scheduler (a final's priority: it is short and the caller is waiting), and again every
``TURN_RECHECK_MS`` of further silence while it says the caller has not finished. A probability at
or over the threshold (``eotThreshold``) ends the utterance at once (``Endpointer.end_turn``): its
speculative recognition, already running, becomes the final one. Otherwise the utterance ends on
its (longer) end-of-speech silence. A decision that comes after the caller resumed is dropped.

Probing: while the conversation judges speech over the agent (``probing``, set for the utterance in
progress, off at the next one), the utterance is recognised as it goes on exactly as for partial
prompts, at a speculation's priority (the agent is held while it waits), whether or not the call
asked for partial prompts, and it ends at its first pause (``PAUSE_MS``), not at the end of the
caller's turn: the agent should not wait out an end-of-turn silence for a cough. Speech after that
pause is a new utterance, judged again. (Only while no earlier utterance awaits its recognition: so
speech in short bursts cannot queue a final recognition per burst.)

Barge-in sensitivity: ``SpeechSustained`` comes once per utterance when ``sustain_ms`` of voiced
audio have been heard (0: right after ``SpeechStarted``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import trio
from numpy.typing import NDArray

from relay_bridge.audio.g711 import ulaw_decode
from relay_bridge.audio.ring import SampleRing
from relay_bridge.audio.telephony import FRAME_MS, SAMPLE_RATE_HZ
from relay_bridge.call.engines import Claim, SpeechEngines
from relay_bridge.call.inbox import FrameQueue, Inbox
from relay_bridge.conversation import events as ev
from relay_bridge.engines.schedule import Priority
from relay_bridge.speech.endpointer import (
    Endpointer,
    EndpointerSettings,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)

RING_MARGIN_S = 10  # beyond the longest utterance the endpointer can report
PARTIAL_INTERVAL_MS = 200  # new audio needed before the next partial recognition
PAUSE_MS = 160  # silence that is more than a gap between words: the end-of-turn model is asked from then
TURN_RECHECK_MS = 300  # more silence before the end-of-turn model is asked again
INBOUND_QUEUE_FRAMES = 50  # inbound audio waiting to be heard (1 s); more drops the oldest


@dataclass
class Recognition:
    start: int  # 8 kHz sample positions
    end: int
    speech_end: int = 0
    speech_end_at: float = 0.0  # clock time the audio at speech_end arrived (estimated)
    text: str = ""
    done: trio.Event = field(default_factory=trio.Event)
    language: str = ""  # for the prompt's "lang": the language recognised in (or detected)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)  # cancelled when no longer wanted
    claim: Claim | None = None  # its place in the process's recognition queue

    def raise_to(self, priority: Priority) -> None:
        """It turned out more urgent (a partial or speculation that becomes the final)."""
        if self.claim is not None:
            self.claim.raise_to(priority)

    @property
    def waiting(self) -> bool:
        """Still queued for a recognition slot (not started)."""
        return self.claim is not None and self.claim.state in ("new", "waiting")

    def cancel(self) -> None:
        """Give up on this recognition: it leaves the ASR queue (or is abandoned) and yields no text."""
        self.scope.cancel()


class Hearing:
    def __init__(self, engines: SpeechEngines, settings: EndpointerSettings, events: Inbox[ev.Event], *,
                 language: str, logger: logging.LoggerAdapter[logging.Logger], hints: str = "", sustain_ms: int = 0,
                 partials: bool = False, turn_threshold: float | None = None) -> None:
        """``turn_threshold``: with an end-of-turn model, the probability that ends a turn before its
        end-of-speech silence (None: turns end on silence)."""
        self._engines = engines
        self.endpointer = Endpointer(settings)
        self.language = language  # a declared language code, "multi" to detect; may change mid-call
        self.hints = hints
        self.audio = FrameQueue(INBOUND_QUEUE_FRAMES)
        self._events = events
        self._sustain_frames = max(0, sustain_ms) // FRAME_MS
        self._partials = partials
        self.probing = False  # recognise the utterance in progress as it goes on (see Probing)
        self._log = logger
        self._sustained = False
        self._turn = 0  # utterances started so far; tags partial recognitions
        self._partial: Recognition | None = None  # the latest partial recognition of this utterance
        self._partial_from = 0  # audio position the last partial covered
        longest_ms = settings.max_utterance_ms + settings.pre_roll_ms + settings.hangover_ms
        self._ring = SampleRing(SAMPLE_RATE_HZ * (longest_ms // 1000 + RING_MARGIN_S), dtype=np.int16)
        self._speculation: Recognition | None = None
        self._send, self._receive = trio.open_memory_channel[Recognition](32)
        self._nursery: trio.Nursery | None = None
        self.speculations_used = 0
        self.speculations_wasted = 0
        self.partials_overtaken = 0
        self._turn_threshold = turn_threshold
        self._turn_check: trio.CancelScope | None = None  # the end-of-turn decision in flight
        self._next_check_ms = PAUSE_MS  # silence before the next decision
        self._finals_pending = 0  # ended utterances whose recognition is not yet delivered
        self._fed_at = 0.0  # when the frame fed last arrived

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hear the inbound audio, own the recognition tasks, and deliver recognitions in order."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._deliver)
            task_status.started()
            while True:
                frame = await self.audio.get()
                await self.feed(frame, arrived_at=self.audio.arrived_at)

    async def _deliver(self) -> None:
        async for rec in self._receive:
            await rec.done.wait()
            self._finals_pending -= 1
            self._events.put_nowait(ev.Recognised(rec.text, rec.language, (rec.end - rec.start) / SAMPLE_RATE_HZ,
                                                  speech_end=rec.speech_end, speech_end_at=rec.speech_end_at))

    def _arrived_at(self, position: int) -> float:
        """When the audio at sample ``position`` arrived, on the clock: audio comes in real time, and
        the endpointer has just consumed the frame that arrived at ``_fed_at``."""
        return self._fed_at - (self.endpointer.position - position) / SAMPLE_RATE_HZ

    async def feed(self, ulaw: bytes, *, arrived_at: float | None = None) -> None:
        """Hear one frame, which arrived at ``arrived_at`` (the clock; None: now)."""
        self._fed_at = trio.current_time() if arrived_at is None else arrived_at
        pcm = ulaw_decode(ulaw)
        self._ring.write(pcm)
        for event in self.endpointer.feed(pcm):
            match event:
                case SpeechStarted():
                    self._log.debug("speech started at %.2f s", event.start / SAMPLE_RATE_HZ)
                    self._turn += 1
                    self.probing = False
                    self._drop_partial()
                    self._sustained, self._partial = False, None
                    self._drop_turn_check()
                    self._partial_from = event.detected_at
                    self._events.put_nowait(ev.SpeechStarted(event.start, self._arrived_at(event.start)))
                case SpeechPaused():
                    self._drop_speculation()
                    partial = self._partial
                    if partial is not None and partial.start == event.start and partial.end >= event.end:
                        self._speculation = partial  # it heard the whole utterance (and a little silence)
                        partial.raise_to(Priority.SPECULATIVE)
                    else:
                        self._speculation = self._recognise(event.start, event.end, Priority.SPECULATIVE)
                case SpeechResumed():
                    self._drop_speculation()
                    self._drop_turn_check()
                case SpeechEnded():
                    await self._ended(event)
        await self._after_feed()

    async def _ended(self, event: SpeechEnded) -> None:
        self._drop_turn_check()
        spec = self._speculation
        self._speculation = None
        if spec is not None and spec.start == event.start and spec.end >= event.end:
            rec = spec
            rec.raise_to(Priority.FINAL)
            self.speculations_used += 1
        else:
            if spec is not None:
                self.speculations_wasted += 1
                spec.cancel()
            rec = self._recognise(event.start, event.end, Priority.FINAL)
        if self._partial is rec:
            self._partial = None  # now the final: never a partial to drop
        else:
            self._drop_partial()
        rec.speech_end, rec.speech_end_at = event.speech_end, self._arrived_at(event.speech_end)
        self._events.put_nowait(ev.SpeechEnded())
        self._finals_pending += 1
        await self._send.send(rec)

    # -- the end-of-turn model ----------------------------------------------------------------

    def _check_turn(self) -> None:
        """Ask the end-of-turn model, once the utterance has paused and again every ``TURN_RECHECK_MS``
        of further silence while it says the caller has not finished."""
        ep = self.endpointer
        if self._turn_threshold is None or not ep.paused or self._turn_check is not None:
            return
        silence_ms = ep.silence_ms
        if silence_ms < self._next_check_ms:
            return
        bounds = ep.open_utterance()
        assert bounds is not None and self._nursery is not None
        audio: NDArray[np.int16] = self._ring.read(*bounds).astype(np.int16)
        self._turn_check = scope = trio.CancelScope()
        self._nursery.start_soon(self._decide_turn, self._turn, audio, silence_ms, scope)

    async def _decide_turn(self, turn: int, audio: NDArray[np.int16], silence_ms: int,
                           scope: trio.CancelScope) -> None:
        probability = 0.0
        try:
            with scope:
                claim = self._engines.asr_scheduler.claim(self, Priority.FINAL)
                probability = await self._engines.end_of_turn(audio, SAMPLE_RATE_HZ, claim=claim)
        except Exception:
            self._log.exception("the end-of-turn model failed; the turn ends on silence")
        finally:
            if self._turn_check is scope:
                self._turn_check = None
        if scope.cancelled_caught or turn != self._turn or not self.endpointer.paused:
            return  # the caller went on, or the turn is already over
        assert self._turn_threshold is not None
        if probability >= self._turn_threshold:
            self._log.debug("end of turn after %d ms of silence (p %.2f)", silence_ms, probability)
            await self._end_paused()
        else:
            self._next_check_ms = silence_ms + TURN_RECHECK_MS

    async def _end_paused(self) -> None:
        """End the paused utterance now, without waiting out its end-of-speech silence."""
        ended = self.endpointer.end_turn()
        assert ended is not None  # only called while the utterance is paused
        await self._ended(ended)

    def _drop_turn_check(self) -> None:
        if self._turn_check is not None:
            self._turn_check.cancel()
            self._turn_check = None
        self._next_check_ms = PAUSE_MS

    def _drop_speculation(self) -> None:
        spec, self._speculation = self._speculation, None
        if spec is not None:
            self.speculations_wasted += 1
            if spec is not self._partial:  # a partial doubling as the speculation may still be delivered
                spec.cancel()

    def _drop_partial(self) -> None:
        """The utterance a running partial belongs to is over: its result could only be dropped."""
        if self._partial is not None and not self._partial.done.is_set():
            self._partial.cancel()

    async def _after_feed(self) -> None:
        ep = self.endpointer
        if not ep.in_speech:
            return
        if self.probing and ep.paused and ep.silence_ms >= PAUSE_MS and not self._finals_pending:
            await self._end_paused()  # the agent waits on it: it ends at its first pause (see Probing)
            return
        self._check_turn()
        if not self._sustained and self.endpointer.turn_voiced_frames >= self._sustain_frames:
            self._sustained = True
            self._events.put_nowait(ev.SpeechSustained())
        bounds = self.endpointer.open_utterance()
        partial = self._partial
        running = partial is not None and not partial.done.is_set() and not partial.waiting
        if ((self._partials or self.probing) and bounds is not None and not running and self._speculation is None
                and bounds[1] - self._partial_from >= PARTIAL_INTERVAL_MS * SAMPLE_RATE_HZ // 1000):
            if partial is not None and not partial.done.is_set():
                partial.cancel()  # still queued: the new one covers more audio
                self.partials_overtaken += 1
            self._partial_from = bounds[1]
            self._partial = self._recognise(*bounds, Priority.SPECULATIVE if self.probing else Priority.PARTIAL)
            assert self._nursery is not None
            self._nursery.start_soon(self._deliver_partial, self._turn, self._partial)

    async def _deliver_partial(self, turn: int, rec: Recognition) -> None:
        await rec.done.wait()
        # Only while the same utterance is still going on: a late partial must not follow its final prompt.
        if rec.text and turn == self._turn and self.endpointer.in_speech:
            self._events.put_nowait(ev.PartialRecognised(rec.text, rec.language))

    def _recognise(self, start: int, end: int, priority: Priority) -> Recognition:
        rec = Recognition(start=start, end=end, claim=self._engines.asr_scheduler.claim(self, priority))
        audio: NDArray[np.int16] = self._ring.read(start, end).astype(np.int16)
        assert self._nursery is not None, "Hearing.run must be started first"
        self._nursery.start_soon(self._transcribe, rec, audio)
        return rec

    async def _transcribe(self, rec: Recognition, audio: NDArray[np.int16]) -> None:
        try:
            with rec.scope:
                recognised = await self._engines.recognise(audio, SAMPLE_RATE_HZ, self.language, hints=self.hints,
                                                           claim=rec.claim)
                rec.text, rec.language = recognised.text, recognised.language
        except Exception:
            self._log.exception("recognition failed; the utterance is dropped")
            rec.text = ""
        finally:
            rec.done.set()
