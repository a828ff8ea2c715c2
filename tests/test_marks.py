"""MarkLedger: what the caller heard, from Media Streams mark echoes."""

from __future__ import annotations

from typing import Any

import pytest

from relay_bridge.audio.telephony import SAMPLE_RATE_HZ
from relay_bridge.protocols.marks import EchoKind, Heard, MarkInfo, MarkLedger, fragment


def placed(ledger: MarkLedger, cycle: int, text: str, chunk: str, **kwargs: Any) -> MarkInfo:
    """A mark placed and sent, as the pacer sends it."""
    mark = ledger.place(cycle, text, chunk, **kwargs)
    ledger.mark_sent(mark.name)
    return mark


def cycle_with_chunks(
    ledger: MarkLedger, cycle: int, chunks: list[tuple[str, int]], *, final: bool = True
) -> list[MarkInfo]:
    """Place a cycle-start mark, then audio and a mark per chunk; the last mark closes the cycle."""
    marks = [placed(ledger, cycle, "", "")]
    text = ""
    for i, (chunk, samples) in enumerate(chunks):
        ledger.note_queued(cycle, samples)
        text += chunk
        marks.append(placed(ledger, cycle, text, chunk, final=final and i == len(chunks) - 1))
    return marks


def test_place_records_position_and_names() -> None:
    ledger = MarkLedger()
    start = placed(ledger, 1, "", "")
    assert (start.cycle, start.text, start.chunk, start.position, start.final) == (1, "", "", 0, False)
    ledger.note_queued(1, 8000)
    m = placed(ledger, 1, "Hello.", "Hello.", final=True)
    assert (m.position, m.text, m.chunk, m.final) == (8000, "Hello.", "Hello.", True)
    assert m.name != start.name
    assert ledger.pending
    assert ledger.queued == 8000
    assert ledger.cycle_queued(1) == 8000
    assert ledger.cycle_queued(2) == 0


def test_mark_names_unique_across_cycles() -> None:
    ledger = MarkLedger()
    names = [placed(ledger, c, "", "").name for c in (1, 1, 2, 3, 3)]
    assert len(set(names)) == len(names)


def test_positions_are_per_cycle() -> None:
    ledger = MarkLedger()
    ledger.note_queued(1, 1600)
    ledger.note_queued(2, 320)
    ledger.note_queued(1, 160)
    assert placed(ledger, 1, "a", "a").position == 1760
    assert placed(ledger, 2, "b", "b").position == 320
    assert ledger.queued == 2080


def test_echoes_in_order() -> None:
    ledger = MarkLedger()
    marks = cycle_with_chunks(ledger, 1, [("One. ", 4000), ("Two.", 4000)])
    for i, m in enumerate(marks):
        echo = ledger.echo(m.name, now=float(i))
        assert echo.kind is EchoKind.PLAYED
        assert echo.mark == m
    assert not ledger.pending


def test_echo_implies_earlier_marks_played() -> None:
    ledger = MarkLedger()
    a, b, c = cycle_with_chunks(ledger, 1, [("One. ", 4000), ("Two.", 4000)])
    echo = ledger.echo(b.name, now=1.0)
    assert echo.kind is EchoKind.PLAYED
    assert echo.mark == b
    assert ledger.pending  # c still pending
    # a was implied played; its late echo is not a fresh playback.
    assert ledger.echo(a.name, now=1.1).kind is EchoKind.UNKNOWN
    assert ledger.echo(c.name, now=2.0).kind is EchoKind.PLAYED
    assert not ledger.pending


def test_unknown_echo() -> None:
    ledger = MarkLedger()
    m = placed(ledger, 1, "", "")
    echo = ledger.echo("nonsense", now=0.0)
    assert echo.kind is EchoKind.UNKNOWN
    assert echo.mark is None
    assert ledger.pending  # an unknown echo does not consume pending marks
    assert ledger.echo(m.name, now=0.0).kind is EchoKind.PLAYED
    assert ledger.echo(m.name, now=0.0).kind is EchoKind.UNKNOWN  # echoed twice


