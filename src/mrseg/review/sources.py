"""What a review folder holds: its cases, each with an image, a label map, a status and flags.

Three kinds of folder plug in, each as a :class:`Source`:

- a ``mrseg segment`` output folder: one ``*_record.json`` per case (status, input image,
  labels, statistics); the flags are each case's own QC checks (missing organs, organs on the
  wrong side, implausible volumes) computed from its statistics;
- a cohort folder (``mrseg cohort run``): the same records, plus the manifest's failed and
  pending cases and the flags of ``cohort_qc.csv`` (volume outliers against the cohort included);
- an annotation project (``mrseg annotate``): every drafted case, its state and uncertainty,
  the draft as label map; a decision is handed to the project (accept: the draft is the
  correction, with zero effort; reject: the case leaves the loop).

Sources only read files; the server never takes a path from a request, it looks cases up by name
in the list a source built.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mrseg.errors import InputError
from mrseg.report.records import read_case_record

log = logging.getLogger(__name__)

SEGMENT, COHORT, ANNOTATION = "segment", "cohort", "annotation"
"""Kinds of review folder."""


@dataclass
class ReviewCase:
    """One case as the review page shows it.

    Attributes:
        case: its name (unique in the folder).
        image: the image file (None when the case has no readable image: failed, pending).
        labels: the label map to overlay (None: nothing to show).
        status: the source's state of the case (``segmented``, ``failed``, ``in_correction``, ...).
        flags: QC findings, one short text each.
        score: how bad the flags are (higher: review first).
        uncertainty: 1 − the model's mean winning probability in its foreground, where known.
        volumes: class name → millilitres.
        classes: label value → class name, for the overlay.
        note: the source's own remark (a failure reason, a rejection reason).
    """

    case: str
    image: Path | None
    labels: Path | None
    status: str
    flags: list[str] = field(default_factory=list)
    score: float = 0.0
    uncertainty: float | None = None
    volumes: dict[str, float] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "pending", "running") or self.labels is None

    def badness(self) -> tuple[float, float, float]:
        """Sort key, worst first when sorted descending: failures, then QC score, then uncertainty."""
        return (1.0 if self.failed else 0.0, self.score, self.uncertainty if self.uncertainty is not None else -1.0)

    def summary(self) -> dict[str, Any]:
        return {"case": self.case, "status": self.status, "flags": self.flags, "score": self.score,
                "uncertainty": self.uncertainty, "viewable": self.image is not None and self.labels is not None,
                "note": self.note}


class Source(Protocol):
    """A folder of cases to review."""

    kind: str
    folder: Path

    def cases(self) -> list[ReviewCase]:
        """Every case, in the source's own order (the page sorts)."""
        ...

    def decided(self, case: str, decision: str, note: str) -> str | None:
        """Hand a reviewer's decision to the source; returns what it did (None: nothing)."""
        ...


