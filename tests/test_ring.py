"""SampleRing: absolute-index reads over a fixed-capacity ring that overwrites its oldest samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_bridge.audio.ring import SampleRing


def _ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


def test_empty_ring() -> None:
    r = SampleRing(10)
    assert r.total == 0
    assert r.oldest == 0
    assert r.dropped == 0
    assert len(r.read(0, 10)) == 0
    assert r.read(0, 10).dtype == np.float32


def test_reads_by_absolute_index() -> None:
    r = SampleRing(10)
    r.write(_ramp(0, 4))
    r.write(_ramp(4, 3))
    assert r.total == 7
    assert r.read(0, 7).tolist() == list(range(7))
    assert r.read(2, 5).tolist() == [2, 3, 4]
    assert r.dropped == 0


def test_wraparound() -> None:
    r = SampleRing(8)
    r.write(_ramp(0, 6))
    r.write(_ramp(6, 5))  # wraps: positions 6,7 then 0,1,2
    assert r.total == 11
    assert r.oldest == 3
    assert r.read(3, 11).tolist() == list(range(3, 11))
    assert r.read(5, 9).tolist() == [5, 6, 7, 8]  # a read across the physical end of the buffer
    assert r.read(8, 11).tolist() == [8, 9, 10]


def test_overwrite_counts_dropped() -> None:
    r = SampleRing(5)
    r.write(_ramp(0, 5))
    assert r.dropped == 0
    r.write(_ramp(5, 2))
    assert r.dropped == 2
    assert r.oldest == 2
    assert r.read(0, 7).tolist() == [2, 3, 4, 5, 6]


def test_write_larger_than_capacity_keeps_newest() -> None:
    r = SampleRing(4)
    r.write(_ramp(0, 2))
    r.write(_ramp(2, 11))
    assert r.total == 13
    assert r.dropped == 9
    assert r.read(0, 100).tolist() == [9, 10, 11, 12]


def test_write_exactly_capacity() -> None:
    r = SampleRing(4)
    r.write(_ramp(0, 3))
    r.write(_ramp(3, 4))
    assert r.total == 7
    assert r.read(0, 7).tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 3, []),  # entirely dropped
        (0, 8, [6, 7]),  # clipped at the oldest
        (10, 20, [10, 11]),  # clipped at the newest
        (12, 15, []),  # entirely in the future
        (9, 9, []),  # empty window
        (11, 9, []),  # reversed window
        (-5, 7, [6]),  # negative start
    ],
)
def test_clipped_reads(start: int, end: int, expected: list[int]) -> None:
    r = SampleRing(6)
    r.write(_ramp(0, 12))
    assert r.read(start, end).tolist() == expected


def test_empty_write_is_noop() -> None:
    r = SampleRing(3)
    r.write(_ramp(0, 2))
    r.write(np.zeros(0, dtype=np.float32))
    assert r.total == 2
    assert r.read(0, 2).tolist() == [0, 1]


def test_read_returns_copy() -> None:
    r = SampleRing(4)
    r.write(_ramp(0, 3))
    out = r.read(0, 3)
    out[:] = -1
    assert r.read(0, 3).tolist() == [0, 1, 2]


def test_int16_dtype() -> None:
    r = SampleRing(4, dtype=np.int16)
    r.write(np.array([1, -2, 3], dtype=np.int16))
    r.write(np.array([4, 5], dtype=np.int16))
    out = r.read(0, 5)
    assert out.dtype == np.int16
    assert out.tolist() == [-2, 3, 4, 5]


@pytest.mark.parametrize("capacity", [0, -1])
def test_rejects_non_positive_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        SampleRing(capacity)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 40),
    sizes=st.lists(st.integers(0, 60), max_size=12),
    window=st.tuples(st.integers(-10, 400), st.integers(-10, 400)),
)
def test_read_matches_concatenated_stream(capacity: int, sizes: list[int], window: tuple[int, int]) -> None:
    r = SampleRing(capacity)
    stream: list[float] = []
    for n in sizes:
        chunk = _ramp(len(stream), n) * 0.5
        r.write(chunk)
        stream.extend(chunk.tolist())
        total = len(stream)
        assert r.total == total
        assert r.oldest == max(0, total - capacity)
        assert r.dropped == r.oldest
        # Everything still held reads back exactly.
        assert r.read(r.oldest, total).tolist() == stream[r.oldest : total]
    total = len(stream)
    start, end = window
    lo, hi = max(start, r.oldest), min(end, total)
    expected = stream[lo:hi] if hi > lo else []
    assert r.read(start, end).tolist() == expected