def test_clear_turns_pending_marks_into_cleared_echoes() -> None:
    ledger = MarkLedger()
    a, b, c = cycle_with_chunks(ledger, 1, [("One. ", 4000), ("Two.", 4000)])
    assert ledger.echo(a.name, now=0.5).kind is EchoKind.PLAYED
    cleared = ledger.clear()
    assert cleared == [b, c]
    assert not ledger.pending
    # Twilio echoes every pending mark at once after a clear; none of them means "played".
    for m in (c, b):
        echo = ledger.echo(m.name, now=0.6)
        assert echo.kind is EchoKind.CLEARED
        assert echo.mark == m
    # Each cleared echo is consumed once.
    assert ledger.echo(b.name, now=0.7).kind is EchoKind.UNKNOWN


def test_cleared_echo_never_counts_as_heard() -> None:
    ledger = MarkLedger()
    a, b, _ = cycle_with_chunks(ledger, 1, [("One. ", 4000), ("Two.", 4000)])
    ledger.echo(a.name, now=10.0)
    before = ledger.heard(10.1)  # what the interrupt reports: read just before the clear
    assert (before.cycle, before.text, before.duration_ms) == (1, "", pytest.approx(100.0))
    ledger.clear()
    ledger.echo(b.name, now=10.2)  # cleared, not played
    # After the clear the caller hears nothing of that cycle, and the cleared echo changes nothing.
    assert ledger.heard(10.2) == Heard(cycle=None, text="", duration_ms=0.0)


def test_clear_with_nothing_pending() -> None:
    ledger = MarkLedger()
    assert ledger.clear() == []


def test_heard_nothing() -> None:
    ledger = MarkLedger()
    assert ledger.heard(5.0) == Heard(cycle=None, text="", duration_ms=0.0)
    cycle_with_chunks(ledger, 1, [("One.", 8000)])  # sent, nothing echoed yet
    assert ledger.heard(5.0) == Heard(cycle=None, text="", duration_ms=0.0)


def test_heard_last_played_mark_plus_elapsed() -> None:
    ledger = MarkLedger()
    start, one, _two = cycle_with_chunks(ledger, 1, [("One. ", 8000), ("Two.", 8000)])  # 1 s each
    ledger.echo(start.name, now=100.0)
    h = ledger.heard(100.25)
    assert h == Heard(cycle=1, text="", duration_ms=250.0)
    ledger.echo(one.name, now=101.0)
    assert ledger.heard(101.0) == Heard(cycle=1, text="One. ", duration_ms=1000.0)
    assert ledger.heard(101.4) == Heard(cycle=1, text="One. ", duration_ms=1400.0)


def test_heard_bounded_by_audio_sent_in_cycle() -> None:
    ledger = MarkLedger()
    start, one, _two = cycle_with_chunks(ledger, 1, [("One. ", 8000), ("Two.", 4000)])
    ledger.echo(one.name, now=50.0)
    # 12000 samples (1.5 s) sent in the cycle: however long ago the echo, no more than that was heard.
    assert ledger.heard(60.0).duration_ms == 1500.0
    # Audio of another cycle does not raise the bound.
    ledger.note_queued(2, 80000)
    assert ledger.heard(60.0).duration_ms == 1500.0
    assert start.position == 0


def test_heard_before_echo_time_is_not_negative() -> None:
    ledger = MarkLedger()
    _start, one, _ = cycle_with_chunks(ledger, 1, [("One. ", 8000), ("Two.", 8000)])
    ledger.echo(one.name, now=10.0)
    assert ledger.heard(9.0).duration_ms == 1000.0


def test_heard_duration_is_rounded_to_tenth_of_ms() -> None:
    ledger = MarkLedger()
    start = placed(ledger, 1, "", "")
    ledger.note_queued(1, 8000)
    ledger.echo(start.name, now=0.0)
    h = ledger.heard(1 / 3)
    assert h.duration_ms == 333.3


def test_after_final_mark_played_cycle_is_none() -> None:
    ledger = MarkLedger()
    marks = cycle_with_chunks(ledger, 1, [("One. ", 8000), ("Two.", 8000)])
    ledger.echo(marks[-1].name, now=3.0)
    assert marks[-1].final
    assert ledger.heard(3.5) == Heard(cycle=None, text="", duration_ms=0.0)
    assert not ledger.pending