def open_source(folder: str | Path) -> Source:
    """The source for ``folder``: an annotation project, a cohort folder or a segment output folder.

    Raises:
        InputError: ``folder`` is not a folder, or holds none of these.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give a mrseg segment output folder, a cohort folder or an "
                         "annotation project")
    from mrseg.annotation import Project
    from mrseg.cohort.manifest import MANIFEST_FILE

    if Project(root).exists():
        return AnnotationSource(root)
    if (root / MANIFEST_FILE).is_file():
        return RecordsSource(root, kind=COHORT)
    if any(root.glob("*_record.json")):
        return RecordsSource(root, kind=SEGMENT)
    raise InputError(f"{root}: no cases to review (no *_record.json of mrseg segment, no cohort manifest, no "
                     "annotation project); point mrseg review at an output folder")


class RecordsSource:
    """A ``mrseg segment`` output folder or a cohort folder: one case record per case."""

    def __init__(self, folder: Path, *, kind: str = SEGMENT) -> None:
        self.folder = folder
        self.kind = kind

    def cases(self) -> list[ReviewCase]:
        found: dict[str, ReviewCase] = {}
        for path in sorted(self.folder.glob("*_record.json")):
            record = read_case_record(path)
            if record is None:
                continue
            found[record.name] = self._case(record)
        if self.kind == COHORT:
            self._add_cohort(found)
        return list(found.values())

    def _case(self, record: Any) -> ReviewCase:
        from mrseg.cohort.qc import SEVERITY, case_flags, organs_from_statistics

        outputs = record.outputs
        labels = self._inside(outputs["labels"].path) if "labels" in outputs else None
        image = Path(record.input) if record.input and Path(record.input).exists() else None  # file or DICOM folder
        case = ReviewCase(record.name, image, labels, record.status, note=record.error or "")
        if "statistics_json" in outputs:
            stats_path = self._inside(outputs["statistics_json"].path)
            if stats_path is not None:
                try:
                    rows = json.loads(stats_path.read_text())["classes"]
                    case.volumes = {row["name"]: float(row["volume_ml"]) for row in rows}
                    case.classes = {int(row["label"]): row["name"] for row in rows}
                    flags = case_flags(organs_from_statistics(stats_path, record.confidence))
                    case.flags = [flag.text() for flag in flags]
                    case.score = float(sum(SEVERITY[flag.kind] for flag in flags))
                except (OSError, ValueError, KeyError) as err:
                    log.warning("statistics of a case cannot be read (%s)", type(err).__name__)
        if record.confidence and case.volumes:
            weights = {name: case.volumes.get(name, 0.0) for name in record.confidence}
            total = sum(weights.values())
            if total > 0:
                case.uncertainty = round(1.0 - sum(record.confidence[n] * w for n, w in weights.items()) / total, 4)
        return case

    def _inside(self, relative: str) -> Path | None:
        """An output path of a record, only where it stays inside the folder."""
        path = (self.folder / relative).resolve()
        return path if path.is_relative_to(self.folder.resolve()) and path.exists() else None

    def _add_cohort(self, found: dict[str, ReviewCase]) -> None:
        from mrseg.cohort.manifest import Manifest
        from mrseg.cohort.qc import QC_TABLE

        for row in Manifest.read(self.folder).rows.values():
            if row.case not in found or row.status != "done":
                found[row.case] = ReviewCase(row.case, None, None, row.status, note=row.error)
        table = self.folder / QC_TABLE
        if table.is_file():  # the cohort's own QC (volume outliers against the cohort) replaces the per-case one
            with open(table, newline="") as handle:
                for checked in csv.DictReader(handle):
                    case = found.get(checked["case"])
                    if case is not None:
                        case.flags = [text for text in checked["flags"].split("; ") if text]
                        case.score = float(checked["score"] or 0)

    def decided(self, case: str, decision: str, note: str) -> str | None:
        return None  # the cohort reads review.csv itself (mrseg cohort status)


class AnnotationSource:
    """An annotation project: its drafted cases (the draft is the label map to review)."""

    kind = ANNOTATION

    def __init__(self, folder: Path) -> None:
        from mrseg.annotation import Project

        self.folder = folder
        self.project = Project(folder)

    def cases(self) -> list[ReviewCase]:
        from mrseg.model.plans import read_dataset

        state = self.project.read()
        names: dict[int, dict[int, str]] = {}
        found = []
        for entry in state.cases.values():
            if entry.round is None:
                continue
            folder = self.project.case_folder(entry.round, entry.case)
            accepted = self.folder / "accepted" / f"{entry.case}.nii.gz"
            labels = accepted if entry.status == "accepted" and accepted.is_file() else folder / "draft.nii.gz"
            image = folder / "image.nii.gz"
            version = entry.draft_model or 0
            if version not in names:
                try:
                    model = self.project.resolved_path(state.models[version].folder)
                    foreground = read_dataset(model / "dataset.json").foreground
                    names[version] = {value: name for name, value in foreground.items()}
                except Exception:  # a model folder gone: show the labels by number
                    names[version] = {}
            effort = entry.effort or {}
            note = entry.reason or (f"changed {100 * effort['fraction_changed']:.1f} % of voxels"
                                    if effort.get("fraction_changed") is not None else "")
            found.append(ReviewCase(entry.case, image if image.is_file() else None,
                                    labels if labels.is_file() else None, entry.status,
                                    uncertainty=entry.uncertainty, classes=names[version], note=note,
                                    score=0.0))
        return found

    def decided(self, case: str, decision: str, note: str) -> str | None:
        from mrseg.annotation import reject, submit

        entry = self.project.read().cases.get(case)
        if entry is None:
            return None
        if decision == "accept" and entry.status == "in_correction":
            draft = self.project.case_folder(entry.round or 0, case) / "draft.nii.gz"
            submit(self.project, case, draft)
            return "draft accepted as its correction (zero effort)"
        if decision == "reject" and entry.status not in ("accepted", "rejected"):
            reject(self.project, case, note or "rejected in review")
            return "case taken out of the loop"
        return None


def describe(source: Source) -> str:
    """One line: what kind of folder this is."""
    return {SEGMENT: "segment output folder", COHORT: "cohort folder", ANNOTATION: "annotation project"}[source.kind]
