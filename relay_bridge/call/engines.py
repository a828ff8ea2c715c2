"""The shared engines as the runtime sees them: worker threads under process-wide limiters.

A process serves the languages its config declares. Each declared language has a recogniser and a
voice; languages that share a model share one loaded instance (the daemon sees to that), so a
switch of language mid-call never loads anything. ``language`` is the session's default language,
served by ``transcriber`` and ``synthesizer``; ``more_languages`` are the others.

Language codes are matched as ``match_language`` does: without regard to case, and a bare primary
subtag ("es") finds the first declared language with it, so callers that already reduced a tag to
Whisper's form still reach the right model. "" means the default language.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import typing
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import trio
from numpy.typing import NDArray

from relay_bridge.audio.resample import float_to_pcm16, pcm16_to_float, resample_once
from relay_bridge.engines.base import Synthesizer, Transcriber, TurnDetector, asr_language, match_language
from relay_bridge.engines.schedule import FairQueue, Priority, ProcessLoad, Ticket, cpu_cores
from relay_bridge.engines.turn import SAMPLE_RATE as TURN_SAMPLE_RATE
from relay_bridge.metrics import Metrics

MULTI = "multi"  # the language code that asks the recogniser to detect the language


class UnknownLanguage(ValueError):
    """A language that the config does not declare."""

    def __init__(self, code: str, declared: Sequence[str]) -> None:
        super().__init__(f"language {code!r} is not declared (declared: {', '.join(declared)})")
        self.code = code


@dataclass(frozen=True)
class LanguageEngines:
    """The recogniser and voice of one declared language."""

    code: str  # BCP-47 ("es-ES") or "multi"
    transcriber: Transcriber
    synthesizer: Synthesizer


@dataclass(frozen=True)
class Recognised:
    text: str  # "" when nothing was said
    language: str  # for the prompt's "lang": the declared code, or for "multi" the detected primary tag


T = TypeVar("T")


class _InFlight:
    """Engine work running in worker threads, counted so the process can wait for it before exiting.

    Work is abandoned when its call is cancelled (a decode cannot be interrupted), so the count may
    include threads no task waits for any more.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def run(self, fn: Callable[[], T]) -> T:
        lower_thread_priority()
        with self._idle:
            self._count += 1
        try:
            return fn()
        finally:
            with self._idle:
                self._count -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout_s)


_IN_FLIGHT = _InFlight()

ENGINE_NICE = 10  # how much lower than the event loop engine work runs (Linux: per thread)


def lower_thread_priority() -> None:
    """Run the calling thread (and the threads it starts from now on) at ``ENGINE_NICE`` below the process.

    Engine work is long and CPU-bound, the event loop's is short and due now: pacing 20 ms frames and
    answering a barge-in must not wait for a core behind a decode. On Linux a nice value is per thread
    and new threads inherit it; raising one's own needs no privilege. Elsewhere it does nothing.
    """
    if sys.platform != "linux":
        return
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        if os.getpriority(os.PRIO_PROCESS, 0) < base + ENGINE_NICE:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, base + ENGINE_NICE))
    except OSError:
        pass

def single_threaded_blas() -> None:
    """Make numpy's BLAS (OpenBLAS) run every call on the calling thread, for the whole process.

    OpenBLAS starts a helper thread per core and, after each call that used it, keeps it spinning
    for about a tenth of a second. Whisper's feature extraction makes one such call per recognition,
    so each recognition also burnt a core on a spinning thread for as long as its decode ran
    (``make bench-cost``: the CPU of a final recognition halved, its wall time the same). The engines'
    matrices are small; their threads are CTranslate2's and ONNX Runtime's own, sized by the config.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def wait_engines_idle(timeout_s: float) -> bool:
    """Block until no engine work runs in a worker thread (True), or ``timeout_s`` passed (False)."""
    return _IN_FLIGHT.wait_idle(timeout_s)


def built_at_engine_priority(build: Callable[[], T]) -> T:
    """``build()`` run in a thread of engine priority, so the threads an engine starts as it loads (a
    CTranslate2 model's workers) run there too."""
    result: list[T] = []
    failed: list[BaseException] = []

    def target() -> None:
        lower_thread_priority()
        try:
            result.append(build())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=target, name="engine-loader")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return result[0]


