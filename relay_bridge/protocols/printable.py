"""Peer-supplied text made safe to write into a log line.

A ``callSid`` holding a newline, or a prompt holding an ANSI escape, would otherwise forge log lines
or rewrite a terminal. Control characters (C0, DEL, C1), the Unicode line and paragraph separators
and lone surrogates are written as escapes; everything else is left as it is, so ordinary text in
any script still reads naturally.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
MAX_LOGGED_CHARS = 200


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    if named is not None:
        return named
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character escaped (nothing else changes)."""
    return _UNSAFE.sub(_escape, text)


def printable(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """A peer's value for a log line: ``repr`` (which escapes every unprintable character), cut to ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")
