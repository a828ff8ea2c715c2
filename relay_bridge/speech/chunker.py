"""Turns streamed LLM tokens into speakable chunks (clauses or sentences).

Tokens arrive in arbitrary pieces ("Dr", ". Smith", " paid 3", ".5"). A boundary is only decided
once the character after the punctuation is known, so "3." followed by "5" is never split, and
``.`` must be followed by whitespace to end a sentence, which also keeps URLs and e-mail addresses
("example.com/a.b") whole. Known abbreviations ("Dr.", "e.g.", "a.m.") and single initials do
not end a sentence.

The first chunk of a talk cycle may end at a clause mark (, ; : and dashes), or, when none has come,
after ``first_chunk_words`` whole words: handing the TTS a short first piece is what gets the first
audio out quickly (the synthesis time grows with the text, and a long first sentence also has to
wait for all its tokens). Later chunks end at sentences, or at a
clause mark once ``clause_min_chars`` have accumulated, and are cut at a space after
``max_chars`` so no chunk grows without bound. ``last: true`` flushes what is left.

Cost. The text comes from the app, so no input may stall the event loop: every operation is linear
in its input. A boundary is decided by a bounded look at the text: the first ``max_chars`` characters
of the pending chunk, plus at most ``MAX_MARK_RUN`` closing marks after a punctuation mark (a longer
run, "Wow" followed by a thousand dots, ends no sentence there, so the ``max_chars`` cut applies and
the pending text stays bounded). Cuts move an offset instead of copying the rest of the buffer, and a
scan that could not decide yet resumes where it stopped when more text comes, instead of rescanning
the chunk for every one-character token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ABBREVIATIONS = frozenset(
    (
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "a.m", "p.m",
        "approx", "dept", "est", "inc", "ltd", "co", "corp", "mt", "ft", "jan", "feb", "mar",
        "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k",
    )
)
_SENTENCE_END = ".!?…"
_CLAUSE_END = ",;:\u2014\u2013"  # comma, semicolon, colon, em and en dash
_CLOSERS = "\"')]}\u201d\u2019"  # closing quotes and brackets
# Closing marks after punctuation (`?!`, `..."`, `.)`) that may stand between it and the whitespace
# that ends the sentence. Real text has a handful; the bound keeps the look-ahead, and so the pending
# text, bounded.
MAX_MARK_RUN = 32
_MARK_RUN_RE = re.compile(f"[{re.escape(_CLOSERS + _SENTENCE_END)}]*")
# A word's last character and the whitespace that shows it is whole. Unlike r"\S+\s", which retries
# the whole run of non-space at every position of it, this is linear in the text.
_WORD_END_RE = re.compile(r"\S\s")
_NON_SPACE_RE = re.compile(r"\S")
# The word before a full stop: the letters and dots that end the text, from the first letter. The
# look-behind anchors the match at the start of that run, so a failed attempt costs the run once,
# instead of once per position in it (as r"[A-Za-z][A-Za-z.]*$" does).
_WORD_BEFORE_DOT_RE = re.compile(r"(?<![A-Za-z.])\.*([A-Za-z][A-Za-z.]*)$")
_WORD_ONLY_RE = re.compile(r"[A-Za-z.]*\n?")  # text that may lie wholly inside that word
# How far before a full stop its word is looked for first; abbreviations are short.
_WORD_WINDOW = 16


@dataclass
class TextChunker:
    clause_min_chars: int = 60
    max_chars: int = 240
    first_chunk_words: int = 4
    _buf: str = ""
    _emitted_in_cycle: int = field(default=0)
    # Positions of _buf before this one are known not to end the pending chunk.
    _scan_from: int = field(default=0)

    def feed(self, token: str) -> list[str]:
        """Add a token; return the chunks it completes."""
        self._buf += token
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the talk cycle: return what is left and start a new cycle."""
        chunks = self._drain(final=True)
        tail = self._buf
        self.reset()
        if tail.strip():
            chunks.append(tail)
        return chunks

    def reset(self) -> None:
        """Drop buffered text (barge-in)."""
        self._buf = ""
        self._emitted_in_cycle = 0
        self._scan_from = 0

    @property
    def pending(self) -> str:
        return self._buf

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        buf, start = self._buf, 0
        while (cut := self._find_cut(buf, start, final)) is not None:
            chunk, start = buf[start:cut], cut
            self._scan_from = cut
            if chunk.strip():
                out.append(chunk)
                self._emitted_in_cycle += 1
        # One copy of the rest, not one per chunk: a long token is cut into many chunks.
        self._buf = buf[start:]
        self._scan_from -= start
        return out

    def _find_cut(self, buf: str, start: int, final: bool) -> int | None:
        """Where the chunk that begins at ``start`` ends in ``buf``, or None if that is not decided yet.

        The earliest boundary wins, so the result does not depend on how the text was tokenised.
        """
        end = len(buf)
        limit = start + self.max_chars
        first = self._emitted_in_cycle == 0
        word_cut = self._first_words_cut(buf, start) if first else None
        for i in range(max(start, self._scan_from), min(end, limit)):
            if word_cut is not None and i >= word_cut:
                return word_cut
            ch = buf[i]
            if ch not in _SENTENCE_END and ch not in _CLAUSE_END:
                continue
            run = _MARK_RUN_RE.match(buf, i + 1, i + 2 + MAX_MARK_RUN)  # always matches, maybe empty
            j = run.end() if run else i + 1
            if j - i - 1 > MAX_MARK_RUN:
                continue
            if j >= end:
                if not final:
                    self._scan_from = i
                    return None  # the next character decides
                continue
            if not buf[j].isspace():
                continue
            if ch in _SENTENCE_END:
                if ch == "." and self._is_abbreviation(buf, start, i):
                    continue
                return j
            if first or len(buf[start:i].strip()) >= self.clause_min_chars:
                return j
        if word_cut is not None:
            return word_cut
        if end - start > self.max_chars:
            m = _NON_SPACE_RE.search(buf, start)
            lead = m.start() if m else end
            space = buf.rfind(" ", lead + 1, limit)
            return space if space > lead else min(max(limit, lead + 1), end)
        self._scan_from = end
        return None

    def _first_words_cut(self, buf: str, start: int) -> int | None:
        """End of the ``first_chunk_words``-th word, once a space after it shows the word is whole.

        Only a cut within ``max_chars`` counts, so only that much of the text is searched.
        """
        if self.first_chunk_words <= 0:
            return None
        ends = _WORD_END_RE.finditer(buf, start, start + self.max_chars + 1)
        for n, m in enumerate(ends, 1):
            if n == self.first_chunk_words:
                return m.end() - 1
        return None

    @staticmethod
    def _is_abbreviation(buf: str, start: int, dot: int) -> bool:
        """Whether the full stop at ``dot`` closes an abbreviation; the chunk's text begins at ``start``."""
        # Look just before the dot: a window that does not lie wholly inside the word holds all of it
        # (search looks behind its start position, so the word is seen to begin there). Only a word
        # longer than the window is looked for in the whole chunk.
        lo = max(start, dot - _WORD_WINDOW)
        if lo > start and not _WORD_ONLY_RE.fullmatch(buf, lo, dot):
            m = _WORD_BEFORE_DOT_RE.search(buf, lo, dot)
        else:
            m = _WORD_BEFORE_DOT_RE.search(buf[start:dot])
        if m is None:
            return False
        word = m.group(1).lower().rstrip(".")
        if word in ABBREVIATIONS:
            return True
        # A single initial ("J. Smith"), but not the pronoun "I" ending a sentence.
        return len(word) == 1 and word != "i" and m.group(1)[0].isupper()


def chunk_text(text: str) -> list[str]:
    """The chunks ``text`` is spoken in when it arrives whole, as one token with ``last: true``."""
    chunker = TextChunker()
    return chunker.feed(text) + chunker.flush()