async def run_in_worker(fn: Callable[[], T], limiter: trio.CapacityLimiter | Claim) -> T:
    """Run engine work in a worker thread, at most ``limiter``'s worth at a time across all calls.

    Cancelled while waiting for the limiter, it never runs; cancelled while running, it is abandoned
    (the thread finishes the work, then frees its place in the limiter).
    """
    # trio takes any object with its limiter methods (its documentation says "CapacityLimiter-like").
    like = typing.cast(trio.CapacityLimiter, limiter)
    return await trio.to_thread.run_sync(partial(_IN_FLIGHT.run, fn), limiter=like, abandon_on_cancel=True)


class Scheduler:
    """Decode slots for the whole process, granted in ``FairQueue`` order (``relay_bridge.engines.schedule``).

    Work asks for a slot through a ``Claim``, which ``trio.to_thread.run_sync`` takes as its limiter:
    the slot is taken before the worker thread starts and given back when the thread has finished,
    even when the task that waited for it was cancelled and abandoned the thread. A claim cancelled
    while it waits leaves the queue at once and never runs. A free slot goes to the queue's next
    ticket directly, so work that arrives later cannot overtake it.

    With more than one slot, work of class ``held_back`` or less urgent never takes the last free
    one: it stays for more urgent work. Recognition holds back partials (the last slot stays for a
    final, and its core for the replies' speech: partials thin out first under load); synthesis holds
    back everything but a reply's first chunk. ``load`` (the process's, for admission control) gets
    how long ``urgent`` work waited and how long ``spare`` work held a slot.
    """

    def __init__(self, slots: int, *, held_back: Priority = Priority.PARTIAL, load: ProcessLoad | None = None,
                 urgent: tuple[Priority, ...] = (Priority.FINAL, Priority.SPECULATIVE),
                 spare: tuple[Priority, ...] = (Priority.PARTIAL,),
                 waited: Callable[[Priority, float], None] | None = None) -> None:
        """``waited(priority, seconds)`` is told how long each claim waited: when it got its slot, or when
        it left the queue unserved."""
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._free = slots
        self._reserve = 1 if slots > 1 else 0
        self._held_back = held_back
        self._queue = FairQueue()
        self._waiters: dict[Ticket, trio.lowlevel.Task] = {}
        self.granted: dict[Priority, int] = dict.fromkeys(Priority, 0)  # slots granted so far, by class
        self.cancelled: dict[Priority, int] = dict.fromkeys(Priority, 0)  # claims that left the queue unserved
        self.load = load or ProcessLoad(cpu_cores())
        self._urgent, self._spare = urgent, spare
        self._waited = waited

    @property
    def busy(self) -> int:
        """Slots taken now."""
        return self.slots - self._free

    def waiting(self, priority: Priority | None = None) -> int:
        """Claims waiting for a slot (of ``priority``, or all)."""
        return len(self._queue) if priority is None else self._queue.waiting(priority)

    def claim(self, owner: Hashable, priority: Priority) -> Claim:
        """A claim on one slot for ``owner``'s work of class ``priority``."""
        return Claim(self, Ticket(owner, priority))

    async def _acquire(self, ticket: Ticket) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        ticket.queued_at = trio.current_time()
        self._queue.push(ticket)
        if self._dispatch(mine=ticket):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._waiters[ticket] = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._queue.remove(ticket)
            del self._waiters[ticket]
            self.cancelled[ticket.priority] += 1
            if self._waited is not None:
                self._waited(ticket.priority, trio.current_time() - ticket.queued_at)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _dispatch(self, mine: Ticket | None = None) -> bool:
        """Grant free slots to the queue's next tickets; whether ``mine`` (not yet waiting) got one."""
        got = False
        while self._free:
            up_to = Priority.PARTIAL if self._free > self._reserve else Priority(self._held_back - 1)
            ticket = self._queue.pop(up_to=up_to)
            if ticket is None:
                break
            self._free -= 1
            now = trio.current_time()
            ticket.granted_at = now
            self.granted[ticket.priority] += 1
            if ticket.priority in self._urgent:
                self.load.waited(now - ticket.queued_at, now)
            if self._waited is not None:
                self._waited(ticket.priority, now - ticket.queued_at)
            if ticket is mine:
                got = True
            else:
                trio.lowlevel.reschedule(self._waiters.pop(ticket))
        return got

    def _release(self, ticket: Ticket) -> None:
        now = trio.current_time()
        if ticket.priority in self._spare:
            self.load.spare(now - ticket.granted_at, now)
        self._free += 1
        self._dispatch()

    def _raise(self, ticket: Ticket, priority: Priority) -> None:
        self._queue.raise_to(ticket, priority)
        self._dispatch()  # a partial held back by the reserve may run now