def test_new_cycle_after_finished_one() -> None:
    ledger = MarkLedger()
    first = cycle_with_chunks(ledger, 1, [("Hi.", 8000)])
    ledger.echo(first[-1].name, now=1.0)
    second = cycle_with_chunks(ledger, 2, [("Again. ", 4000), ("More.", 4000)])
    ledger.echo(second[1].name, now=2.0)
    assert ledger.heard(2.1) == Heard(cycle=2, text="Again. ", duration_ms=600.0)


def test_heard_after_interrupted_cycle_does_not_leak_into_next_cycle() -> None:
    # Cycle 1 is barged in (its final mark is cleared, never played). Cycle 2 then starts; until any
    # of cycle 2's marks is echoed, the caller has heard nothing of the current cycle.
    ledger = MarkLedger()
    first = cycle_with_chunks(ledger, 1, [("One. ", 8000), ("Two.", 8000)])
    ledger.echo(first[1].name, now=10.0)
    ledger.clear()
    ledger.echo(first[2].name, now=10.2)  # cleared echo
    second = placed(ledger, 2, "", "")
    ledger.note_queued(2, 1600)
    assert ledger.pending
    heard = ledger.heard(20.0)
    assert heard.cycle != 1, heard
    assert heard.text == ""
    assert heard.duration_ms == 0.0
    # Once cycle 2's start mark is echoed, heard() follows cycle 2.
    ledger.echo(second.name, now=20.0)
    assert ledger.heard(20.1) == Heard(cycle=2, text="", duration_ms=100.0)


def test_sample_rate() -> None:
    assert SAMPLE_RATE_HZ == 8000


@pytest.mark.parametrize(("position", "expected"), [
    (0, ""),  # nothing of the chunk yet
    (100, ""),  # "Third" is 5 of 23 characters: its middle is at ~54 of 1000 samples
    (120, "Third"),
    (500, "Third sentence"),
    (800, "Third sentence is"),
    (1000, "Third sentence is here."),
    (5000, "Third sentence is here."),
])
def test_fragment_is_the_words_whose_middle_the_audio_reached(position: float, expected: str) -> None:
    assert fragment("Third sentence is here.", 0, 1000, position) == expected


def test_fragment_of_a_chunk_that_starts_later_in_the_cycle() -> None:
    ledger = MarkLedger()
    placed(ledger, 1, "", "")  # the cycle's start mark
    ledger.note_queued(1, 800)
    first = placed(ledger, 1, "One two.", "One two.")
    ledger.note_queued(1, 800)
    second = placed(ledger, 1, "One two. Three four.", "Three four.")
    assert (first.start, first.position, second.start, second.position) == (0, 800, 800, 1600)
    assert ledger.chunk_start(1) == 1600 and ledger.chunk_start(2) == 0
    assert fragment(second.chunk, second.start, second.position, 800 + 500) == "Three"
    ledger.echo(first.name, now=10.0)
    assert ledger.position(10.0 + 500 / 8000) == (1, 1300.0)


def test_only_a_sent_mark_can_be_echoed_and_queued_marks_are_dropped_by_a_clear() -> None:
    ledger = MarkLedger()
    sent = placed(ledger, 1, "", "")
    queued = ledger.place(1, "One.", "One.", final=True)
    assert ledger.echo(queued.name, now=0.0).kind is EchoKind.UNKNOWN  # not sent: a guessed name
    assert ledger.pending and ledger.unheard_sent
    assert ledger.clear() == [sent]
    assert not ledger.pending and not ledger.unheard_sent
    ledger.mark_sent(queued.name)  # it was on its way out when the clear dropped the queue
    assert ledger.echo(queued.name, now=0.1).kind is EchoKind.CLEARED
    assert ledger.echo(sent.name, now=0.1).kind is EchoKind.CLEARED


def test_a_queued_mark_counts_as_pending_but_not_as_sent() -> None:
    ledger = MarkLedger()
    ledger.place(1, "", "")
    assert ledger.pending and not ledger.unheard_sent
