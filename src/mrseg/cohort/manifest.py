"""The cohort's state on disk: one manifest row per case, and a log of every attempt.

- ``OUTDIR/cohort_manifest.csv`` (:class:`Manifest`): one row per case with its state (``done``,
  ``failed``, ``pending``, ``running``), the reason of a failure, the number of attempts, seconds,
  worker and output. The driver rewrites it atomically as results arrive; a reader never sees a
  half-written table.
- ``OUTDIR/cohort_attempts.jsonl`` (:class:`AttemptLog`): workers append a ``start`` line when
  they begin a case and an ``end`` line when it is committed or failed, one ``write`` each. It
  survives the driver: a rerun, ``cohort status`` and the manifest's ``attempts`` column read it.

Whether a case is done is decided by its case record (:mod:`mrseg.report.records`), which the case
pipeline writes last: the manifest is a view that a rerun rebuilds, never the only copy of a fact.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator

from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.pipeline import CaseSpec
from mrseg.report.decisions import DecisionTable

MANIFEST_FILE = "cohort_manifest.csv"
ATTEMPTS_FILE = "cohort_attempts.jsonl"
PAST = {"accept": "accepted", "flag": "flagged", "reject": "rejected"}
STATES = ("done", "failed", "pending", "running")
COLUMNS = ("case", "input", "status", "error", "attempts", "seconds", "worker", "output")


@dataclass
class ManifestRow:
    """One case of the cohort (the columns of ``cohort_manifest.csv``)."""

    case: str
    input: str
    status: str = "pending"
    error: str = ""
    attempts: int = 0
    seconds: float | None = None
    worker: str = ""
    output: str = ""

    def spec(self) -> CaseSpec:
        return CaseSpec(Path(self.input), self.case)


class Manifest:
    """Every case of a cohort in the order they were added, read from and written to ``OUTDIR``."""

    def __init__(self, out_dir: Path, rows: Iterable[ManifestRow] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.rows: dict[str, ManifestRow] = {row.case: row for row in rows}

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_FILE

    @classmethod
    def read(cls, out_dir: str | os.PathLike[str]) -> Manifest:
        """The manifest in ``out_dir`` (empty when there is none).

        Raises:
            InputError: the file exists but is not a cohort manifest.
        """
        path = Path(out_dir) / MANIFEST_FILE
        if not path.is_file():
            return cls(Path(out_dir))
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise InputError(f"{path}: not a cohort manifest (columns {reader.fieldnames}); move it away or "
                                 "choose another -o")
            rows = [ManifestRow(
                case=r["case"], input=r["input"], status=r["status"] if r["status"] in STATES else "pending",
                error=r["error"], attempts=int(r["attempts"] or 0),
                seconds=float(r["seconds"]) if r["seconds"] else None, worker=r["worker"], output=r["output"],
            ) for r in reader]
        return cls(Path(out_dir), rows)

    def add(self, cases: Iterable[CaseSpec]) -> list[str]:
        """Add the cases not yet in the cohort (as ``pending``); returns their names.

        Raises:
            InputError: a case has the name of a cohort case made from another input.
        """
        added = []
        for case in cases:
            row = self.rows.get(case.name)
            if row is None:
                self.rows[case.name] = ManifestRow(case.name, str(case.path))
                added.append(case.name)
            elif Path(row.input).resolve() != case.path.resolve():
                raise InputError(f"{case.path}: the cohort already has a case {case.name} from {row.input}; rename "
                                 "one of them, or run the new one into another folder")
        return added

    def counts(self) -> dict[str, int]:
        return {state: sum(row.status == state for row in self.rows.values()) for state in STATES}

    def with_status(self, *states: str) -> list[ManifestRow]:
        return [row for row in self.rows.values() if row.status in states]

    def write(self) -> Path:
        """Rewrite the manifest atomically."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows.values():
            writer.writerow([row.case, row.input, row.status, row.error, row.attempts,
                             "" if row.seconds is None else f"{row.seconds:.2f}", row.worker, row.output])
        return write_bytes_atomic(self.path, buffer.getvalue())