class Claim:
    """One piece of work's claim on a ``Scheduler`` slot; pass it as ``run_in_worker``'s limiter."""

    def __init__(self, scheduler: Scheduler, ticket: Ticket) -> None:
        self._scheduler = scheduler
        self._ticket = ticket
        self.state = "new"  # "waiting" for a slot, "running" in a worker, "done"

    @property
    def priority(self) -> Priority:
        return self._ticket.priority

    def raise_to(self, priority: Priority) -> None:
        """Make the work more urgent (never less); while it waits, it moves up the queue."""
        self._scheduler._raise(self._ticket, priority)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        if self.state != "new":
            raise RuntimeError("a claim is used once")
        self.state = "waiting"
        try:
            await self._scheduler._acquire(self._ticket)
        except BaseException:
            self.state = "done"
            raise
        self.state = "running"

    def release_on_behalf_of(self, borrower: object) -> None:
        self.state = "done"
        self._scheduler._release(self._ticket)

    async def __aenter__(self) -> None:
        """Hold the slot for work run on the event loop itself (as ``async with`` a CapacityLimiter)."""
        await self.acquire_on_behalf_of(self)

    async def __aexit__(self, *exc: object) -> None:
        self.release_on_behalf_of(self)


@dataclass
class SpeechEngines:
    transcriber: Transcriber  # the default language's recogniser
    synthesizer: Synthesizer  # the default language's voice
    asr_concurrency: int = 1
    tts_concurrency: int = 1
    language: str = "en-US"  # the default language's code
    more_languages: tuple[LanguageEngines, ...] = ()
    turn_model: TurnDetector | None = None  # the end-of-turn model (vad.turn_detection "smart"), if loaded
    # Speech rendered ahead of any call (the configured welcome greeting): (text, rate, language) -> audio
    _presynthesized: dict[tuple[str, int, str], NDArray[np.int16]] = field(default_factory=dict, init=False)
    # The whole process's load (CPU time per call, urgent engine waits), for admission control.
    load: ProcessLoad = field(default_factory=lambda: ProcessLoad(cpu_cores()), init=False)
    # The process's metrics: engine time here, and the server's and its calls'.
    metrics: Metrics = field(default_factory=Metrics)
    _asr_scheduler: Scheduler | None = field(default=None, init=False)
    _tts_scheduler: Scheduler | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        all_codes = [self.language, *(x.code for x in self.more_languages)]
        if len({c.lower() for c in all_codes}) != len(all_codes):
            raise ValueError(f"a language is declared twice: {', '.join(all_codes)}")

    @property
    def declared(self) -> tuple[LanguageEngines, ...]:
        """Every declared language, the default first."""
        return (LanguageEngines(self.language, self.transcriber, self.synthesizer), *self.more_languages)

    @property
    def languages(self) -> tuple[str, ...]:
        """The declared language codes, the default first."""
        return tuple(x.code for x in self.declared)

    def find(self, code: str) -> LanguageEngines | None:
        """The declared language ``code`` names (see the module docstring), or None."""
        declared = self.declared
        if not code:
            return declared[0]
        found = match_language(code, [x.code for x in declared])
        return next((x for x in declared if x.code == found), None)

    def declares(self, code: str) -> bool:
        """Whether ``code`` names a declared language (what a ``language`` message may switch to)."""
        return bool(code) and self.find(code) is not None

    def engines_for(self, code: str) -> LanguageEngines:
        """The engines of language ``code``; ``UnknownLanguage`` when it is not declared."""
        found = self.find(code)
        if found is None:
            raise UnknownLanguage(code, self.languages)
        return found

    def _schedulers(self) -> tuple[Scheduler, Scheduler]:
        # Created lazily, inside the trio run that uses them.
        if self._asr_scheduler is None or self._tts_scheduler is None:
            self._asr_scheduler = Scheduler(self.asr_concurrency, load=self.load, waited=self._asr_waited)
            # One slot more than the syntheses that run side by side, kept for the first chunk of a
            # reply: the caller hears nothing until it is ready, and it never waits behind a long one.
            self._tts_scheduler = Scheduler(self.tts_concurrency + 1, held_back=Priority.SPECULATIVE, load=self.load,
                                            urgent=(Priority.FINAL,), spare=())
        return self._asr_scheduler, self._tts_scheduler

    def _asr_waited(self, priority: Priority, seconds: float) -> None:
        self.metrics.asr_queue_wait.labels(priority.name.lower()).observe(seconds)

    @property
    def asr_scheduler(self) -> Scheduler:
        """The process's recognition slots (see ``Scheduler``)."""
        return self._schedulers()[0]

    @property
    def tts_scheduler(self) -> Scheduler:
        """The process's synthesis slots: a reply's first chunk (``Priority.FINAL``), then chunks due
        soon (``SPECULATIVE``), then chunks made ahead (``PARTIAL``)."""
        return self._schedulers()[1]

    async def recognise(self, audio: NDArray[np.int16], rate: int, language: str = "", *,
                        hints: str = "", claim: Claim | None = None) -> Recognised:
        """Recognise one utterance of ``rate`` Hz audio with the model of ``language``.

        ``language`` "multi" detects the language. ``hints`` are comma-separated phrases that bias
        recognition. Resampling runs in the worker. ``claim`` (from ``asr_scheduler.claim``) says
        whose work it is and how urgent; without one it is a final recognition of no call in
        particular. Raises ``UnknownLanguage`` before any work.
        """
        engines = self.engines_for(language)
        limiter = claim or self.asr_scheduler.claim(None, Priority.FINAL)
        transcriber = engines.transcriber
        # The model is asked for the language the caller named when it names one ("es" from
        # "es-ES"); only "multi" (and a bare "" default of "multi") leaves Whisper to detect it.
        whisper_lang = asr_language(language or engines.code)

        def run() -> Recognised:
            t0 = time.perf_counter()
            x = resample_once(pcm16_to_float(audio), rate, transcriber.sample_rate)
            result = transcriber.transcribe(x, whisper_lang, hints=hints)
            work = limiter.priority.name.lower()  # prometheus_client's metrics are thread-safe
            self.metrics.asr_decode.labels(work).observe(time.perf_counter() - t0)
            if engines.code == MULTI:
                return Recognised(result.text, result.language or MULTI)
            return Recognised(result.text, engines.code)

        return await run_in_worker(run, limiter)

    async def end_of_turn(self, audio: NDArray[np.int16], rate: int, *, claim: Claim | None = None) -> float:
        """The end-of-turn model's probability that the speaker of ``audio`` (the utterance so far, at
        ``rate`` Hz) has finished; 0 without a model. It runs like a recognition, under ``claim``."""
        model = self.turn_model
        if model is None:
            return 0.0

        def run() -> float:
            return model.complete(resample_once(pcm16_to_float(audio), rate, TURN_SAMPLE_RATE))

        return await run_in_worker(run, claim or self.asr_scheduler.claim(None, Priority.FINAL))

    async def transcribe(self, audio: NDArray[np.int16], rate: int, language: str = "", *, hints: str = "") -> str:
        """The text of ``recognise``."""
        return (await self.recognise(audio, rate, language, hints=hints)).text

    async def presynthesize(self, texts: Sequence[str], rate: int, *, language: str = "") -> None:
        """Render ``texts`` now, so that ``synthesize`` later returns them at once (a welcome greeting)."""
        code = self.engines_for(language).code
        for text in texts:
            if text.strip() and (text, rate, code) not in self._presynthesized:
                audio = await self.synthesize(text, rate, language=language)
                audio.flags.writeable = False
                self._presynthesized[(text, rate, code)] = audio

    async def synthesize(self, text: str, rate: int, *, language: str = "",
                         claim: Claim | None = None) -> NDArray[np.int16]:
        """Speech for ``text`` at ``rate`` Hz in the voice of ``language``, resampled in the worker.

        ``claim`` (from ``tts_scheduler.claim``) says whose it is and how urgent; without one it is
        urgent work of no call in particular. Raises ``UnknownLanguage`` before any work when
        ``language`` is not declared.
        """
        engines = self.engines_for(language)
        ready = self._presynthesized.get((text, rate, engines.code))
        if ready is not None:
            return ready
        synthesizer = engines.synthesizer
        limiter = claim or self.tts_scheduler.claim(None, Priority.FINAL)

        def run() -> NDArray[np.int16]:
            t0 = time.perf_counter()
            pieces = [pcm16_to_float(p) for p in synthesizer.synthesize(text)]
            audio = (float_to_pcm16(resample_once(np.concatenate(pieces), synthesizer.sample_rate, rate)) if pieces
                     else np.zeros(0, dtype=np.int16))
            self.metrics.tts.observe(time.perf_counter() - t0)
            return audio

        return await run_in_worker(run, limiter)
