"""Log lines under the journal carry their priority; elsewhere they carry a timestamp."""

from __future__ import annotations

import json
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


LOG_A_CALL = """
import logging
from relay_bridge import logs
from relay_bridge.call.record import CallLogger
logs.configure("INFO", form="json")
ids = {"call_sid": "CA1", "stream_sid": "MZ2"}
log = CallLogger(logging.getLogger("relay_bridge.call.call"), ids)
log.info("call started")
ids["session_id"] = "VX3"
log.info("turn %d: done", 1, extra={"data": {"turn": 1, "end_of_speech_to_prompt_ms": 412}})
logging.getLogger("relay_bridge.server").warning("a peer sent \\x1b[31mjunk\\n")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("a call failed")
"""


def test_json_logs_carry_the_calls_ids_and_data_as_fields(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    out = subprocess.run([sys.executable, "-c", LOG_A_CALL], capture_output=True, text=True, env=env, check=True,
                         timeout=60).stderr.splitlines()
    records = [json.loads(line) for line in out]  # one object per line, a traceback included
    assert len(records) == 4
    started, turn, junk, failed = records
    assert started["message"] == "call started" and started["level"] == "INFO"
    assert started["logger"] == "relay_bridge.call.call" and started["time"].endswith("+00:00")
    assert (started["call_sid"], started["stream_sid"]) == ("CA1", "MZ2") and "session_id" not in started
    assert turn["session_id"] == "VX3" and turn["turn"] == 1 and turn["end_of_speech_to_prompt_ms"] == 412
    assert junk["message"] == "a peer sent \x1b[31mjunk\n" and "call_sid" not in junk
    assert failed["exception"].startswith("Traceback") and failed["exception"].endswith("ValueError: boom")


def test_text_logs_put_the_calls_ids_first_escaped(tmp_path: Path) -> None:
    code = LOG_A_CALL.replace('form="json"', 'form="text"').replace('"CA1"', '"CA1" + chr(10) + "[forged]"')
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=60).stderr.splitlines()
    assert not any(line.startswith("[forged]") for line in out)  # a newline in an id cannot start a line
    assert out[0].endswith(r"relay_bridge.call.call: [CA1\n[forged] MZ2] call started")
    assert out[1].endswith(r"relay_bridge.call.call: [CA1\n[forged] MZ2] turn 1: done")


def test_a_peers_huge_ids_are_cut_on_every_line(tmp_path: Path) -> None:
    code = LOG_A_CALL.replace('"CA1"', '"CA" * 500_000')  # a megabyte of callSid
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=60).stderr.splitlines()
    records = [json.loads(line) for line in out]
    assert [r["call_sid"] for r in records if "call_sid" in r] == ["CA" * 32] * 3
