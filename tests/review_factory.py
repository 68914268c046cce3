"""Review folders for the review tests: phantom cases whose label map is the phantom's truth (so
every structure's side is known), stored with non-LPS headers, with case records and statistics
written by the library the way ``mrseg segment`` writes them."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mrseg.classes import BASE
from mrseg.io import read_image, write_image
from mrseg.io.orientation import reorient
from mrseg.phantom import PhantomCase, make_case, write_case
from mrseg.report.records import CaseRecord, OutputFile
from mrseg.report.statistics import class_statistics, write_statistics

NAMES = {c.index: c.name for c in BASE.classes}


def truth_case(folder: Path, name: str, *, seed: int, orientation: str, status: str = "segmented") -> Path:
    """A phantom image stored in ``orientation`` (e.g. RAS, or PIR for permuted axes) with its truth
    as the case's label map, its statistics and its case record in ``folder``; returns the image."""
    written = write_case(_phantom(seed), folder / "inputs", name)
    image, _ = reorient(read_image(written["image"]), orientation)
    labels, _ = reorient(read_image(written["labels"]), orientation)
    image_path = write_image(image, folder / "inputs" / f"{name}.nii.gz")
    labels_path = write_image(labels, folder / f"{name}_seg.nii.gz")
    stats_json, _ = write_statistics(class_statistics(labels, image, names=NAMES), folder / f"{name}_seg_stats")
    record = CaseRecord(name, str(image_path), status, outputs={
        "labels": OutputFile(labels_path.name, labels_path.stat().st_size),
        "statistics_json": OutputFile(stats_json.name, stats_json.stat().st_size)})
    (folder / f"{name}_seg_record.json").write_text(record.to_json())
    return image_path


@functools.lru_cache(maxsize=None)
def _phantom(seed: int) -> PhantomCase:
    """The phantom of ``seed``, drawn once per test process (half a second each; the review tests
    build the same three cases for every test)."""
    return make_case(seed=seed, modality="mr", sequence="t1_in", fov="abdomen", spacing=(6.0, 5.0, 4.0))


def side_of(labels: np.ndarray, value: int) -> float:
    """Mean column of ``value`` in a display slice (0: screen left, 1: screen right)."""
    columns = np.nonzero(labels == value)[1]
    return float(columns.mean() / labels.shape[1])