@dataclass
class Attempt:
    """One try at one case by one worker: started, and finished unless the worker died."""

    id: str
    case: str
    worker: str
    host: str
    pid: int
    started: float
    finished: float | None = None
    status: str | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class AttemptLog:
    """``OUTDIR/cohort_attempts.jsonl``, read incrementally: :meth:`update` reads only new lines."""

    out_dir: Path
    by_case: dict[str, list[Attempt]] = field(default_factory=dict)
    _offset: int = 0
    _by_id: dict[str, Attempt] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.out_dir / ATTEMPTS_FILE

    def update(self) -> list[Attempt]:
        """Read the lines appended since the last call; returns the attempts they touched."""
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1  # a line being appended right now is read next time
        self._offset += complete
        touched = []
        for line in data[:complete].splitlines():
            if not line.strip():
                continue
            try:
                attempt = self._apply(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                continue  # a line torn by a crash mid-write proves nothing
            if attempt is not None:
                touched.append(attempt)
        return touched

    def _apply(self, event: dict) -> Attempt | None:
        if event.get("event") == "start":
            known = {f.name for f in fields(Attempt)}
            attempt = Attempt(**{k: v for k, v in event.items() if k in known})
            self._by_id[attempt.id] = attempt
            self.by_case.setdefault(attempt.case, []).append(attempt)
            return attempt
        ended = self._by_id.get(str(event.get("id")))
        if event.get("event") == "end" and ended is not None:
            ended.finished = event.get("finished")
            ended.status = event.get("status")
            ended.seconds = event.get("seconds")
            ended.error = event.get("error")
            return ended
        return None

    def attempts(self, case: str) -> list[Attempt]:
        return self.by_case.get(case, [])

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self._by_id.values())


def append_event(out_dir: Path, event: dict) -> None:
    """Append one event line to the attempts log with a single ``write`` on an ``O_APPEND``
    descriptor, so lines of concurrent workers never interleave. The line starts with a newline
    too: a line left torn by a crash mid-write never glues onto the next event."""
    line = ("\n" + json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(Path(out_dir) / ATTEMPTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CohortSummary:
    """Where a cohort stands: counts by state, failures with reasons, throughput and ETA."""

    counts: dict[str, int]
    failures: list[tuple[str, str]]
    cases_per_minute: float | None
    eta_seconds: float | None
    running: list[tuple[str, str]]
    reviewed: list[tuple[str, str, str]] = field(default_factory=list)
    """Reviewers' decisions on the cohort's cases (``review.csv`` of ``mrseg review``): case, decision, note."""

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        out = [f"{total} case(s): " + ", ".join(f"{self.counts[s]} {s}" for s in STATES)]
        if self.cases_per_minute is not None:
            eta = f", about {_duration(self.eta_seconds)} left" if self.eta_seconds else ""
            out.append(f"throughput {self.cases_per_minute:.2f} cases/min{eta}")
        for case, worker in self.running:
            out.append(f"running  {case} on {worker}")
        for case, reason in self.failures:
            out.append(f"failed   {case}: {reason}")
        if self.reviewed:
            made = [d for _, d, _ in self.reviewed]
            out.append(f"review: {len(made)} of {total} case(s) decided: " + ", ".join(
                f"{made.count(d)} {d}" for d in ("accept", "flag", "reject")) + " (review.csv)")
            for case, decision, note in self.reviewed:
                if decision != "accept":
                    out.append(f"{PAST[decision]:<8} {case}" + (f": {note}" if note else ""))
        return out


def summarize(manifest: Manifest, log: AttemptLog, *, window: int = 200) -> CohortSummary:
    """Counts, failures and, from the last ``window`` finished attempts, throughput and ETA."""
    finished = sorted((a for a in log if a.finished is not None and a.status not in (None, "failed")),
                      key=lambda a: a.finished or 0.0)[-window:]
    rate = None
    if len(finished) >= 2:
        first_start = min(a.started for a in finished)
        span = (finished[-1].finished or 0.0) - first_start
        rate = 60.0 * len(finished) / span if span > 0 else None
    counts = manifest.counts()
    left = counts["pending"] + counts["running"]
    eta = 60.0 * left / rate if rate and left else None
    running = [(row.case, row.worker) for row in manifest.with_status("running")]
    failures = [(row.case, row.error) for row in manifest.with_status("failed")]
    decided = DecisionTable(manifest.out_dir).read()
    reviewed = [(case, d.decision, d.note) for case, d in decided.items() if case in manifest.rows]
    return CohortSummary(counts, failures, rate, eta, running, reviewed)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["ATTEMPTS_FILE", "COLUMNS", "MANIFEST_FILE", "STATES", "Attempt", "AttemptLog", "CohortSummary",
           "Manifest", "ManifestRow", "append_event", "summarize"]
