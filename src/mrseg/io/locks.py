"""File locks, so two processes never work on the same case, project or table at once.

Cases of an output folder, an annotation project's state and a review table each have one.
A case's lock is a file ``OUTDIR/.mrseg/locks/<name>_<postfix>.lock`` holding its owner's pid, host and
start time, with an exclusive ``flock`` held on it while the case runs. The kernel drops the
``flock`` when the owner dies, however it dies (``kill -9`` included), so a lock left by a dead
process is simply taken over: no guessing from pids or ages. On file systems where ``flock`` is
not available the pid and host in the file decide (a lock of this host whose pid is gone is stale).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock, as written in its file."""

    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    """An exclusive lock held through a file (one case, one project, one table).

    Example:
        >>> lock = FileLock(Path("out/.mrseg/locks/scan_seg.lock"))  # doctest: +SKIP
        >>> if lock.acquire():  # doctest: +SKIP
        ...     try: ...
        ...     finally: lock.release()
        >>> with FileLock(Path("project/.lock")).hold():  # doctest: +SKIP
        ...     ...  # waits for the holder, then has the lock to itself
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            return self._acquire_by_pid()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # another run removed the empty locks folder just now
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            # The holder before us may have unlinked the file between our open and our flock:
            # then we hold a lock on a file nobody else can see, and must start over.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, _owner_json().encode("utf-8"))
        self._fd = fd
        return True

    @contextlib.contextmanager
    def hold(self, *, poll_s: float = 0.05) -> Iterator[FileLock]:
        """Wait until the lock is free, hold it for the block, then give it up."""
        while not self.acquire():
            time.sleep(poll_s)
        try:
            yield self
        finally:
            self.release()

    def release(self) -> None:
        """Give the lock up and remove its file."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def owner(self) -> LockOwner | None:
        """Who holds the lock now (None when nobody or unknown)."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return LockOwner(int(data["pid"]), str(data["host"]), str(data["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _acquire_by_pid(self) -> bool:  # pragma: no cover - Windows
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner is not None and (owner.host != socket.gethostname() or pid_alive(owner.pid)):
                    return False
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, _owner_json().encode("utf-8"))
            self._fd = fd
            return True
        return False

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _owner_json() -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})


__all__ = ["FileLock", "LockOwner", "pid_alive"]
