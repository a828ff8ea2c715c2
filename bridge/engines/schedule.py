"""The order engine work waits in: urgency first, then calls in turn.

Recognition is the scarce resource of a voice host: every call's utterances queue for the same few
decode slots. Work comes in three classes (``Priority``): a final recognition (the caller has
stopped and waits for the reply) goes before a speculative one (the caller has probably stopped)
which goes before a partial (the caller is still speaking). Within a class, calls take turns: the
call at the head of the class gets one item, then goes to the back if it has more, so one chatty
call cannot hold back another's work of the same class, and no call's partials can delay another's
final. Each call's own work stays in arrival order.

A queued item can move up a class (a partial that turns out to cover the whole utterance becomes
the final) and can leave the queue at any time (work that is no longer wanted). No clocks, no
threads: the runtime (``bridge.call.engines``) grants slots in the order ``pop`` gives.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import IntEnum
from operator import attrgetter


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

    def pop(self) -> Ticket | None:
        """The next ticket to run, taken out of the queue; None when the queue is empty."""
        for owners in self._classes.values():
            if owners:
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
