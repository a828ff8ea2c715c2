"""The recognition queue: urgency first, calls in turn, cancellation before work runs."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from relay_bridge.call.engines import (
    ENGINE_NICE,
    Claim,
    Scheduler,
    built_at_engine_priority,
    run_in_worker,
    single_threaded_blas,
)
from relay_bridge.engines.schedule import LOAD_WINDOW_S, MIN_WAITS, FairQueue, Priority, ProcessLoad, Ticket

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


def test_partials_leave_the_last_free_slot_for_a_final() -> None:
    async def main() -> None:
        sched = Scheduler(2)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await gate.submit(nursery, "partial-a", sched.claim("a", P))
            await gate.started("partial-a")
            await gate.submit(nursery, "partial-b", sched.claim("b", P))
            assert sched.busy == 1 and sched.waiting(P) == 1  # the second slot is kept free
            await gate.submit(nursery, "final-c", sched.claim("c", F))
            await gate.started("final-c")  # at once, in the slot the partial left
            assert sched.busy == 2 and gate.ran == ["partial-a", "final-c"]
            gate.finish("final-c")
            await until(lambda: sched.busy == 1)
            assert "partial-b" not in gate.ran  # the one free slot is still kept
            gate.finish("partial-a")
            await gate.started("partial-b")
            gate.finish("partial-b")
        assert gate.ran == ["partial-a", "final-c", "partial-b"]

    run(main)


def test_a_held_back_partial_raised_to_a_final_runs_at_once() -> None:
    async def main() -> None:
        sched = Scheduler(2)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await gate.submit(nursery, "partial-a", sched.claim("a", P))
            await gate.started("partial-a")
            claim = sched.claim("b", P)
            await gate.submit(nursery, "partial-b", claim)
            assert sched.waiting(P) == 1
            claim.raise_to(F)  # it covers the whole utterance now
            await gate.started("partial-b")
            gate.finish("partial-a")
            gate.finish("partial-b")
        assert sched.busy == 0

    run(main)


def test_one_slot_runs_partials_when_free() -> None:
    async def main() -> None:
        sched = Scheduler(1)
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await gate.submit(nursery, "partial", sched.claim("a", P))
            await gate.started("partial")
            gate.finish("partial")
        assert gate.ran == ["partial"]

    run(main)


# -- the load that admission control judges by -----------------------------------------------------


def busy_calls(load: ProcessLoad, calls: int, seconds: int, cores_per_call: float, start: float = 0.0,
               cpu_at_start: float = 0.0) -> tuple[float, float]:
    """``calls`` calls for ``seconds``, each using ``cores_per_call``; the clock and CPU time at the end."""
    load.calls(calls, start)
    load.cpu(cpu_at_start, start)
    cpu = cpu_at_start
    for t in range(1, seconds + 1):
        cpu += calls * cores_per_call
        load.cpu(cpu, start + t)
    return start + seconds, cpu


def test_a_call_is_refused_when_it_would_use_too_much_of_the_cores() -> None:
    load = ProcessLoad(cores=2)
    now, _ = busy_calls(load, calls=10, seconds=20, cores_per_call=0.1)
    assert load.per_call(now) == pytest.approx(0.1, rel=0.01)
    assert load.fits_another(10, now, max_load=0.8, max_wait_s=0.3) is None  # 11 calls: 55% of two cores
    assert load.fits_another(14, now, max_load=0.8, max_wait_s=0.3) is None  # 15 calls: 75%
    why = load.fits_another(16, now, max_load=0.8, max_wait_s=0.3)  # 17 calls: 85%
    assert why is not None and "17 calls would use 85% of 2 core(s)" in why
    assert load.fits_another(16, now, max_load=0, max_wait_s=0.3) is None  # the test is off


def test_work_that_only_uses_spare_capacity_is_not_counted() -> None:
    load = ProcessLoad(cores=1)
    now, _ = busy_calls(load, calls=6, seconds=25, cores_per_call=0.15)  # 0.9 of the core in all...
    for t in range(25):
        load.spare(0.6, float(t) + 0.5)  # ...of which 0.6 went to partial recognitions
    assert load.per_call(now) == pytest.approx(0.05, rel=0.01)
    assert load.fits_another(6, now, max_load=0.8, max_wait_s=0.3) is None


def test_the_first_seconds_of_calls_do_not_stand_for_what_calls_cost() -> None:
    load = ProcessLoad(cores=1)
    now, cpu = busy_calls(load, calls=4, seconds=20, cores_per_call=0.5)  # 80 call-seconds: not enough
    assert load.fits_another(4, now, max_load=0.8, max_wait_s=0.3) is None
    now, _ = busy_calls(load, calls=4, seconds=10, cores_per_call=0.5, start=now, cpu_at_start=cpu)
    assert load.fits_another(4, now, max_load=0.8, max_wait_s=0.3) is not None  # 120 call-seconds


def test_a_call_is_refused_while_urgent_work_waits_too_long_for_a_slot() -> None:
    load = ProcessLoad(cores=2)
    now, _ = busy_calls(load, calls=2, seconds=10, cores_per_call=0.01)
    for i in range(MIN_WAITS - 1):
        load.waited(0.5, now - 5 + i * 0.1)
    assert load.fits_another(2, now, max_load=0.8, max_wait_s=0.3) is None  # too few waits to judge
    load.waited(0.5, now)
    why = load.fits_another(2, now, max_load=0.8, max_wait_s=0.3)
    assert why is not None and "waited over 300 ms" in why
    assert load.fits_another(2, now, max_load=0.8, max_wait_s=0.6) is None
    assert load.fits_another(2, now, max_load=0.8, max_wait_s=0) is None  # the test is off


def test_the_load_is_forgotten_after_its_window() -> None:
    load = ProcessLoad(cores=1)
    now, cpu = busy_calls(load, calls=4, seconds=10, cores_per_call=0.5)
    for _ in range(MIN_WAITS):
        load.waited(1.0, now)
    assert load.fits_another(4, now, max_load=0.8, max_wait_s=0.3) is not None
    load.calls(0, now)
    later = now + LOAD_WINDOW_S + 2
    load.cpu(cpu, later)
    assert load.per_call(later) == 0.0 and load.fits_another(0, later, max_load=0.8, max_wait_s=0.3) is None


def test_the_load_keeps_fixed_memory() -> None:
    load = ProcessLoad(cores=2)
    for i in range(100_000):
        load.waited(0.01, i * 0.001)
    assert all(len(b.waits) <= 256 for b in load._buckets) and len(load._buckets) == LOAD_WINDOW_S


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_engine_work_runs_below_the_event_loops_priority() -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    wanted = min(19, base + ENGINE_NICE)

    async def main() -> int:
        return await run_in_worker(lambda: os.getpriority(os.PRIO_PROCESS, 0), trio.CapacityLimiter(1))

    assert trio.run(main) == wanted
    seen: list[int] = []

    def load() -> None:  # an engine that starts its own thread as it loads
        t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
        t.start()
        t.join()

    built_at_engine_priority(load)
    assert seen == [wanted] and os.getpriority(os.PRIO_PROCESS, 0) == base  # this thread is untouched


def test_numpys_blas_runs_on_the_calling_thread_once_the_engines_load() -> None:
    from threadpoolctl import threadpool_info

    single_threaded_blas()
    blas = [x for x in threadpool_info() if x["user_api"] == "blas"]
    assert blas and all(x["num_threads"] == 1 for x in blas)


def test_synthesis_keeps_its_last_free_slot_for_a_replys_first_chunk() -> None:
    async def main() -> None:
        sched = Scheduler(3, held_back=S)  # two syntheses side by side, one slot kept for first chunks
        gate = Gate()
        async with trio.open_nursery() as nursery:
            for name, owner, priority in (("ahead-a", "a", P), ("due-b", "b", S), ("due-c", "c", S)):
                await gate.submit(nursery, name, sched.claim(owner, priority))
            await gate.started("ahead-a")
            await gate.started("due-b")
            assert sched.busy == 2 and sched.waiting(S) == 1  # the third slot is kept
            await gate.submit(nursery, "first-d", sched.claim("d", F))
            await gate.started("first-d")  # at once, though due-c waited longer
            for name in ("ahead-a", "due-b", "first-d"):
                gate.finish(name)
            await gate.started("due-c")
            gate.finish("due-c")
        assert sorted(gate.ran[:2]) == ["ahead-a", "due-b"] and gate.ran[2:] == ["first-d", "due-c"]

    run(main)


def test_each_scheduler_reports_only_its_urgent_waits_and_its_spare_work() -> None:
    async def main() -> None:
        load = ProcessLoad(cores=2)
        tts = Scheduler(1, held_back=S, load=load, urgent=(F,), spare=())
        for priority in (F, S, P):
            async with tts.claim("a", priority):
                await trio.sleep(1)
        w = load.window(trio.current_time())
        assert len(w.waits) == 1 and w.spare_s == 0
        asr = Scheduler(1, load=load)
        for priority in (F, S, P):
            async with asr.claim("a", priority):
                await trio.sleep(1)
        w = load.window(trio.current_time())
        assert len(w.waits) == 3 and w.spare_s == pytest.approx(1.0)

    run(main)
