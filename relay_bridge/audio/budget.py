"""How much audio a peer may send: real time, plus a burst allowance for network jitter.

A token bucket counted in samples: it fills at the sample rate up to ``burst_s`` worth and each
frame takes its length out. A provider that sends faster than the call runs (a replay, a flood)
gets its excess refused here, before any endpointing or recognition is spent on it (the codec has
parsed the frame, and for Telnyx converted it to 8 kHz mu-law, in time linear in its size). The
runtime passes the clock in; nothing here reads one.
"""

from __future__ import annotations


class RealTimeBudget:
    def __init__(self, rate: int, *, burst_s: float) -> None:
        self.rate = rate
        self.capacity = burst_s * rate
        self._tokens = self.capacity
        self._last: float | None = None

    def admit(self, samples: int, now: float) -> bool:
        """Whether ``samples`` arriving at ``now`` (seconds) are within the budget; if so they are spent."""
        if self._last is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if samples > self._tokens:
            return False
        self._tokens -= samples
        return True
