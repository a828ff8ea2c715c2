"""What caller speech over the agent's turned out to be: no words, an acknowledgement, the agent's own
echo, or words meant to interrupt. Pure text rules, no I/O.

Theory of operation. The conversation holds the agent when the caller starts speaking over it and
asks ``Judge.verdict`` about each recognition of that speech (partial ones while it goes on, then
the final one):

- ``NOTHING``: the recognition has no words (a cough, a knock, line noise).
- ``ECHO`` (echo filtering only): most of its words are words the agent was saying at that moment,
  so it is the agent's own voice coming back through the caller's speakerphone.
- ``BACKCHANNEL`` (``ignoreBackchannel`` only): it is made of the language's acknowledgements
  ("okay", "uh-huh", "thank you") and nothing else, at most ``MAX_BACKCHANNEL_WORDS`` words.
- ``UNDECIDED``: a partial recognition that could still grow into one ("thank" of "thank you").
- ``WORDS``: anything else; the caller means to interrupt.

Words are compared lowercased, without punctuation. Checking a text costs time linear in its words
(times the phrases of the list).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping

MAX_BACKCHANNEL_WORDS = 6  # "okay okay thank you so much" is still one; longer is a turn
ECHO_SHARE = 0.7  # of the recognised words found in what the agent was saying
RIGHT_QUOTE = "\u2019"  # as in "D\u2019accord": an apostrophe
WORD_RE = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")

# Short acknowledgements that do not take the turn, per primary language tag (ignoreBackchannel). A
# [[languages]] entry's ``backchannels`` replaces its language's list.
BACKCHANNELS: dict[str, tuple[str, ...]] = {
    "en": ("okay", "ok", "o k", "k", "yeah", "yes", "yep", "yup", "uh-huh", "uh huh", "mm-hmm", "mm hmm", "mhm",
           "mm", "hmm", "hm", "right", "alright", "all right", "sure", "got it", "i see", "thanks", "thank you",
           "thank you so much", "great", "cool", "nice", "good", "perfect", "exactly", "oh", "ah", "uh", "um",
           "wow", "really", "true", "indeed", "sounds good", "makes sense", "of course", "absolutely", "fine"),
    "es": ("vale", "sí", "si", "claro", "ajá", "aja", "ah", "eh", "mm", "bueno", "ya", "exacto", "gracias",
           "muchas gracias", "muy bien", "bien", "de acuerdo", "okay", "ok", "perfecto", "entiendo", "cierto",
           "por supuesto", "genial"),
    "fr": ("d'accord", "oui", "ouais", "ok", "okay", "merci", "merci beaucoup", "bien", "très bien", "parfait",
           "exactement", "ah", "euh", "hum", "mm", "je vois", "bien sûr", "voilà"),
    "de": ("okay", "ok", "ja", "genau", "klar", "danke", "danke schön", "gut", "sehr gut", "alles klar", "stimmt",
           "aha", "mhm", "hm", "ah", "na klar", "verstehe", "richtig", "super", "perfekt"),
    "pt": ("ok", "okay", "sim", "certo", "claro", "tá", "tá bom", "obrigado", "obrigada", "entendi", "beleza",
           "perfeito", "ah", "hum", "exato"),
    "it": ("ok", "okay", "sì", "si", "certo", "va bene", "grazie", "esatto", "capito", "perfetto", "ah", "mm",
           "giusto", "d'accordo"),
}


class Verdict(enum.Enum):
    NOTHING = "no words"
    ECHO = "echo of the agent"
    BACKCHANNEL = "acknowledgement"
    UNDECIDED = "undecided"
    WORDS = "words"


def words(text: str) -> list[str]:
    """The words of ``text``, lowercased, without punctuation ("Uh-huh." -> ["uh-huh"])."""
    return WORD_RE.findall(text.lower().replace(RIGHT_QUOTE, "'"))


def backchannels_for(language: str, configured: Mapping[str, Collection[str]] | None = None) -> tuple[str, ...]:
    """The acknowledgements of ``language``: the configured list of that code (or of its primary tag),
    else the built-in list of its primary tag; none for a language without one."""
    configured = configured or {}
    primary = language.lower().split("-")[0]
    for code, phrases in configured.items():
        if code.lower() == language.lower():
            return tuple(phrases)
    for code, phrases in configured.items():
        if code.lower().split("-")[0] == primary:
            return tuple(phrases)
    return BACKCHANNELS.get(primary, ())


class Judge:
    def __init__(self, backchannels: Iterable[str] = ()) -> None:
        self._phrases = {tuple(p) for p in (words(b) for b in backchannels) if p}
        self._prefixes = {p[:i] for p in self._phrases for i in range(1, len(p))}
        self._longest = max((len(p) for p in self._phrases), default=0)

    def verdict(self, text: str, *, partial: bool = False, agent_words: Collection[str] | None = None) -> Verdict:
        """What the recognition ``text`` of caller speech over the agent is. ``agent_words``: what the
        agent was saying then (echo filtering on), else None."""
        said = words(text)
        if not said:
            return Verdict.NOTHING
        if agent_words is not None and sum(w in agent_words for w in said) >= ECHO_SHARE * len(said):
            return Verdict.ECHO
        if len(said) <= MAX_BACKCHANNEL_WORDS and self._phrases:
            covered = self._covered(said, partial)
            if covered is not None:
                return covered
        return Verdict.WORDS

    def _covered(self, said: list[str], partial: bool) -> Verdict | None:
        """BACKCHANNEL if ``said`` is a run of acknowledgements; UNDECIDED if, being partial, its last
        one may be unfinished; None otherwise."""
        n = len(said)
        ends = [False] * (n + 1)  # ends[i]: said[:i] is a run of whole phrases
        ends[0] = True
        for i in range(n):
            if not ends[i]:
                continue
            for size in range(1, min(self._longest, n - i) + 1):
                if tuple(said[i : i + size]) in self._phrases:
                    ends[i + size] = True
        if ends[n]:
            return Verdict.BACKCHANNEL
        if partial and any(ends[i] and tuple(said[i:]) in self._prefixes for i in range(n)):
            return Verdict.UNDECIDED
        return None
