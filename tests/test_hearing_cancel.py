"""The hearing stage's cancellation of unwanted recognitions never cancels a final one.

A partial that covered the whole utterance doubles as the speculative and then the final recognition;
it must survive the caller's next utterance even when the ASR queue is slow.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
import trio
from numpy.typing import NDArray

from relay_bridge.call.engines import Claim, Recognised, Scheduler
from relay_bridge.call.hearing import Hearing
from relay_bridge.call.inbox import Inbox
from relay_bridge.conversation import events as ev
from relay_bridge.engines.schedule import Priority
from relay_bridge.speech.endpointer import EndpointerSettings, SpeechEnded, SpeechPaused, SpeechStarted


class ScriptedEndpointer:
    """Reports the given events, one step per fed frame: (events, in speech, open utterance bounds)."""

    def __init__(self, steps: list[tuple[list[Any], bool, tuple[int, int] | None]]) -> None:
        self.steps = steps
        self.in_speech = False
        self.turn_voiced_frames = 100
        self._bounds: tuple[int, int] | None = None
        self.position = 0  # samples fed

    def feed(self, pcm: NDArray[np.int16]) -> list[Any]:
        events, self.in_speech, self._bounds = self.steps.pop(0)
        self.position += len(pcm)
        return events

    def open_utterance(self) -> tuple[int, int] | None:
        return self._bounds


class SlowEngines:
    """Two seconds a recognition: the ASR slot is busy with other calls."""

    def __init__(self) -> None:
        self.asr_scheduler = Scheduler(1)

    async def recognise(self, audio: NDArray[np.int16], rate: int, language: str = "", *,
                        hints: str = "", claim: Claim | None = None) -> Recognised:
        assert claim is not None
        async with claim:
            await trio.sleep(2.0)
        return Recognised(text=f"{len(audio)} samples", language="en-US")


def hearing_of(engines: SlowEngines) -> tuple[Hearing, Inbox[ev.Event]]:
    inbox: Inbox[ev.Event] = Inbox()
    hearing = Hearing(engines, EndpointerSettings(), inbox, language="en-US",  # type: ignore[arg-type]
                      logger=logging.LoggerAdapter(logging.getLogger(__name__), {}), partials=True)
    return hearing, inbox


async def received(inbox: Inbox[ev.Event]) -> list[ev.Event]:
    found = []
    while True:
        with trio.move_on_after(0.001) as waited:
            found.append(await inbox.get())
        if waited.cancelled_caught:
            return found


async def test_a_partial_that_became_the_final_survives_the_next_utterance(autojump_clock: object) -> None:
    listener, inbox = hearing_of(SlowEngines())
    listener.endpointer = ScriptedEndpointer([  # type: ignore[assignment]
        ([SpeechStarted(start=0, detected_at=480)], True, (0, 4000)),  # a partial of (0, 4000) starts
        ([SpeechPaused(start=0, end=4000)], True, (0, 4200)),  # it covers the utterance: the speculation
        ([SpeechEnded(start=0, end=4000, speech_end=3200)], False, None),  # and the final
        ([SpeechStarted(start=9000, detected_at=9480)], True, (9000, 9100)),  # next utterance, before it is done
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        for _ in range(4):
            await listener.feed(b"\xff" * 160)
            await trio.sleep(0.1)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    prompts = [e.text for e in await received(inbox) if isinstance(e, ev.Recognised)]
    assert len(prompts) == 1  # the first utterance was recognised and sent (it used to be cancelled: none)


async def test_a_partial_still_queued_when_the_next_is_due_is_replaced_by_it(autojump_clock: object) -> None:
    engines = SlowEngines()
    listener, inbox = hearing_of(engines)
    # One frame (160 samples) a step; a partial is due every 1,600 samples (PARTIAL_INTERVAL_MS).
    listener.endpointer = ScriptedEndpointer([  # type: ignore[assignment]
        ([SpeechStarted(start=0, detected_at=0)] if k == 1 else [], True, (0, 160 * k)) for k in range(1, 22)
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        # Another call's decode holds the only slot for the first 2 s.
        nursery.start_soon(partial(engines.recognise, np.zeros(8, np.int16), 8000,
                                   claim=engines.asr_scheduler.claim("other call", Priority.FINAL)))
        await trio.sleep(0.01)
        for _ in range(21):  # the partial of 1,600 samples queues; at 3,200 the next is due
            await listener.feed(b"\xff" * 160)
            await trio.sleep(0.02)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert listener.partials_overtaken == 1 and engines.asr_scheduler.cancelled[Priority.PARTIAL] == 1
    partials = [e.text for e in await received(inbox) if isinstance(e, ev.PartialRecognised)]
    assert partials == ["3200 samples"]  # the replacement, with more audio; the first never ran
