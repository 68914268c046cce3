"""Reviewers' decisions, kept in ``DIR/review.csv`` (``case, decision, note, time, reviewer``).

One row per case: the latest decision wins. Every change rewrites the whole file under an
exclusive lock (two servers on one folder never lose each other's rows) into a temporary file
that is renamed into place, so a server killed at any moment leaves the previous or the new
table, never a torn one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.io.locks import FileLock

REVIEW_FILE = "review.csv"
COLUMNS = ("case", "decision", "note", "time", "reviewer")
DECISIONS = ("accept", "flag", "reject")
"""What a reviewer can decide (``clear`` removes a decision)."""


@dataclass(frozen=True)
class Decision:
    """One reviewer's decision on one case."""

    case: str
    decision: str
    note: str
    time: str
    reviewer: str


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class DecisionTable:
    """``folder/review.csv``: read it, change one case's decision."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / REVIEW_FILE

    def read(self) -> dict[str, Decision]:
        """Case → its decision (empty when nobody decided yet).

        Raises:
            InputError: the file exists but is not a review table.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        reader = csv.DictReader(io.StringIO(text))
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise InputError(f"{self.path}: not a review table (columns {reader.fieldnames}, expected "
                             f"{', '.join(COLUMNS)}); move it away")
        return {row["case"]: Decision(**{k: row[k] or "" for k in COLUMNS}) for row in reader}

    def decide(self, case: str, decision: str, *, note: str = "", reviewer: str = "") -> Decision | None:
        """Record ``decision`` (one of :data:`DECISIONS`, or ``clear``) for ``case``; returns it (None: cleared).

        Raises:
            InputError: an unknown decision, or a note on more than one line.
        """
        if decision not in (*DECISIONS, "clear"):
            raise InputError(f"decision must be one of {', '.join(DECISIONS)} or clear, got {decision!r}")
        note = " ".join(note.split())  # one line, whatever was typed
        made = None if decision == "clear" else Decision(case, decision, note[:2000], now(), reviewer)
        with self._locked():
            table = self.read()
            if made is None:
                table.pop(case, None)
            else:
                table[case] = made
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(asdict(entry) for entry in table.values())
            write_bytes_atomic(self.path, buffer.getvalue())
        return made

    def _locked(self) -> contextlib.AbstractContextManager[FileLock]:
        return FileLock(self.folder / ".review.lock").hold()  # acquiring makes the folder
