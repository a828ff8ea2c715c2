from __future__ import annotations

import pytest
import trio.testing

from bridge.sim.clips import Clip, bundled_clips


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(scope="session")
def clips() -> dict[str, Clip]:
    return bundled_clips()
