"""Logging handlers: only the command-line entry points configure them.

Every line is written through ``SafeFormatter``, which escapes control characters in the message,
so a peer's value (a ``callSid`` holding a newline, a prompt holding an ANSI escape) cannot forge
or garble log lines. Tracebacks keep their own line breaks.

What callers and apps say goes to the ``relay_bridge.transcripts`` logger. It is silenced below WARNING
unless the process logs at DEBUG or ``logging.log_transcripts`` is set: transcripts are personal
data, and an INFO log is often kept and shipped where they should not go.

Under systemd, when stderr is the journal (``$JOURNAL_STREAM`` names stderr's device and inode), each
line starts with its syslog priority in journald's ``<N>`` form, so ``journalctl -p warning`` filters
on it; every line of a traceback carries its record's priority. The journal dates lines itself.
"""

from __future__ import annotations

import logging
import os
import sys

from relay_bridge.protocols.printable import escape_controls

TRANSCRIPTS = "relay_bridge.transcripts"


# syslog priorities (sd-daemon(3)): err 3, warning 4, info 6, debug 7
PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    return next((p for level, p in PRIORITIES if levelno >= level), 7)


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JournalFormatter(SafeFormatter):
    """Each line prefixed with the record's priority, as journald reads it from a stream."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """Whether stderr is the stream systemd connected to the journal ($JOURNAL_STREAM is "dev:inode")."""
    dev, _, ino = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):  # unset or malformed, or stderr is no file
        return False


def configure(level: str = "INFO", *, log_transcripts: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():  # the journal dates lines and reads their priorities
        handler.setFormatter(JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(SafeFormatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("trio-websocket", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet = not log_transcripts and level.upper() != "DEBUG"
    logging.getLogger(TRANSCRIPTS).setLevel(logging.WARNING if quiet else logging.NOTSET)
