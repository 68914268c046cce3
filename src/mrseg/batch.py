"""Batch runs: find the cases in the given inputs and segment each, one failure never stopping the rest."""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from mrseg.errors import InputError, MrsegError
from mrseg.inference.segmenter import Segmenter
from mrseg.io.dicom import select_series
from mrseg.io.dicom_seg import write_dicom_seg
from mrseg.io.files import case_name, image_suffix, read_image, read_series, write_image
from mrseg.postprocess import select_classes, write_class_masks
from mrseg.report.preview import write_preview
from mrseg.report.statistics import class_statistics, write_statistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One input: an image file or a DICOM folder, and the name its outputs take."""

    path: Path
    name: str


@dataclass
class CaseResult:
    """What happened to one case."""

    case: Case
    status: str  # "ok", "skipped" or "failed"
    output: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    num_tiles: int = 0


def collect_cases(inputs: Sequence[str | os.PathLike[str]]) -> list[Case]:
    """Expand files, folders and glob patterns into cases.

    A folder holding image files yields one case per file; a folder without any yields
    one DICOM case (its series is read recursively). Inputs that match nothing are kept
    as cases so that they are reported as failures, never silently dropped.
    """
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            paths.extend(Path(m) for m in matches) if matches else paths.append(Path(text))
            continue
        path = Path(text)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and image_suffix(p))
            paths.extend(images if images else [path])
        else:
            paths.append(path)
    cases, seen = [], set()
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            cases.append(Case(path, case_name(path)))
    return cases


OUTPUT_TYPES = ("auto", "nifti", "dicom-seg", "both")


def _output_kinds(output_type: str, case: Case) -> list[str]:
    """What a case writes: ``nifti`` and/or ``dicom-seg`` (``auto``: both for a DICOM series folder)."""
    if output_type == "auto":
        return ["nifti", "dicom-seg"] if case.path.is_dir() else ["nifti"]
    return ["nifti", "dicom-seg"] if output_type == "both" else [output_type]


def model_postfix(model: str | os.PathLike[str] | None) -> str:
    """The default output postfix of a model: ``seg`` (as MRSegmentator), ``<name>_seg`` for the
    published models other than ``base`` (``body_comp_seg``), so two models never overwrite each other."""
    from mrseg.model.weights import PUBLISHED

    name = str(model) if model is not None else "base"
    return f"{name}_seg" if name in PUBLISHED and name != "base" else "seg"


def output_path(case: Case, out_dir: Path, postfix: str) -> Path:
    return out_dir / f"{case.name}_{postfix}.nii.gz"


def masks_folder(case: Case, out_dir: Path, postfix: str) -> Path:
    """``OUTDIR/<name>_<postfix>/``: one ``<class>.nii.gz`` mask per class (``--split-classes``)."""
    return out_dir / f"{case.name}_{postfix}"


def statistics_base(case: Case, out_dir: Path, postfix: str) -> Path:
    """``OUTDIR/<name>_<postfix>_stats``: the statistics files add ``.json`` and ``.csv``."""
    return out_dir / f"{case.name}_{postfix}_stats"


def run_batch(
    segmenter: Segmenter,
    cases: Iterable[Case],
    out_dir: str | os.PathLike[str],
    *,
    postfix: str = "seg",
    overwrite: bool = False,
    series: str | None = None,
    channel: int | None = None,
    statistics: bool = False,
    classes: Mapping[str, int] | None = None,
    split_classes: bool = False,
    preview: bool = False,
    output_type: str = "auto",
    model_name: str = "mrseg",
    on_case_start: Callable[[Case], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    on_case_end: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Segment every case with one loaded model; returns one result per case, in order.

    With ``statistics``, each case also gets ``<name>_<postfix>_stats.json`` and ``.csv``
    (:func:`mrseg.report.statistics.class_statistics` of the labels and the input image).
    ``classes`` (name → value, from :func:`mrseg.postprocess.resolve_classes`) keeps only those
    classes; ``split_classes`` also writes one mask per class into ``OUTDIR/<name>_<postfix>/``;
    ``preview`` writes ``OUTDIR/<name>_<postfix>_preview.png`` (:mod:`mrseg.report.preview`).
    ``output_type``: ``nifti`` (``<name>_<postfix>.nii.gz``), ``dicom-seg`` (``<name>_<postfix>.dcm``,
    DICOM series inputs only), ``both``, or ``auto``: both for a DICOM series, NIfTI otherwise.
    """
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    names: dict[str, Path] = {}
    chosen = dict(classes) if classes else dict(segmenter.model.dataset.foreground)
    class_names = {value: name for name, value in chosen.items()}
    for case in cases:
        start = time.perf_counter()
        target = output_path(case, out_dir, postfix)
        kinds = _output_kinds(output_type, case)
        targets = [target if kind == "nifti" else target.with_name(target.name.replace(".nii.gz", ".dcm"))
                   for kind in kinds]
        if case.name in names:
            result = CaseResult(case, "failed", error=(
                f"{case.path}: output name {target.name} clashes with {names[case.name]}; "
                "segment them into different folders"
            ))
        elif all(t.exists() for t in targets) and not overwrite:
            result = CaseResult(case, "skipped", output=targets[0],
                                error=f"{targets[0]} exists; --overwrite replaces it")
        elif "dicom-seg" in kinds and not case.path.is_dir():
            result = CaseResult(case, "failed", error=(f"{case.path}: DICOM-SEG output needs a DICOM series as "
                                                      "input; use --output-type nifti for image files"))
        else:
            if on_case_start is not None:
                on_case_start(case)
            try:
                # A DICOM folder's headers are scanned once: the series read here is also the one
                # a DICOM-SEG references.
                dicom = select_series(case.path, series) if case.path.is_dir() else None
                image = (read_series(dicom, channel=channel, source=case.path) if dicom is not None
                         else read_image(case.path, channel=channel))
                segmentation = segmenter.run(image, source=str(case.path), on_tile=on_tile)
                labels = select_classes(segmentation.labels, chosen.values()) if classes else segmentation.labels
                if "nifti" in kinds:
                    write_image(labels, target)
                if dicom is not None and "dicom-seg" in kinds:
                    try:
                        write_dicom_seg(labels, dicom, targets[kinds.index("dicom-seg")],
                                        classes=class_names, model_name=model_name)
                    except InputError as err:
                        if output_type != "auto":
                            raise
                        log.warning("%s: no DICOM-SEG written (%s); the NIfTI labels are in %s", case.path, err,
                                    target)
                if split_classes:
                    write_class_masks(labels, chosen, masks_folder(case, out_dir, postfix))
                if preview:
                    write_preview(labels, image, out_dir / f"{case.name}_{postfix}_preview.png", names=class_names,
                                  title=case.name)
                if statistics:
                    rows = class_statistics(labels, image, names=class_names)
                    write_statistics(rows, statistics_base(case, out_dir, postfix),
                                     meta={"case": case.name, "image": str(case.path), "labels": str(target)})
                result = CaseResult(case, "ok", output=targets[0], timings=dict(segmentation.timings),
                                    num_tiles=segmentation.num_tiles)
            except MrsegError as err:
                result = CaseResult(case, "failed", error=str(err))
            except (RuntimeError, MemoryError, OSError) as err:
                log.debug("case %s failed", case.path, exc_info=True)
                result = CaseResult(case, "failed", error=f"{case.path}: {type(err).__name__}: {err}")
        names.setdefault(case.name, case.path)
        result.seconds = time.perf_counter() - start
        results.append(result)
        if on_case_end is not None:
            on_case_end(result)
    return results


__all__ = ["Case", "CaseResult", "collect_cases", "masks_folder", "model_postfix", "output_path", "run_batch",
           "statistics_base"]
