"""A fixed-capacity ring of samples addressed by absolute sample index.

Writers append; readers ask for ``[start, end)`` in absolute samples since the stream began, which
is how the endpointer reports utterances. When the ring is full the oldest samples are overwritten
(the socket reader must never block on audio); ``dropped`` counts them and a read that reaches
back before the oldest retained sample is clipped to what is still there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class SampleRing:
    def __init__(self, capacity: int, dtype: type[np.generic] = np.float32) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(capacity, dtype=dtype)
        self.capacity = capacity
        self.total = 0  # samples ever written; the absolute index of the next sample

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self.total - self.capacity)

    @property
    def dropped(self) -> int:
        return self.oldest

    def write(self, samples: NDArray[np.generic]) -> None:
        n = len(samples)
        if n == 0:
            return
        if n >= self.capacity:
            samples = samples[-self.capacity :]
            self.total += n - self.capacity
            n = self.capacity
        pos = self.total % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self.total += n

    def read(self, start: int, end: int) -> NDArray[np.generic]:
        """Samples ``[start, end)`` by absolute index, clipped to what the ring still holds."""
        start = max(start, self.oldest)
        end = min(end, self.total)
        if end <= start:
            return self._buf[:0].copy()
        a = start % self.capacity
        n = end - start
        if a + n <= self.capacity:
            return self._buf[a : a + n].copy()
        return np.concatenate((self._buf[a:], self._buf[: a + n - self.capacity]))
