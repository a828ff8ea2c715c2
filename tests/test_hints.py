"""Recognition hints: joining them stays linear, and only what Whisper can read is passed on."""

from __future__ import annotations

from relay_bridge.engines.whisper import MAX_HINTS_CHARS, hint_prompt, join_hints


def test_join_hints_is_linear_in_many_distinct_phrases() -> None:
    # 60,000 distinct phrases (about 500 kB) took over a minute when each phrase was looked for in
    # the list of those kept before it; linear, milliseconds. A regression shows up as a hang.
    phrases = [f"w{i}" for i in range(60_000)]
    assert join_hints(", ".join(phrases)) == ", ".join(phrases)
    assert join_hints(", ".join(phrases), ", ".join(reversed(phrases))) == ", ".join(phrases)


def test_join_hints_keeps_first_seen_order_across_hint_sets() -> None:
    assert join_hints("b, a, b", " a ,c,, ", "c, d") == "b, a, c, d"


def test_hint_prompt_keeps_the_last_whole_phrases_that_fit() -> None:
    phrases = [f"phrase{i}" for i in range(2_000)]
    prompt = hint_prompt(", ".join(phrases))
    assert len(prompt) <= MAX_HINTS_CHARS + 1  # and the closing full stop
    assert prompt.endswith(", phrase1999.")
    kept = prompt[:-1].split(", ")
    assert kept == phrases[-len(kept):]  # whole phrases: Whisper keeps the end of its prompt
    assert len(", ".join(phrases[-len(kept) - 1:])) > MAX_HINTS_CHARS  # as many as fit


def test_hint_prompt_under_the_limit_is_unchanged() -> None:
    hints = ", ".join(["x" * 100] * 2 + [f"p{i}" for i in range(100)])
    assert hint_prompt(hints) == join_hints(hints) + "."


def test_hint_prompt_trims_one_huge_phrase() -> None:
    prompt = hint_prompt("y" * (10 * MAX_HINTS_CHARS))
    assert prompt == "y" * MAX_HINTS_CHARS + "."
