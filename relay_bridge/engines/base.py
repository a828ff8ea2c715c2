"""What the runtime needs from a recogniser and a synthesiser."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Transcript:
    text: str  # "" when nothing was said
    language: str  # the language the text is in, as Whisper names it ("en", "es"); "" when unknown


class Transcriber(Protocol):
    sample_rate: int

    def transcribe(self, audio: NDArray[np.float32], language: str, *, hints: str = "") -> Transcript:
        """One utterance (mono float32 at ``sample_rate``) in ``language`` ("en"; "": detect it).

        ``hints`` are comma-separated phrases (names, terms) the speech is likely to contain.
        """
        ...


class Synthesizer(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        """Audio for ``text`` (mono int16 at ``sample_rate``), yielded as it is produced."""
        ...


class TurnDetector(Protocol):
    """An end-of-turn model: the probability that the speaker of ``audio`` (16 kHz, the utterance so
    far) has finished."""

    def complete(self, audio: NDArray[np.float32]) -> float: ...


def asr_language(tag: str) -> str:
    """BCP-47 tag ("en-US") to the primary language Whisper expects ("en")."""
    return tag.split("-")[0].lower() if tag and tag != "multi" else ""


def match_language(code: str, declared: Sequence[str]) -> str | None:
    """The declared language ``code`` names, or None.

    Case does not matter ("es-es" names "es-ES"), and a bare primary subtag names the first declared
    language that has it ("es" names "es-ES"), so a tag already reduced to Whisper's form still
    finds its language. "multi" names only "multi".
    """
    wanted = code.lower()
    for c in declared:
        if c.lower() == wanted:
            return c
    if wanted and "-" not in wanted and wanted != "multi":
        for c in declared:
            if c.lower() != "multi" and asr_language(c) == wanted:
                return c
    return None
