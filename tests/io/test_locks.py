"""File locks: exclusive between processes, released by death (SIGKILL), taken over then; hold() waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mrseg.io.locks import FileLock, pid_alive

HOLD = """
import sys, time
from pathlib import Path
from mrseg.io.locks import FileLock
lock = FileLock(Path(sys.argv[1]))
print("held" if lock.acquire() else "busy", flush=True)
time.sleep(60)
"""


def hold_in_another_process(path: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_lock_is_exclusive_and_names_its_owner(tmp_path):
    path = tmp_path / "locks" / "a_seg.lock"
    holder = hold_in_another_process(path)
    try:
        lock = FileLock(path)
        assert not lock.acquire() and not lock.held
        owner = lock.owner()
        assert owner is not None and owner.pid == holder.pid and owner.host
        assert f"pid {holder.pid}" in owner.describe()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    path = tmp_path / "a_seg.lock"
    holder = hold_in_another_process(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert path.exists() and not pid_alive(holder.pid)  # the file stays; the kernel dropped the lock
    lock = FileLock(path)
    assert lock.acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def test_release_lets_the_next_one_in_and_removes_the_file(tmp_path):
    path = tmp_path / "x.lock"
    with FileLock(path) as first:
        assert first.acquire()
        assert not FileLock(path).acquire()
    assert not path.exists()
    second = FileLock(path)
    assert second.acquire()
    second.release()


def test_hold_waits_for_a_holder_that_dies(tmp_path):
    path = tmp_path / ".review.lock"
    holder = hold_in_another_process(path)
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(0.6); os.kill({holder.pid}, 9)"])
    started = time.monotonic()
    try:
        with FileLock(path).hold() as lock:
            assert lock.held and json.loads(path.read_text())["pid"] == os.getpid()
            assert time.monotonic() - started > 0.4  # it waited for the holder's death
        assert not lock.held and not path.exists()
    finally:
        holder.kill()
        holder.wait()
        killer.wait()


def test_pid_alive():
    assert pid_alive(os.getpid())
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    time.sleep(0.05)
    assert not pid_alive(int(done.stdout))
    assert not pid_alive(0)
