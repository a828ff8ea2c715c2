"""Log lines under the journal carry their priority; elsewhere they carry a timestamp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LOG_SOME = """
import logging
from relay_bridge import logs
logs.configure("DEBUG")
log = logging.getLogger("bridge.test")
log.debug("fine detail")
log.info("a call started")
log.warning("a peer sent junk")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("a call failed")
"""


def log_lines(tmp_path: Path, journal: str | None) -> list[str]:
    """What the snippet writes to stderr (a file), with $JOURNAL_STREAM naming that file or something else."""
    err = tmp_path / "stderr"
    with err.open("wb") as f:
        st = os.fstat(f.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal is not None:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}" if journal == "stderr" else journal
        subprocess.run([sys.executable, "-c", LOG_SOME], stderr=f, env=env, check=True, timeout=60)
    return err.read_text().splitlines()


def test_under_the_journal_every_line_carries_its_priority(tmp_path: Path) -> None:
    lines = log_lines(tmp_path, "stderr")
    assert lines[:3] == ["<7>DEBUG bridge.test: fine detail", "<6>INFO bridge.test: a call started",
                         "<4>WARNING bridge.test: a peer sent junk"]
    assert lines[3] == "<3>ERROR bridge.test: a call failed"
    traceback = lines[4:]
    assert traceback and all(line.startswith("<3>") for line in traceback)
    assert traceback[-1] == "<3>ValueError: boom"


@pytest.mark.parametrize("journal", [None, "1:2", "junk"])
def test_elsewhere_lines_are_dated_and_have_no_priority(tmp_path: Path, journal: str | None) -> None:
    lines = log_lines(tmp_path, journal)  # no journal, or the journal is some other stream (a parent's)
    assert not any(line.startswith("<") for line in lines)
    assert lines[1].endswith("INFO    bridge.test: a call started") and lines[1][2] == ":"
