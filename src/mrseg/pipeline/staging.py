"""Complete-or-absent commits: a case's outputs appear together, with their record last.

A case writes every output into its staging folder (``OUTDIR/.mrseg/staging/NAME_P/``, files
under their final names), then its record. Only then are they moved into ``OUTDIR``, outputs
first and the record last. The record's presence in a staging folder therefore means "staging
was complete": a process killed during the moves leaves a staging folder that the next run rolls
forward (finishes the moves); one killed before the record was staged leaves a folder the next
run deletes. Whoever holds the case's lock (:mod:`mrseg.io.locks`) is the only writer, so
anything in that case's staging folder belongs to a dead run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def commit(staging: Path, out_dir: Path, record_name: str) -> None:
    """Move everything in ``staging`` into ``out_dir``, ``record_name`` last, then remove ``staging``.

    A folder output replaces an existing folder of that name (removed first; a crash in between
    is rolled forward by :func:`recover`).
    """
    items = sorted(p for p in staging.iterdir() if p.name != record_name)
    for item in items:
        target = out_dir / item.name
        if item.is_dir() and target.is_dir():
            shutil.rmtree(target)
        elif item.is_dir() and target.exists():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    record = staging / record_name
    if record.exists():
        os.replace(record, out_dir / record_name)
    _fsync_folder(out_dir)
    shutil.rmtree(staging, ignore_errors=True)


def recover(staging: Path, out_dir: Path, record_name: str) -> str | None:
    """Deal with what a dead run left in ``staging``; call only while holding the case's lock.

    Returns:
        ``"rolled forward"`` (staging was complete: its outputs and record are now in place),
        ``"removed"`` (staging was incomplete: deleted), or None (nothing there).
    """
    if not staging.exists():
        return None
    if (staging / record_name).is_file():
        commit(staging, out_dir, record_name)
        log.info("%s: finished the commit a stopped run began", out_dir / record_name)
        return "rolled forward"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: removed the half-written outputs of a stopped run", staging)
    return "removed"


def new_staging(staging: Path) -> Path:
    """An empty staging folder (what a dead run left there was dealt with by :func:`recover`)."""
    if staging.exists():
        shutil.rmtree(staging)
    for _ in range(5):  # another run may remove the empty parent folders at the same moment
        try:
            staging.mkdir(parents=True)
            return staging
        except FileNotFoundError:
            continue
    staging.mkdir(parents=True)
    return staging


def remove_empty_work_folder(work_dir: Path) -> None:
    """Remove ``OUTDIR/.mrseg`` when no staging folder or lock is left in it (another run's are kept)."""
    for sub in ("staging", "locks"):
        try:
            (work_dir / sub).rmdir()
        except OSError:
            pass
    try:
        work_dir.rmdir()
    except OSError:
        pass


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a power cut after the run cannot undo them)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without folder handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


__all__ = ["commit", "new_staging", "recover", "remove_empty_work_folder"]
