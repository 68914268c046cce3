"""The run report: one JSON per ``mrseg segment`` run, for provenance in cohort studies.

It records the software versions, the model (folder, name, folds, configuration, checkpoint), the
settings (device, precision, step, mirroring, threads), the time the model took to load, and for
every case its status, output, error, seconds, tiles and per-stage timings.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mrseg import __version__
from mrseg.io.files import write_bytes_atomic

if TYPE_CHECKING:
    from mrseg.batch import CaseResult

PACKAGES = ("torch", "numpy", "SimpleITK", "nibabel", "pydicom", "scipy", "dynamic-network-architectures",
            "nnunetv2", "highdicom")


def software_versions() -> dict[str, str]:
    """mrseg, Python, the platform and the installed versions of the libraries that shape the result."""
    versions = {"mrseg": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_report(
    results: Sequence[CaseResult],
    *,
    model: Mapping[str, Any],
    settings: Mapping[str, Any],
    started: datetime,
    load_seconds: float,
) -> dict[str, Any]:
    """The report of one run as a JSON-ready dict.

    Args:
        results: the batch's case results, in order.
        model: what identifies the model (folder, name, folds, configuration, checkpoint).
        settings: the run's options (device, precision, step, ...).
        started: when the run started (timezone-aware).
        load_seconds: time spent loading the model.
    """
    finished = datetime.now(timezone.utc)
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "skipped", "failed")}
    cases = [
        {
            "input": str(r.case.path),
            "name": r.case.name,
            "status": r.status,
            "output": str(r.output) if r.output else None,
            "error": r.error,
            "seconds": round(r.seconds, 3),
            "tiles": r.num_tiles,
            "timings": {stage: round(seconds, 3) for stage, seconds in r.timings.items()},
        }
        for r in results
    ]
    return {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 3),
        "versions": software_versions(),
        "model": dict(model),
        "settings": dict(settings),
        "model_load_seconds": round(load_seconds, 3),
        "counts": counts,
        "cases": cases,
    }


def write_run_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str], *, postfix: str = "seg") -> Path:
    """Write ``OUTDIR/mrseg_run_<start time>_<pid>_<postfix>.json`` atomically (unique per
    concurrent job and per model of a multi-model run)."""
    stamp = datetime.fromisoformat(str(report["started"])).strftime("%Y%m%dT%H%M%S")
    path = Path(out_dir) / f"mrseg_run_{stamp}_{os.getpid()}_{postfix}.json"
    return write_bytes_atomic(path, json.dumps(report, indent=2, default=str))


__all__ = ["run_report", "software_versions", "write_run_report"]
