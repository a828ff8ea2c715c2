from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
import trio.testing

from relay_bridge.call import engines
from relay_bridge.sim.clips import Clip, bundled_clips

T = TypeVar("T")


@pytest.fixture
def autojump_clock(monkeypatch: pytest.MonkeyPatch) -> trio.testing.MockClock:
    """trio's mock clock, jumping ahead whenever every task is blocked.

    A task waiting on a worker thread counts as blocked, so simulated time would race ahead of engine
    work in a thread (and a slow thread on a loaded machine would reorder a simulated call). Under
    this clock, engine work runs on the event loop instead: the fakes take microseconds, and the
    simulated call becomes deterministic. Tests on the real clock keep the worker threads.
    """

    async def inline(fn: Callable[[], T], limiter: trio.CapacityLimiter | engines.Claim) -> T:
        async with limiter:
            await trio.lowlevel.checkpoint()
            return fn()

    monkeypatch.setattr(engines, "run_in_worker", inline)
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(scope="session")
def clips() -> dict[str, Clip]:
    return bundled_clips()
