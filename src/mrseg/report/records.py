"""Records of what a run did: one small JSON per case, one per run.

A **case record** (``OUTDIR/<name>_<postfix>_record.json``) is written last, after every output of
the case is in place. It names the input, the model's identity, the settings that shape the labels,
the software versions, every output with its size, and what it cost. A rerun reads it to decide
whether the case is done (:func:`mrseg.pipeline.case.process_case`): done only when the record's
settings equal the new run's and every output it needs exists with the recorded size.

A **run record** (``OUTDIR/mrseg_run_<start>_<pid>_<postfix>.json``) lists every case of one
``mrseg segment`` run with its status, for provenance in cohort studies.

Example:
    >>> record = CaseRecord(name="scan", input="scan.nii.gz", status="segmented",
    ...                     settings={"step": 0.5}, outputs={"labels": OutputFile("scan_seg.nii.gz", 1234)})
    >>> CaseRecord.from_json(record.to_json()) == record
    True
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from mrseg._version import __version__
from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic

PACKAGES = ("torch", "numpy", "SimpleITK", "nibabel", "pydicom", "scipy", "dynamic-network-architectures",
            "nnunetv2", "highdicom")

CASE_STATUSES = ("segmented", "completed", "skipped", "failed")
"""``segmented``: the network ran; ``completed``: missing outputs were made from the existing label
map; ``skipped``: everything asked for was already there (or exists without a record, kept);
``failed``: nothing of this case was written."""

RECORD_VERSION = 1


def software_versions() -> dict[str, str]:
    """mrseg, Python, the platform and the installed versions of the libraries that shape the result."""
    versions = {"mrseg": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class OutputFile:
    """One output of a case: its path relative to the output folder and its size in bytes (a folder
    of masks: the sum of its files' sizes)."""

    path: str
    bytes: int


@dataclass(frozen=True)
class CaseRecord:
    """What happened to one case (one model's outputs of one input).

    Attributes:
        name: the case name (outputs are ``<name>_<postfix>...``).
        input: the input file or DICOM folder.
        status: one of :data:`CASE_STATUSES`.
        settings: what shapes the labels (model identity, folds, step, precision, ...); two runs
            with equal settings give the same labels.
        outputs: kind (``labels``, ``dicom_seg``, ``masks``, ``statistics_json``, ...) → file.
        left_out: kind → why an output that was asked for could not be made (a DICOM-SEG of a
            series without a frame of reference, with ``--output-type auto``).
        error: the one-line reason of a failure.
        timings: seconds per stage (read, preprocess, predict, export, write, statistics, ...).
        tiles: sliding-window tiles per fold.
        segmented_at / finished_at: when the network ran, when the record was written.
        host, pid: who wrote it.
        versions: software versions (:func:`software_versions`).
        confidence: class name → the mean winning softmax probability of its voxels, when the
            model was asked for it (cohort runs; :mod:`mrseg.inference.confidence`).
        notes: what the user should know about how the outputs were made (a gantry-tilted
            series resampled onto a regular grid, identifiers a DICOM-SEG had to make up).
    """

    name: str
    input: str
    status: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, OutputFile] = field(default_factory=dict)
    left_out: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    tiles: int = 0
    segmented_at: str | None = None
    finished_at: str | None = None
    host: str = ""
    pid: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    confidence: Mapping[str, float] = field(default_factory=dict)
    notes: Sequence[str] = ()

    def to_json(self) -> str:
        payload = asdict(self)
        payload["record_version"] = RECORD_VERSION
        payload["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return json.dumps(payload, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> CaseRecord:
        data = json.loads(text)
        data.pop("record_version", None)
        data["outputs"] = {kind: OutputFile(**entry) for kind, entry in data.get("outputs", {}).items()}
        return cls(**data)


def read_case_record(path: str | os.PathLike[str]) -> CaseRecord | None:
    """The record at ``path``, or None when there is none or it cannot be parsed (a record that
    cannot be read proves nothing, so the case counts as not done)."""
    try:
        return CaseRecord.from_json(Path(path).read_bytes())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def run_record(
    records: Sequence[CaseRecord],
    *,
    model: Mapping[str, Any],
    settings: Mapping[str, Any],
    started: str,
    load_seconds: float,
) -> dict[str, Any]:
    """The record of one run as a JSON-ready dict: versions, model, settings, counts, every case."""
    finished = datetime.now(timezone.utc)
    counts = {status: sum(r.status == status for r in records) for status in CASE_STATUSES}
    cases = [
        {
            "name": r.name, "input": r.input, "status": r.status, "error": r.error,
            "outputs": {kind: out.path for kind, out in r.outputs.items()},
            "seconds": round(sum(r.timings.values()), 3), "tiles": r.tiles,
            "timings": {stage: round(seconds, 3) for stage, seconds in r.timings.items()},
            "segmented_at": r.segmented_at,
        }
        for r in records
    ]
    return {
        "started": started,
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - datetime.fromisoformat(started)).total_seconds(), 3),
        "versions": software_versions(),
        "model": dict(model),
        "settings": dict(settings),
        "model_load_seconds": round(load_seconds, 3),
        "counts": counts,
        "cases": cases,
    }


def write_run_record(record: Mapping[str, Any], out_dir: str | os.PathLike[str], *, postfix: str = "seg") -> Path:
    """Write ``OUTDIR/mrseg_run_<start time>_<pid>_<postfix>.json`` atomically (unique per
    concurrent run and per model of a multi-model run).

    Raises:
        InputError: the folder cannot be written (checked before any work, so this is rare).
    """
    stamp = datetime.fromisoformat(str(record["started"])).strftime("%Y%m%dT%H%M%S")
    path = Path(out_dir) / f"mrseg_run_{stamp}_{os.getpid()}_{postfix}.json"
    try:
        return write_bytes_atomic(path, json.dumps(record, indent=2, default=str))
    except OSError as err:
        raise InputError(f"{path}: cannot write the run record ({err.strerror or err})") from err


__all__ = ["CASE_STATUSES", "CaseRecord", "OutputFile", "read_case_record", "run_record", "software_versions",
           "write_run_record"]
