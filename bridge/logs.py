"""Logging handlers: only the command-line entry points configure them."""

from __future__ import annotations

import logging
import os
import sys


def configure(level: str = "INFO") -> None:
    # Under systemd the journal adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("trio-websocket", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
