"""The order engine work waits in: urgency first, then calls in turn.

Recognition is the scarce resource of a voice host: every call's utterances queue for the same few
decode slots. Work comes in three classes (``Priority``): a final recognition (the caller has
stopped and waits for the reply) goes before a speculative one (the caller has probably stopped)
which goes before a partial (the caller is still speaking). Within a class, calls take turns: the
call at the head of the class gets one item, then goes to the back if it has more, so one chatty
call cannot hold back another's work of the same class, and no call's partials can delay another's
final. Each call's own work stays in arrival order.

A queued item can move up a class (a partial that turns out to cover the whole utterance becomes
the final) and can leave the queue at any time (work that is no longer wanted). No threads, and no
clock but the times the runtime (``relay_bridge.call.engines``) passes in: it grants slots in the order
``pop`` gives, and keeps the last ``LOAD_WINDOW_S`` of the process in a ``ProcessLoad`` for
admission control (``fits_another``: whether one more call fits the cores and the latency budget).

Speech synthesis queues the same way: the first chunk of a reply (the caller hears nothing yet) is
``FINAL``, a later chunk due before the audio ahead of it runs out is ``SPECULATIVE``, and one made
further ahead is ``PARTIAL``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import IntEnum
from operator import attrgetter

LOAD_WINDOW_S = 30.0  # the recent past that admission control judges by
LOAD_BUCKET_S = 1.0
SLOW_SHARE = 0.1  # recognition is over budget when more than this share of finals waited too long
WAITS_PER_BUCKET = 256  # the waits of the first this many urgent items of a second are kept (fixed memory)
MIN_WAITS = 20  # fewer waits than this in the window say nothing yet
# Less call time than this in the window says nothing yet about what a call costs: a call's first
# seconds (its greeting synthesised, no caller speech yet) are not what the rest of it costs.
MIN_CALL_S = 120.0


class Priority(IntEnum):
    FINAL = 0
    SPECULATIVE = 1
    PARTIAL = 2


_SEQUENCE = itertools.count()


@dataclass(eq=False)
class Ticket:
    """One item of work waiting for a slot."""

    owner: Hashable  # the call it is for
    priority: Priority
    seq: int = field(default_factory=lambda: next(_SEQUENCE))  # arrival order
    queued: bool = False
    queued_at: float = 0.0  # clock times, set by the runtime
    granted_at: float = 0.0


class FairQueue:
    """Tickets by class, and within a class by call in turn (see the module docstring)."""

    def __init__(self) -> None:
        self._classes: dict[Priority, OrderedDict[Hashable, deque[Ticket]]] = {p: OrderedDict() for p in Priority}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def waiting(self, priority: Priority) -> int:
        """Tickets of ``priority`` in the queue."""
        return sum(len(q) for q in self._classes[priority].values())

    def push(self, ticket: Ticket) -> None:
        if ticket.queued:
            raise ValueError("the ticket is already queued")
        # A call new to this class waits its turn at the back; within the call, arrival order (a
        # ticket moved up a class may be older than the call's work already there).
        line = self._classes[ticket.priority].setdefault(ticket.owner, deque())
        bisect.insort(line, ticket, key=attrgetter("seq"))
        ticket.queued = True
        self._len += 1

    def remove(self, ticket: Ticket) -> bool:
        """Take ``ticket`` out of the queue; False when it was not in it."""
        if not ticket.queued:
            return False
        owners = self._classes[ticket.priority]
        line = owners[ticket.owner]
        line.remove(ticket)
        if not line:
            del owners[ticket.owner]
        ticket.queued = False
        self._len -= 1
        return True

    def pop(self, *, up_to: Priority = Priority.PARTIAL) -> Ticket | None:
        """The next ticket of class ``up_to`` or more urgent, taken out of the queue; None when there is
        none."""
        for priority, owners in self._classes.items():
            if owners and priority <= up_to:
                owner, line = next(iter(owners.items()))
                ticket = line.popleft()
                if line:
                    owners.move_to_end(owner)
                else:
                    del owners[owner]
                ticket.queued = False
                self._len -= 1
                return ticket
        return None

    def raise_to(self, ticket: Ticket, priority: Priority) -> None:
        """Move ``ticket`` up to ``priority`` (never down); a ticket not queued just takes the class."""
        if priority >= ticket.priority:
            return
        if self.remove(ticket):
            ticket.priority = priority
            self.push(ticket)
        else:
            ticket.priority = priority


def cpu_cores() -> int:
    """The CPU cores this process may use (what "one per core" defaults count)."""
    return max(1, os.cpu_count() or 1)


@dataclass
class _Bucket:
    start: float = -math.inf
    cpu_s: float = 0.0  # the process's CPU time
    spare_s: float = 0.0  # slot time of work that only uses what is spare (partial recognitions)
    call_s: float = 0.0  # calls in progress x time
    waits: list[float] = field(default_factory=list)  # how long urgent engine work waited for a slot


class ProcessLoad:
    """The last ``LOAD_WINDOW_S`` of the process, in one-second buckets (fixed memory): whether one more
    call fits.

    What a call costs is measured, not assumed: the process's CPU time over call time, less the
    slot time of work that only uses what is spare (partial recognitions thin out first under
    load), so the projection follows the models, the machine, how much the callers talk and how
    much the app says. And how long urgent engine work (final recognitions, a reply's first
    chunk) waited for a slot: the latency the callers get now.
    """

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._buckets = [_Bucket() for _ in range(round(LOAD_WINDOW_S / LOAD_BUCKET_S))]
        self._calls = 0
        self._since = -math.inf  # calls have been ``_calls`` since then (integrated up to it)
        self._cpu: tuple[float, float] | None = None  # the last CPU reading: (clock, CPU seconds)

    def _bucket(self, now: float) -> _Bucket:
        start = math.floor(now / LOAD_BUCKET_S) * LOAD_BUCKET_S
        b = self._buckets[int(start / LOAD_BUCKET_S) % len(self._buckets)]
        if b.start != start:
            b.start, b.cpu_s, b.spare_s, b.call_s, b.waits = start, 0.0, 0.0, 0.0, []
        return b

    def _spread(self, since: float, now: float, attr: str, rate: float) -> None:
        """Add ``rate`` per second from ``since`` to ``now`` to the buckets it spans (within the window)."""
        t = max(since, now - LOAD_WINDOW_S)
        while t < now:
            b = self._bucket(t)
            end = min(now, b.start + LOAD_BUCKET_S)
            setattr(b, attr, getattr(b, attr) + rate * (end - t))
            t = end

    def calls(self, active: int, now: float) -> None:
        """The number of calls in progress changed to ``active``."""
        self._spread(self._since, now, "call_s", self._calls)
        self._since, self._calls = max(self._since, now), active

    def cpu(self, cpu_s: float, now: float) -> None:
        """The process's CPU time so far (``time.process_time``), read at ``now``; read it often."""
        if self._cpu is not None and now > self._cpu[0]:
            then, used = self._cpu
            self._spread(then, now, "cpu_s", max(0.0, cpu_s - used) / (now - then))
        self._cpu = (now, cpu_s)

    def waited(self, waited_s: float, now: float) -> None:
        """Urgent engine work waited ``waited_s`` for a slot."""
        b = self._bucket(now)
        if len(b.waits) < WAITS_PER_BUCKET:
            b.waits.append(waited_s)

    def spare(self, ran_s: float, now: float) -> None:
        """Work that only uses spare capacity held a slot for ``ran_s``."""
        self._bucket(now).spare_s += ran_s

    def window(self, now: float) -> _Bucket:
        """Totals over the window that ends at ``now``."""
        self.calls(self._calls, now)
        total = _Bucket(start=now - LOAD_WINDOW_S)
        for b in self._buckets:
            if now - LOAD_WINDOW_S - LOAD_BUCKET_S < b.start <= now:
                total.cpu_s += b.cpu_s
                total.spare_s += b.spare_s
                total.call_s += b.call_s
                total.waits += b.waits
        return total

    def per_call(self, now: float) -> float:
        """Cores one call has kept busy lately (CPU seconds per second, spare work left out)."""
        w = self.window(now)
        return max(0.0, w.cpu_s - w.spare_s) / w.call_s if w.call_s > 0 else 0.0

    def fits_another(self, active: int, now: float, *, max_load: float, max_wait_s: float) -> str | None:
        """Why one more call would not fit, or None when it does.

        It would not: when more than ``SLOW_SHARE`` of the window's urgent engine work (at least
        ``MIN_WAITS`` of it) waited longer than ``max_wait_s`` for a slot (callers already wait), or
        when ``active`` + 1 calls at what a call has cost lately would use more than ``max_load`` of
        the cores (judged once the window holds ``MIN_CALL_S`` of call time). A ``max_wait_s`` or
        ``max_load`` of 0 turns its test off.
        """
        w = self.window(now)
        slow = sum(1 for x in w.waits if x > max_wait_s)
        if max_wait_s > 0 and len(w.waits) >= MIN_WAITS and slow > SLOW_SHARE * len(w.waits):
            return f"{slow} of the last {len(w.waits)} urgent recognitions and syntheses waited over " \
                   f"{max_wait_s * 1000:.0f} ms for a slot"
        if max_load > 0 and w.call_s >= MIN_CALL_S:
            projected = (active + 1) * self.per_call(now) / self.cores
            if projected > max_load:
                return (f"{active + 1} calls would use {projected:.0%} of {self.cores} core(s) "
                        f"(at most {max_load:.0%})")
        return None
