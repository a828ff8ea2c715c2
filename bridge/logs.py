"""Logging handlers: only the command-line entry points configure them.

Every line is written through ``SafeFormatter``, which escapes control characters in the message,
so a peer's value (a ``callSid`` holding a newline, a prompt holding an ANSI escape) cannot forge
or garble log lines. Tracebacks keep their own line breaks.

What callers and apps say goes to the ``bridge.transcripts`` logger. It is silenced below WARNING
unless the process logs at DEBUG or ``logging.log_transcripts`` is set: transcripts are personal
data, and an INFO log is often kept and shipped where they should not go.
"""

from __future__ import annotations

import logging
import os
import sys

from bridge.protocols.printable import escape_controls

TRANSCRIPTS = "bridge.transcripts"


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure(level: str = "INFO", *, log_transcripts: bool = False) -> None:
    # Under systemd the journal adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("trio-websocket", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet = not log_transcripts and level.upper() != "DEBUG"
    logging.getLogger(TRANSCRIPTS).setLevel(logging.WARNING if quiet else logging.NOTSET)
