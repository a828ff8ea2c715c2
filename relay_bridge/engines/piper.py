"""Piper synthesiser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


class PiperSynthesizer:
    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        import onnxruntime  # type: ignore[import-untyped]
        from piper import PiperConfig, PiperVoice

        # As PiperVoice.load, but with our own session options (it would load the model once more).
        with model_path.with_name(model_path.name + ".json").open(encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        # ONNX Runtime's default is a thread per core that spins between runs: side by side with the
        # recogniser's decodes that takes cores from them and from the event loop. One thread per
        # synthesis runs on the calling (worker) thread, and several syntheses run side by side.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(session=session, config=config)
        self.sample_rate = int(self.voice.config.sample_rate)

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        if not text.strip():
            return
        for piece in self.voice.synthesize(text):
            yield np.asarray(piece.audio_int16_array, dtype=np.int16).reshape(-1)

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello."):
            pass
