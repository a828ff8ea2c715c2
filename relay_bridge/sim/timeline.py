"""A shared, timestamped log of what the simulated caller and app saw, printed live."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import trio


@dataclass
class Timeline:
    out: TextIO | None = None
    t0: float = field(default_factory=trio.current_time)
    entries: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, who: str, what: str, text: str = "", **data: Any) -> float:
        now = trio.current_time()
        self.entries.append((now, who, what, data))
        if self.out is not None:
            line = f"{now - self.t0:7.2f}s  {who:<6} {what:<18} {text}"
            print(line.rstrip(), file=self.out, flush=True)
        return now

    def times(self, who: str, what: str) -> list[float]:
        return [t for t, w, k, _ in self.entries if w == who and k == what]

    def find(self, who: str, what: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, d) for t, w, k, d in self.entries if w == who and k == what]


def stdout_timeline() -> Timeline:
    return Timeline(out=sys.stdout)
