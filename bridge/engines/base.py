"""What the runtime needs from a recogniser and a synthesiser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class Transcriber(Protocol):
    sample_rate: int

    def transcribe(self, audio: NDArray[np.float32], language: str) -> str:
        """Text of one utterance (mono float32 at ``sample_rate``); "" when nothing was said."""
        ...


class Synthesizer(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        """Audio for ``text`` (mono int16 at ``sample_rate``), yielded as it is produced."""
        ...


def asr_language(tag: str) -> str:
    """BCP-47 tag ("en-US") to the primary language Whisper expects ("en")."""
    return tag.split("-")[0].lower() if tag and tag != "multi" else ""
