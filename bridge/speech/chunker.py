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
_WORD_RE = re.compile(r"\S+\s")


@dataclass
class TextChunker:
    clause_min_chars: int = 60
    max_chars: int = 240
    first_chunk_words: int = 4
    _buf: str = ""
    _emitted_in_cycle: int = field(default=0)

    def feed(self, token: str) -> list[str]:
        """Add a token; return the chunks it completes."""
        self._buf += token
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the talk cycle: return what is left and start a new cycle."""
        chunks = self._drain(final=True)
        tail = self._buf
        self._buf = ""
        if tail.strip():
            chunks.append(tail)
        self._emitted_in_cycle = 0
        return chunks

    def reset(self) -> None:
        """Drop buffered text (barge-in)."""
        self._buf = ""
        self._emitted_in_cycle = 0

    @property
    def pending(self) -> str:
        return self._buf

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = self._find_cut(final)
            if cut is None:
                break
            chunk, self._buf = self._buf[:cut], self._buf[cut:]
            if chunk.strip():
                out.append(chunk)
                self._emitted_in_cycle += 1
        return out

    def _find_cut(self, final: bool) -> int | None:
        """Where the next chunk ends in the buffer, or None if that is not decided yet.

        The earliest boundary wins, so the result does not depend on how the text was tokenised.
        """
        buf = self._buf
        first = self._emitted_in_cycle == 0
        word_cut = self._first_words_cut(buf) if first else None
        if word_cut is not None and word_cut > self.max_chars:
            word_cut = None
        for i, ch in enumerate(buf):
            if i >= self.max_chars:
                break
            if word_cut is not None and i >= word_cut:
                return word_cut
            if ch not in _SENTENCE_END and ch not in _CLAUSE_END:
                continue
            j = i + 1
            while j < len(buf) and (buf[j] in _CLOSERS or buf[j] in _SENTENCE_END):
                j += 1
            if j >= len(buf):
                if not final:
                    return None  # the next character decides
                continue
            if not buf[j].isspace():
                continue
            if ch in _SENTENCE_END:
                if ch == "." and self._is_abbreviation(buf, i):
                    continue
                return j
            if first or len(buf[:i].strip()) >= self.clause_min_chars:
                return j
        if word_cut is not None:
            return word_cut
        if len(buf) > self.max_chars:
            lead = len(buf) - len(buf.lstrip())
            space = buf.rfind(" ", lead + 1, self.max_chars)
            return space if space > lead else max(self.max_chars, lead + 1)
        return None

    def _first_words_cut(self, buf: str) -> int | None:
        """End of the ``first_chunk_words``-th word, once a space after it shows the word is whole."""
        if self.first_chunk_words <= 0:
            return None
        words = _WORD_RE.finditer(buf)
        for n, m in enumerate(words, 1):
            if n == self.first_chunk_words:
                return m.end() - 1
        return None

    @staticmethod
    def _is_abbreviation(buf: str, dot: int) -> bool:
        m = re.search(r"([A-Za-z][A-Za-z.]*)$", buf[:dot])
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
