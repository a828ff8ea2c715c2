"""Logging handlers: only the command-line entry points configure them.

Every line is written through ``SafeFormatter``, which escapes control characters in the message,
so a peer's value (a ``callSid`` holding a newline, a prompt holding an ANSI escape) cannot forge
or garble log lines. Tracebacks keep their own line breaks.

What callers and apps say goes to the ``relay_bridge.transcripts`` logger. It is silenced below WARNING
unless the process logs at DEBUG or ``logging.log_transcripts`` is set: transcripts are personal
data, and an INFO log is often kept and shipped where they should not go.

``logging.format = "json"`` writes one JSON object per line instead: ``time`` (UTC, ISO 8601),
``level``, ``logger``, ``message``, the call's ``call_sid``, ``stream_sid`` and ``session_id`` on a
call's lines, the record's own ``data`` fields (a turn's latencies, a call's summary) and
``exception`` with a traceback. Text lines start with the call's ids in brackets instead.

Under systemd, when stderr is the journal (``$JOURNAL_STREAM`` names stderr's device and inode), each
line starts with its syslog priority in journald's ``<N>`` form, so ``journalctl -p warning`` filters
on it; every line of a traceback carries its record's priority. The journal dates lines itself.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from relay_bridge.protocols.printable import escape_controls

TRANSCRIPTS = "relay_bridge.transcripts"


# syslog priorities (sd-daemon(3)): err 3, warning 4, info 6, debug 7
PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    return next((p for level, p in PRIORITIES if levelno >= level), 7)


CALL_FIELDS = ("call_sid", "stream_sid", "session_id")  # set on a call's records (call.record.CallLogger)


class SafeFormatter(logging.Formatter):
    """Text lines: control characters escaped, and a call's ids in brackets before the message."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = escape_controls(record.message)
        if hasattr(record, "call_sid"):
            ids = (escape_controls(str(getattr(record, k, "") or "-")) for k in CALL_FIELDS[:2])
            message = f"[{' '.join(ids)}] {message}"
        record.message = message
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring); ``json`` escapes control characters."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in CALL_FIELDS:
            if getattr(record, key, None):
                obj[key] = str(getattr(record, key))
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            obj.update({k: v for k, v in data.items() if k not in obj})
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


class JournalFormatter(logging.Formatter):
    """Each line of another formatter's output prefixed with the record's priority, as journald reads it
    from a stream."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """Whether stderr is the stream systemd connected to the journal ($JOURNAL_STREAM is "dev:inode")."""
    dev, _, ino = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):  # unset or malformed, or stderr is no file
        return False


def formatter(form: str = "text", *, journal: bool = False) -> logging.Formatter:
    """The formatter of ``logging.format`` ``form``, for stderr that is the journal's stream or not."""
    if form == "json":
        return JournalFormatter(JsonFormatter()) if journal else JsonFormatter()
    if journal:  # the journal dates lines and reads their priorities
        return JournalFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    return SafeFormatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")


def configure(level: str = "INFO", *, log_transcripts: bool = False, form: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(form, journal=stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("trio-websocket", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet = not log_transcripts and level.upper() != "DEBUG"
    logging.getLogger(TRANSCRIPTS).setLevel(logging.WARNING if quiet else logging.NOTSET)
