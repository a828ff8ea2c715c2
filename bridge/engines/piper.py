"""Piper synthesiser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


class PiperSynthesizer:
    def __init__(self, model_path: Path) -> None:
        from piper import PiperVoice

        config = model_path.with_name(model_path.name + ".json")
        self.voice = PiperVoice.load(model_path, config_path=config if config.is_file() else None)
        self.sample_rate = int(self.voice.config.sample_rate)

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        if not text.strip():
            return
        for chunk in self.voice.synthesize(text):
            yield np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello."):
            pass
