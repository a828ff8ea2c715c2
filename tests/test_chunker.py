"""TextChunker: streamed LLM tokens to speakable clauses and sentences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay_bridge.speech.chunker import MAX_MARK_RUN, TextChunker, chunk_text


def feed_all(tokens: list[str], chunker: TextChunker | None = None) -> list[str]:
    c = chunker or TextChunker()
    out: list[str] = []
    for t in tokens:
        out.extend(c.feed(t))
    out.extend(c.flush())
    return out


def by_char(text: str, **kw: int) -> list[str]:
    return feed_all(list(text), TextChunker(**kw))


def whole(text: str, **kw: int) -> list[str]:
    return feed_all([text], TextChunker(**kw))


@pytest.mark.parametrize(
    "text",
    [
        "It costs 3.5 dollars today",
        "Ask Dr. Smith about it",
        "Ask Mr. and Mrs. Jones",
        "Use e.g. this one",
        "Take i.e. the blue one",
        "Come at 5 p.m. sharp",
        "Come at 9 a.m. sharp",
        "Open https://x.io/a.b?c=1 now",
        "Open example.com/a.b today",
        "Mail bob.smith@example.co.uk today",
        "Ask J. Smith now",
        "Call J. R. R. Tolkien",
        "Version 1.2.3 is out",
        "We moved to the U.S. last year",
    ],
)
def test_does_not_split(text: str) -> None:
    # As the first chunk of a cycle (with the first-chunk word limit off)...
    assert whole(text, first_chunk_words=0) == [text]
    assert by_char(text, first_chunk_words=0) == [text]
    c = TextChunker(first_chunk_words=0)
    assert c.feed(text) == []
    assert c.pending == text
    # ...and as a later chunk, with the default settings.
    assert whole("Ok. " + text) == ["Ok.", " " + text]
    assert by_char("Ok. " + text + ". Bye") == ["Ok.", " " + text + ".", " Bye"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?", ["Hello there.", " How are you?"]),
        ("Hello there! How are you? Fine.", ["Hello there!", " How are you?", " Fine."]),
        ("It costs 3.5 dollars. Pay now.", ["It costs 3.5 dollars.", " Pay now."]),
        ("Ask Dr. Smith. He knows.", ["Ask Dr. Smith.", " He knows."]),
        ("So do I. Then we go.", ["So do I.", " Then we go."]),
        ('He said "stop." Then left.', ['He said "stop."', " Then left."]),
        ("Wait... what?! Really.", ["Wait...", " what?!", " Really."]),
        ("Wait\u2026 what.", ["Wait\u2026", " what."]),
        ("(Really.) Yes.", ["(Really.)", " Yes."]),
        ("Line one.\nLine two.", ["Line one.", "\nLine two."]),
    ],
)
def test_splits_sentences(text: str, expected: list[str]) -> None:
    assert whole(text) == expected
    assert by_char(text) == expected


def test_sentence_decided_only_by_next_character() -> None:
    c = TextChunker()
    assert c.feed("It costs 3.") == []
    assert c.feed("5 dollars.") == []
    assert c.feed(" Then") == ["It costs 3.5 dollars."]
    assert c.pending == " Then"
    assert c.flush() == [" Then"]


def test_split_tokens_from_docstring() -> None:
    assert feed_all(["Dr", ". Smith", " paid 3", ".5", ". Done"]) == ["Dr. Smith paid 3.5.", " Done"]


def test_first_chunk_may_end_at_clause() -> None:
    text = "Well, I think so, yes. And then, maybe, not."
    assert whole(text) == ["Well,", " I think so, yes.", " And then, maybe, not."]
    assert by_char(text) == ["Well,", " I think so, yes.", " And then, maybe, not."]


@pytest.mark.parametrize("mark", [",", ";", ":", "\u2014", "\u2013"])
def test_clause_marks(mark: str) -> None:
    assert whole(f"Sure{mark} here it is") == [f"Sure{mark}", " here it is"]


def test_first_chunk_ends_after_first_chunk_words() -> None:
    text = "one two three four five six seven. Eight nine ten eleven twelve thirteen."
    expected = ["one two three four", " five six seven.", " Eight nine ten eleven twelve thirteen."]
    assert TextChunker().first_chunk_words == 4
    assert whole(text) == expected
    assert by_char(text) == expected
    assert whole(text, first_chunk_words=3) == ["one two three", " four five six seven.",
                                                " Eight nine ten eleven twelve thirteen."]
    assert whole(text, first_chunk_words=0) == ["one two three four five six seven.",
                                                " Eight nine ten eleven twelve thirteen."]


def test_first_chunk_word_is_whole_only_once_a_space_follows() -> None:
    c = TextChunker(first_chunk_words=2)
    assert c.feed("Hello wor") == []
    assert c.feed("ld") == []
    assert c.feed(" and") == ["Hello world"]
    assert c.feed(" more words here and more") == []  # later chunks have no word limit
    assert c.flush() == [" and more words here and more"]
    # A new cycle: the word limit applies again.
    assert c.feed("Next one now") == ["Next one"]


def test_earliest_boundary_wins_in_first_chunk() -> None:
    assert whole("Hi, one two three four five six") == ["Hi,", " one two three four five six"]
    assert whole("one two three four, five") == ["one two three four,", " five"]
    assert whole("one two three four five, six") == ["one two three four", " five, six"]


def test_clause_mark_needs_following_whitespace() -> None:
    assert whole("It is 1,000 dollars") == ["It is 1,000 dollars"]
    assert whole("Time 10:30 now") == ["Time 10:30 now"]


def test_later_chunks_end_at_clause_only_after_clause_min_chars() -> None:
    c = TextChunker(clause_min_chars=20)
    assert c.feed("Yes, ") == ["Yes,"]
    # Under 20 characters: the comma does not end a chunk.
    assert c.feed("short one, more words") == []
    assert c.feed(". ") == [" short one, more words."]
    # At least 20 characters before the comma: it does.
    assert c.feed("this clause is long enough, and more") == [" this clause is long enough,"]
    assert c.flush() == [" and more"]


def test_clause_min_chars_counts_stripped_text() -> None:
    c = TextChunker(clause_min_chars=10)
    assert c.feed("Ok. ") == ["Ok."]
    assert c.feed("         abcdefghi, x") == []  # 9 characters after stripping
    c2 = TextChunker(clause_min_chars=10)
    assert c2.feed("Ok. ") == ["Ok."]
    assert c2.feed("         abcdefghij, x") == ["          abcdefghij,"]


def test_max_chars_cut_at_space_streamed() -> None:
    words = " ".join(["word"] * 40)
    chunks = by_char(words, max_chars=50)
    assert "".join(chunks) == words
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk) <= 50
    for chunk in chunks[1:]:
        assert chunk.startswith(" word")  # each cut was at a space, not inside a word
    assert by_char(words, max_chars=50) == whole(words, max_chars=50)


def test_max_chars_without_space_cuts_hard() -> None:
    text = "x" * 120
    assert whole(text, max_chars=50) == ["x" * 50, "x" * 50, "x" * 20]


def test_max_chars_bounds_chunks_however_the_text_arrives() -> None:
    # A long punctuation-free run followed by a sentence end: max_chars must still bound the chunk,
    # whether the text arrives as one token or character by character.
    text = " ".join(["word"] * 30) + " end. More here."
    streamed = by_char(text, max_chars=50)
    assert all(len(ch) <= 50 for ch in streamed)
    one_token = whole(text, max_chars=50)
    assert all(len(ch) <= 50 for ch in one_token), [len(ch) for ch in one_token]
    assert one_token == streamed


def test_max_chars_cut_never_loses_whitespace() -> None:
    # A max_chars cut must not fall on the leading whitespace of the buffer: that makes a blank chunk,
    # which is dropped, and the space with it.
    text = "Yes,  " + "x" * 30
    for chunks in (whole(text, max_chars=20), by_char(text, max_chars=20)):
        assert "".join(chunks) == text
        assert all(chunk.strip() for chunk in chunks)
        assert all(len(chunk) <= 20 for chunk in chunks)


def test_flush_returns_remainder_and_starts_new_cycle() -> None:
    c = TextChunker()
    assert c.feed("First, one. Then") == ["First,", " one."]
    assert c.flush() == [" Then"]
    assert c.pending == ""
    # A new cycle: the first chunk may again end at a clause mark.
    assert c.feed("Again, yes") == ["Again,"]
    assert c.flush() == [" yes"]


def test_flush_decides_pending_punctuation() -> None:
    c = TextChunker()
    assert c.feed("Hello there.") == []
    assert c.flush() == ["Hello there."]
    assert c.flush() == []


def test_flush_drops_whitespace_only_tail() -> None:
    c = TextChunker()
    assert c.feed("Hi there. ") == ["Hi there."]
    assert c.flush() == []


def test_reset_drops_text_and_starts_new_cycle() -> None:
    c = TextChunker()
    assert c.feed("Well, this is a long") == ["Well,"]
    c.reset()
    assert c.pending == ""
    assert c.flush() == []
    assert c.feed("Now, listen") == ["Now,"]  # the clause rule for a cycle's first chunk applies again


def test_whitespace_inside_tokens_preserved() -> None:
    tokens = ["Hello", " there", ".", "  How", " are\tyou", "?\n", "Fine ", " thanks", ",", "  bye"]
    c = TextChunker()
    out: list[str] = []
    for t in tokens:
        out.extend(c.feed(t))
    out.extend(c.flush())
    assert "".join(out) == "".join(tokens)
    assert out == ["Hello there.", "  How are\tyou?", "\nFine  thanks,  bye"]


def test_empty_tokens() -> None:
    c = TextChunker()
    assert c.feed("") == []
    assert c.flush() == []
    assert feed_all(["", "Hi.", "", " Bye", ""]) == ["Hi.", " Bye"]


# --- properties -------------------------------------------------------------------------------

PIECES = ["Hello", "there", "Dr.", "Smith", "3.5", "e.g.", "p.m.", "J.", "I.", "https://x.io/a.b?c=1",
          "bob@ex.com", "ok", "yes", "no", "and", "a", "word", "longerword", ",", ".", "?", "!", "...", ";",
          '"', ")", "\u2014", "\u2026"]
SEPARATORS = [" ", " ", " ", "", "\n", "  "]

texts = (
    st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), min_size=1, max_size=40)
    .map(lambda parts: "".join(p + s for p, s in parts).strip())
    .filter(bool)
)


def split(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(derandomize=True, max_examples=200, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_chunks_independent_of_token_split(text: str, cuts: list[int]) -> None:
    reference = whole(text)
    assert feed_all(split(text, cuts)) == reference
    assert "".join(reference) == text
    assert all(chunk.strip() for chunk in reference)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(0, 10_000), max_size=20), max_chars=st.integers(20, 80))
@example(text="Hello Hello Hello Hello , Hello", cuts=[], max_chars=20)
@example(text="\u2014  https://x.io/a.b?c=1", cuts=[], max_chars=20)
def test_chunks_independent_of_token_split_with_small_max_chars(
    text: str, cuts: list[int], max_chars: int
) -> None:
    reference = by_char(text, max_chars=max_chars, clause_min_chars=10)
    chunker = TextChunker(max_chars=max_chars, clause_min_chars=10)
    assert feed_all(split(text, cuts), chunker) == reference
    assert feed_all([text], TextChunker(max_chars=max_chars, clause_min_chars=10)) == reference
    assert "".join(reference) == text


# --- cost: app text must not stall the event loop ---------------------------------------------
# Each input below kept the event loop busy for minutes when a scan was quadratic: r"\S+\s" retried
# across a space-free token at every position, a run of dots rescanned to its end for every
# character, the buffer before each full stop copied for the abbreviation check. Linear, each test
# takes a fraction of a second. No timing is asserted: a regression shows up as a test that hangs.

LONG = 200_000


def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_long_token_without_whitespace_is_cut_in_linear_time() -> None:
    text = "x" * LONG
    expected = ["x" * 240] * (LONG // 240) + ["x" * (LONG % 240)]
    assert chunk_text(text) == expected
    c = TextChunker()
    assert c.feed(text) == expected[:-1]
    assert c.flush() == expected[-1:]
    assert feed_all(pieces(text, 7)) == expected


def test_long_run_of_marks_is_cut_in_linear_time() -> None:
    text = "Wow" + "." * LONG + " Bye."
    streamed = feed_all(pieces(text, 7))
    reference = chunk_text(text)
    assert streamed == reference
    assert "".join(reference) == text
    assert reference[-1] == " Bye."
    # A run of marks too long to end a sentence is cut at max_chars like any other text.
    assert all(len(chunk) <= 240 for chunk in reference)


def test_many_abbreviations_are_cut_in_linear_time() -> None:
    # Every full stop of the pending chunk used to be checked again for each new token, which a long
    # max_chars makes plain.
    text = "J. " * 20_000
    streamed = feed_all(pieces(text, 3), TextChunker(max_chars=2400))
    chunks = feed_all([text], TextChunker(max_chars=2400))
    assert streamed == chunks
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= 2400 for chunk in chunks)
    assert all(chunk.rstrip().endswith("J.") for chunk in chunks)  # initials end no sentence: cut at a space


def test_run_of_marks_keeps_the_pending_text_bounded() -> None:
    # Until a run of marks ends, whether it ends a sentence is undecided; only a bounded run waits.
    c = TextChunker()
    for _ in range(10_000):
        c.feed("!")
    assert len(c.pending) <= c.max_chars + MAX_MARK_RUN + 1
