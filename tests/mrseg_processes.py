"""Real ``mrseg`` processes for tests: start one (``python -m mrseg``, or a driver script that wraps
the CLI), read its exit code, stdout and stderr, what it left in an output folder, and the attempt
events its workers log; wait for a condition while it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

KILL_AT = Path(__file__).with_name("kill_at.py")


def mrseg_process(*args: str, env: dict[str, str] | None = None, driver: Path | None = None,
                  **popen: object) -> subprocess.Popen:
    """Start ``mrseg ARGS`` as a real process (through ``driver``, a script that wraps the CLI, if given)."""
    command = [sys.executable, str(driver)] if driver else [sys.executable, "-m", "mrseg"]
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **popen)  # type: ignore[call-overload]


def run_mrseg(*args: str, env: dict[str, str] | None = None, driver: Path | None = None,
              timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    process = mrseg_process(*args, env=env, driver=driver, cwd=cwd)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_records(out: Path) -> list[dict]:
    """Every run record in ``out``, oldest first."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("mrseg_run_*.json"), key=lambda p: p.stat().st_mtime)]


def hidden_items(out: Path) -> list[Path]:
    """Anything hidden left in ``out`` or below it (staging, locks, temporary files)."""
    return sorted(p for p in out.rglob(".*"))


def attempt_events(path: Path) -> list[dict]:
    """The events in a cohort's attempt log (``cohort_attempts.jsonl``), oldest first; none while it
    does not exist, and a last line still being written is left out."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def wait_for(condition, timeout: float = 120.0, what: str = "condition", every: float = 0.05) -> None:
    """Poll ``condition()`` every ``every`` seconds until it is true; fail the test after ``timeout``
    seconds. A costly condition (a folder walk) deserves a longer interval on 2 cores."""
    limit = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > limit:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def gone(pid: int) -> bool:
    """Whether no process has the id ``pid`` any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
