"""The recognition queue: urgency first, calls in turn, cancellation before work runs."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from bridge.call.engines import Claim, Scheduler, run_in_worker
from bridge.engines.schedule import FairQueue, Priority, Ticket

F, S, P = Priority.FINAL, Priority.SPECULATIVE, Priority.PARTIAL


def drain(q: FairQueue) -> list[Ticket]:
    out = []
    while (t := q.pop()) is not None:
        out.append(t)
    return out


def test_classes_go_in_order_of_urgency_whatever_the_arrival() -> None:
    q = FairQueue()
    tickets = [Ticket("a", P), Ticket("b", S), Ticket("c", F), Ticket("a", F)]
    for t in tickets:
        q.push(t)
    assert [(t.owner, t.priority) for t in drain(q)] == [("c", F), ("a", F), ("b", S), ("a", P)]
    assert len(q) == 0 and q.pop() is None


def test_calls_take_turns_within_a_class_and_keep_their_own_order() -> None:
    q = FairQueue()
    a = [Ticket("a", F) for _ in range(3)]
    b = [Ticket("b", F) for _ in range(2)]
    for t in a + b:  # call a queued all of its work first
        q.push(t)
    c = Ticket("c", F)
    q.push(c)
    assert drain(q) == [a[0], b[0], c, a[1], b[1], a[2]]


def test_one_calls_partials_cannot_delay_another_calls_final() -> None:
    q = FairQueue()
    partials = [Ticket("chatty", P) for _ in range(50)]
    for t in partials:
        q.push(t)
    final = Ticket("quiet", F)
    q.push(final)
    assert q.pop() is final


def test_a_ticket_moves_up_a_class_and_keeps_its_calls_arrival_order() -> None:
    q = FairQueue()
    older = Ticket("a", P)
    newer = Ticket("a", F)
    other = Ticket("b", S)
    for t in (older, other, newer):
        q.push(t)
    q.raise_to(older, F)
    assert older.priority is F
    assert drain(q) == [older, newer, other]


def test_a_ticket_is_never_lowered_and_a_removed_one_never_comes_out() -> None:
    q = FairQueue()
    t, gone = Ticket("a", F), Ticket("a", F)
    q.push(t)
    q.push(gone)
    q.raise_to(t, P)
    assert t.priority is F
    assert q.remove(gone) and not q.remove(gone)
    assert drain(q) == [t]
    with pytest.raises(ValueError):
        q.push(t)
        q.push(t)


class Gate:
    """Work for a worker thread that records when it ran and finishes when told."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._started: dict[str, threading.Event] = {}
        self._release: dict[str, threading.Event] = {}

    def work(self, name: str) -> Callable[[], str]:
        self._started[name], self._release[name] = threading.Event(), threading.Event()

        def fn() -> str:
            self.ran.append(name)
            self._started[name].set()
            self._release[name].wait(10)
            return name
        return fn

    async def started(self, name: str) -> None:
        """Wait until ``name`` runs in its worker thread."""
        assert await trio.to_thread.run_sync(self._started[name].wait, 10), f"{name} never started"

    def finish(self, name: str) -> None:
        self._release[name].set()

    async def submit(self, nursery: trio.Nursery, name: str, claim: Claim,
                     scope: trio.CancelScope | None = None) -> None:
        """Start ``name``'s work under ``claim`` (inside ``scope``, if given) and let it queue or start."""
        work = self.work(name)

        async def job() -> None:
            with scope or trio.CancelScope():
                await run_in_worker(work, claim)

        nursery.start_soon(job)
        await trio.testing.wait_all_tasks_blocked()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for worker threads to report back to trio until ``condition`` holds."""
    for _ in range(1000):
        if condition():
            return
        await trio.to_thread.run_sync(threading.Event().wait, 0.001)
        await trio.testing.wait_all_tasks_blocked()
    raise AssertionError("the condition never held")


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_free_slot_goes_to_the_most_urgent_waiting_work() -> None:
    async def main() -> None:
        sched = Scheduler(1)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await gate.submit(nursery, "first", sched.claim("a", P))
            await gate.started("first")
            for name, owner, priority in (("partial", "a", P), ("spec", "b", S), ("final", "c", F)):
                await gate.submit(nursery, name, sched.claim(owner, priority))
            assert sched.waiting() == 3 and sched.waiting(F) == 1 and sched.busy == 1
            for done, following in (("first", "final"), ("final", "spec"), ("spec", "partial")):
                gate.finish(done)
                await gate.started(following)
                assert gate.ran[-1] == following and sched.busy == 1
            gate.finish("partial")
        assert gate.ran == ["first", "final", "spec", "partial"]
        assert sched.busy == 0 and sched.granted == {F: 1, S: 1, P: 2}

    run(main)


def test_work_cancelled_while_it_waits_never_runs_and_leaves_no_slot_taken() -> None:
    async def main() -> None:
        sched = Scheduler(1)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await gate.submit(nursery, "running", sched.claim("a", F))
            await gate.started("running")
            scope = trio.CancelScope()
            claim = sched.claim("b", P)
            await gate.submit(nursery, "never", claim, scope)
            assert sched.waiting() == 1 and claim.state == "waiting"
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert sched.waiting() == 0 and claim.state == "done" and sched.cancelled[P] == 1
            gate.finish("running")
            await until(lambda: sched.busy == 0)
        assert gate.ran == ["running"]

    run(main)


def test_abandoned_work_holds_its_slot_until_its_thread_finishes() -> None:
    async def main() -> None:
        sched = Scheduler(1)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            await gate.submit(nursery, "abandoned", sched.claim("a", F), scope)
            await gate.started("abandoned")
            scope.cancel()  # the call ended: its decode is abandoned but still running
            await trio.testing.wait_all_tasks_blocked()
            await gate.submit(nursery, "next", sched.claim("b", F))
            assert gate.ran == ["abandoned"] and sched.waiting() == 1 and sched.busy == 1  # one decode at a time
            gate.finish("abandoned")
            await gate.started("next")
            gate.finish("next")
        assert gate.ran == ["abandoned", "next"] and sched.busy == 0

    run(main)


def test_a_waiting_claim_moved_up_overtakes_the_work_it_was_behind() -> None:
    async def main() -> None:
        sched = Scheduler(1)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await gate.submit(nursery, "running", sched.claim("a", F))
            await gate.started("running")
            await gate.submit(nursery, "other", sched.claim("c", S))
            spec = sched.claim("b", S)
            await gate.submit(nursery, "promoted", spec)
            spec.raise_to(F)  # the caller stopped: the speculation is now the final
            assert spec.priority is F and sched.waiting(F) == 1
            gate.finish("running")
            await gate.started("promoted")
            gate.finish("promoted")
            await gate.started("other")
            gate.finish("other")
        assert gate.ran == ["running", "promoted", "other"]

    run(main)


def test_slots_run_side_by_side_up_to_their_number() -> None:
    async def main() -> None:
        sched = Scheduler(2)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            for name in ("one", "two", "three"):
                await gate.submit(nursery, name, sched.claim(name, F))
            await gate.started("one")
            await gate.started("two")
            assert sched.busy == 2 and sched.waiting() == 1 and "three" not in gate.ran
            gate.finish("two")
            await gate.started("three")
            gate.finish("one")
            gate.finish("three")
        assert sched.busy == 0 and sorted(gate.ran) == ["one", "three", "two"]

    run(main)


def test_a_scheduler_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        Scheduler(0)
