"""Real ``mrseg`` processes for tests: start one (``python -m mrseg``, or a driver script that wraps
the CLI), read its exit code, stdout and stderr, and what it left in an output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
