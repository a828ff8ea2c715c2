"""The listener's cancellation of unwanted recognitions never cancels a final one.

A partial that covered the whole utterance doubles as the speculative and then the final recognition;
it must survive the caller's next utterance even when the ASR queue is slow.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import trio
from numpy.typing import NDArray

from bridge.call.engines import Recognised
from bridge.call.listener import Listener, Recognition
from bridge.speech.endpointer import EndpointerSettings, SpeechEnded, SpeechPaused, SpeechStarted


class ScriptedEndpointer:
    """Reports the given events, one step per fed frame: (events, in speech, open utterance bounds)."""

    def __init__(self, steps: list[tuple[list[Any], bool, tuple[int, int] | None]]) -> None:
        self.steps = steps
        self.in_speech = False
        self.turn_voiced_frames = 100
        self._bounds: tuple[int, int] | None = None

    def feed(self, pcm: NDArray[np.int16]) -> list[Any]:
        events, self.in_speech, self._bounds = self.steps.pop(0)
        return events

    def open_utterance(self) -> tuple[int, int] | None:
        return self._bounds


class SlowEngines:
    """Two seconds a recognition: the ASR slot is busy with other calls."""

    async def recognise(self, audio: NDArray[np.int16], rate: int, language: str = "", *,
                        hints: str = "") -> Recognised:
        await trio.sleep(2.0)
        return Recognised(text=f"{len(audio)} samples", language="en-US")


async def test_a_partial_that_became_the_final_survives_the_next_utterance(autojump_clock: object) -> None:
    prompts: list[str] = []

    async def ignore(*args: object) -> None:
        pass

    async def on_utterance(rec: Recognition) -> None:
        prompts.append(rec.text)

    listener = Listener(SlowEngines(), EndpointerSettings(), language="en-US",  # type: ignore[arg-type]
                        on_speech_started=ignore, on_speech_ended=ignore, on_utterance=on_utterance,
                        logger=logging.LoggerAdapter(logging.getLogger(__name__), {}), on_partial=ignore)
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
    assert len(prompts) == 1  # the first utterance was recognised and sent (it used to be cancelled: none)
