"""The end-of-turn model: Smart Turn v3.2 on ONNX Runtime, audio in, the probability the caller has finished.

Facts the model depends on (pipecat-ai's Smart Turn v3, BSD-2-Clause): it hears the last
``WINDOW_S`` seconds of the utterance at 16 kHz, zero-padded at the start when shorter, normalised to
zero mean and unit variance, as Whisper's log-mel features (80 mel bands by 800 frames, computed here
with faster-whisper's extractor, which gives the same features as the reference one). Its one
output is the probability that the turn is complete. It silently misjudges 8 kHz audio: telephone
audio is resampled to 16 kHz first. About 60 ms of one core a decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

TURN_MODEL = "smart-turn-v3.2"  # in the model manifest
SAMPLE_RATE = 16000
WINDOW_S = 8
NORMALISE_EPS = 1e-7


class TurnModel:
    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        import onnxruntime  # type: ignore[import-untyped]
        from faster_whisper.feature_extractor import FeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as Piper's (engines/piper.py)
        self._session: Any = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                                          providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, chunk_length=WINDOW_S)

    def features(self, audio: NDArray[np.float32]) -> NDArray[np.float32]:
        """The model's input for ``audio`` (16 kHz): shape (80, 800)."""
        n = SAMPLE_RATE * WINDOW_S
        x = np.asarray(audio, dtype=np.float32)[-n:]
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + NORMALISE_EPS)
        return np.asarray(self._features(x, padding=0), dtype=np.float32)

    def complete(self, audio: NDArray[np.float32]) -> float:
        """The probability that the speaker of ``audio`` (16 kHz, the utterance so far) has finished."""
        if len(audio) == 0:
            return 0.0
        out = self._session.run(None, {"input_features": self.features(audio)[np.newaxis]})
        return float(np.asarray(out[0]).reshape(-1)[0])

    def warm_up(self) -> None:
        self.complete(np.zeros(SAMPLE_RATE, dtype=np.float32))
