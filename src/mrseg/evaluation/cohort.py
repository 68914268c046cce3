"""Cohorts: pair predictions with references, attach metadata, evaluate, and summarise by stratum.

A cohort is a folder of reference label maps and a folder of predictions. Cases are paired by
id: the reference file's name without its image ending (``case_017.nii.gz`` → ``case_017``); a
prediction matches when its name is the id plus ``pred_postfix`` (default ``_seg``, what
``mrseg segment`` writes) or the id itself.

Failures are never skipped silently: a reference without a prediction (or with an unreadable
one) is scored as an empty prediction for every class it holds (Dice 0, NSD 0, distances
missing or capped), flagged ``missing prediction`` and listed as a failure. Predictions without
a reference are listed as warnings. Predictions on another grid than their reference are an
error unless ``resample_pred=True`` (nearest neighbour onto the reference grid).

Strata (dataset, site, modality, sequence, any other column) come from a metadata CSV with a
``case_id`` column and/or from the named groups of a regular expression matched against the
case id, e.g. ``(?P<dataset>[^_]+)_(?P<sequence>t1|t2)_\\d+``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from mrseg.classes import BASE, resolve_classes
from mrseg.errors import InputError
from mrseg.evaluation.label_maps import LabelMap, resolve_label_map
from mrseg.evaluation.metrics import (
    METRICS,
    MaskMetrics,
    MetricAccumulator,
    MetricRecord,
    Status,
    Summary,
    compare_labels,
    label_bounding_boxes,
    values_of,
)
from mrseg.io.files import case_name, image_suffix, read_geometry, read_image
from mrseg.io.image import Geometry, Image
from mrseg.io.resample import resample_labels

log = logging.getLogger(__name__)

STRATUM_KEYS: tuple[str, ...] = ("dataset", "site", "modality", "sequence")
"""Metadata columns used for the stratified tables when present (others on request)."""

MISSING_STRATUM = "n/a"
"""Group name of cases without a value for a stratification key."""

GRID_TOLERANCE_MM = 1e-4
"""Largest spacing/origin/direction difference still counted as the same grid (float32 headers)."""


# ---------------------------------------------------------------------------------------------
# pairing


@dataclass(frozen=True)
class CasePair:
    """A reference label file and its prediction (None when the prediction is missing)."""

    case: str
    ref: Path
    pred: Path | None


@dataclass(frozen=True)
class Pairing:
    """Cases found in a prediction and a reference folder.

    Attributes:
        pairs: one entry per reference, sorted by case id; ``pred`` is None where missing.
        unmatched_predictions: prediction files with no reference.
    """

    pairs: tuple[CasePair, ...]
    unmatched_predictions: tuple[Path, ...]

    @property
    def missing(self) -> tuple[CasePair, ...]:
        """References without a prediction."""
        return tuple(p for p in self.pairs if p.pred is None)


def _label_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.exists():
        raise InputError(f"{what} {folder}: no such file or folder; check the path")
    if folder.is_file():
        if image_suffix(folder) is None:
            raise InputError(f"{what} {folder}: not a label image file; expected a folder or a NIfTI/MHA/NRRD file")
        return {case_name(folder): folder}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or image_suffix(path) is None or path.name.startswith("."):
            continue
        name = case_name(path)
        if name in found:
            raise InputError(
                f"{what} folder {folder} holds two files for case {name!r} ({found[name].name}, {path.name}); "
                "keep one per case"
            )
        found[name] = path
    return found


def pair_cases(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    *,
    pred_postfix: str = "_seg",
) -> Pairing:
    """Pair prediction and reference label files by case id.

    Args:
        pred: folder of predictions, or one prediction file (then ``ref`` must be one file).
        ref: folder of reference label maps, or one file.
        pred_postfix: ending of a prediction's name after the case id (``""`` for none).

    Returns:
        The pairs, references without a prediction included.

    Raises:
        InputError: a path is missing, a folder holds no label files, two files share a case id,
            or a single file is paired with a folder.
    """
    pred_path, ref_path = Path(pred), Path(ref)
    refs = _label_files(ref_path, "reference")
    preds = _label_files(pred_path, "prediction")
    if ref_path.is_file() != pred_path.is_file():
        raise InputError(
            f"--pred {pred_path} and --ref {ref_path}: give two folders, or two files for a single case"
        )
    if ref_path.is_file():
        (case,) = refs
        return Pairing((CasePair(case, refs[case], next(iter(preds.values()))),), ())
    if not refs:
        raise InputError(f"reference folder {ref_path} holds no label files (.nii.gz, .nii, .mha, .nrrd, ...)")
    used: set[str] = set()
    pairs = []
    for case, path in sorted(refs.items()):
        match = next((n for n in (case + pred_postfix, case) if n in preds and n not in used), None)
        if match is not None:
            used.add(match)
        pairs.append(CasePair(case, path, preds[match] if match is not None else None))
    unmatched = tuple(preds[n] for n in sorted(preds) if n not in used)
    return Pairing(tuple(pairs), unmatched)


# ---------------------------------------------------------------------------------------------
# metadata and strata


def read_metadata(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Read a metadata CSV: one row per case, a ``case_id`` column and any others.

    Comma, semicolon and tab delimiters are recognised; an Excel byte-order mark is ignored.
    Typical columns: ``dataset``, ``site``, ``modality`` (CT, MR), ``sequence`` (T1 in-phase,
    T1 opposed-phase, T2 HASTE, Dixon water, ...).

    Returns:
        case id → {column: value} (``case_id`` itself left out; empty cells left out).

    Raises:
        InputError: unreadable file, no ``case_id`` column, or a case listed twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise InputError(f"{path}: cannot read the metadata CSV ({err.strerror or err}); check the path") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: the metadata CSV must be UTF-8 text ({err})") from err
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max(",;\t", key=first.count)
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "case_id" not in columns:
        raise InputError(
            f"{path}: the metadata CSV needs a 'case_id' column (the label file name without its ending); "
            f"found columns {columns or 'none'}"
        )
    table: dict[str, dict[str, str]] = {}
    for number, row in enumerate(reader, start=2):
        clean = {str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
        case = clean.pop("case_id", "")
        if not case:
            raise InputError(f"{path}, line {number}: empty case_id")
        if case in table:
            raise InputError(f"{path}, line {number}: case {case!r} is listed twice")
        table[case] = {k: v for k, v in clean.items() if v}
    return table


def compile_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """Compile a case-id pattern; it must have at least one named group.

    Raises:
        InputError: invalid regular expression or no named group.
    """
    try:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as err:
        raise InputError(f"case pattern {pattern!r} is not a valid regular expression: {err}") from err
    if not compiled.groupindex:
        raise InputError(
            f"case pattern {compiled.pattern!r} has no named group; name the parts, "
            "e.g. '(?P<dataset>[^_]+)_(?P<case>.*)'"
        )
    return compiled


def strata_from_pattern(case: str, pattern: re.Pattern[str]) -> dict[str, str] | None:
    """The named groups of ``pattern`` matched against the whole case id (group ``case`` left out).

    Returns None when the id does not match.
    """
    match = pattern.fullmatch(case)
    if match is None:
        return None
    return {k: v for k, v in match.groupdict().items() if k != "case" and v}


# ---------------------------------------------------------------------------------------------
# one case


@dataclass(frozen=True)
class EvaluationSettings:
    """The options an evaluation ran with (recorded in every report)."""

    pred_map: str
    ref_map: str
    classes: tuple[str, ...]
    nsd_tolerance: float
    resample_pred: bool
    pred_postfix: str = "_seg"
    metadata: str | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class CaseEvaluation:
    """The metrics of every evaluated class of one case.

    Attributes:
        case: the case id.
        ref: reference file (None for in-memory images).
        pred: prediction file (None when missing or in memory).
        status: ``ok``, ``missing prediction`` or ``unreadable prediction``.
        metrics: class name → metrics, in class-index order.
        strata: dataset, sequence, ... for this case.
        resampled: whether the prediction was resampled onto the reference grid.
        error: why the prediction could not be used, if it could not.
    """

    case: str
    ref: Path | None
    pred: Path | None
    status: str
    metrics: Mapping[str, MaskMetrics]
    strata: Mapping[str, str] = field(default_factory=dict)
    resampled: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def select_classes(
    classes: Iterable[str | int] | None,
    pred_map: LabelMap,
    ref_map: LabelMap,
) -> tuple[tuple[int, ...], list[str]]:
    """The 40-class labels to evaluate: those requested that both maps define.

    Args:
        classes: class names or numbers of :data:`mrseg.classes.BASE`; None for all 40.
        pred_map: the prediction's label map.
        ref_map: the reference's label map.

    Returns:
        The labels in index order, and warnings about requested classes a map does not define.

    Raises:
        InputError: an unknown class (:func:`mrseg.classes.resolve_classes`), or no class left
            to evaluate.
    """
    if classes is None:
        requested = [c.index for c in BASE.classes]
    else:
        requested = list(resolve_classes([str(item).strip() for item in classes], BASE.foreground).values())
    both = pred_map.defines & ref_map.defines
    warnings = []
    for side, labels in (("prediction", pred_map), ("reference", ref_map)):
        left_out = [BASE.name_of(k) for k in sorted(set(requested) - labels.defines)]
        if left_out and classes is not None:
            warnings.append(
                f"the {side} label map {labels.name!r} does not define {', '.join(left_out)}; not evaluated"
            )
    chosen = tuple(sorted(set(requested) & both))
    if not chosen:
        raise InputError(
            f"no class to evaluate: the prediction map {pred_map.name!r} and the reference map {ref_map.name!r} "
            "share none of the requested classes; check --classes, --pred-map and --ref-map"
        )
    return chosen, warnings


def _show(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _grid_difference(pred: Geometry, ref: Geometry) -> str:
    parts = []
    for name in ("shape", "spacing", "origin", "direction"):
        a, b = getattr(pred, name), getattr(ref, name)
        same = a == b if name == "shape" else np.allclose(a, b, atol=GRID_TOLERANCE_MM, rtol=0)
        if not same:
            parts.append(f"{name} {_show(a)} vs {_show(b)}")
    return "; ".join(parts)


def evaluate_case(
    pred: Image | None,
    ref: Image,
    *,
    pred_map: str | LabelMap = "base",
    ref_map: str | LabelMap = "base",
    classes: Iterable[str | int] | None = None,
    nsd_tolerance: float = 2.0,
    resample_pred: bool = False,
    case: str = "case",
    strata: Mapping[str, str] | None = None,
    pred_source: str = "prediction",
    ref_source: str = "reference",
) -> CaseEvaluation:
    """Evaluate one prediction against its reference, per class, in mm.

    Args:
        pred: the predicted label image; None when it is missing (scored as empty, flagged).
        ref: the reference label image.
        pred_map: label map of the prediction (built-in name, JSON path or :class:`LabelMap`).
        ref_map: label map of the reference.
        classes: 40-class names or numbers to evaluate (default: all both maps define).
        nsd_tolerance: NSD tolerance in mm.
        resample_pred: resample a prediction on another grid onto the reference grid
            (nearest neighbour) instead of refusing it.
        case: the case id.
        strata: dataset, sequence, ... of the case.
        pred_source: the prediction's file name, for messages.
        ref_source: the reference's file name, for messages.

    Returns:
        Metrics per class name; see :mod:`mrseg.evaluation.metrics` for the definitions.

    Raises:
        InputError: grids differ (without ``resample_pred``), labels outside the map, no classes.
    """
    pmap, rmap = resolve_label_map(pred_map), resolve_label_map(ref_map)
    labels, _ = select_classes(classes, pmap, rmap)
    ref40 = rmap.apply(ref.array, source=ref_source)
    names = [BASE.name_of(k) for k in labels]
    resampled = False
    if pred is None:
        boxes = label_bounding_boxes(ref40, max(labels))
        results = {}
        for k, name in zip(labels, names):
            n_ref = int(np.count_nonzero(ref40[boxes[k - 1]] == k)) if boxes[k - 1] is not None else 0
            status = Status.MISSING_PREDICTION if n_ref else Status.ABSENT
            results[name] = MaskMetrics.undefined(
                status, pred_voxels=0, ref_voxels=n_ref, nsd_tolerance=float(nsd_tolerance)
            )
        return CaseEvaluation(case, None, None, "missing prediction", results, dict(strata or {}))
    pred40_image = pred.with_array(pmap.apply(pred.array, source=pred_source))
    if not pred.geometry.same_grid(ref.geometry, atol=GRID_TOLERANCE_MM):
        if not resample_pred:
            raise InputError(
                f"{pred_source} and {ref_source} are on different grids "
                f"({_grid_difference(pred.geometry, ref.geometry)}); pass --resample-pred "
                "(resample_pred=True) to resample the prediction onto the reference grid (nearest neighbour)"
            )
        pred40_image = resample_labels(pred40_image, ref.geometry)
        resampled = True
    per_label = compare_labels(
        pred40_image.array, ref40, labels=labels, spacing=ref.geometry.spacing_zyx, nsd_tolerance=nsd_tolerance
    )
    results = {name: per_label[k] for k, name in zip(labels, names)}
    return CaseEvaluation(case, None, None, "ok", results, dict(strata or {}), resampled=resampled)


# ---------------------------------------------------------------------------------------------
# a cohort


@dataclass(frozen=True)
class SummaryRow:
    """One line of a summary: a metric of one class within one group of cases."""

    group_by: str
    group: str
    label: str
    metric: str
    summary: Summary


@dataclass(frozen=True)
class CohortEvaluation:
    """Every case of a cohort evaluation, with the settings, failures and warnings.

    Attributes:
        settings: the options used.
        cases: per-case results, sorted by case id (failures included).
        unmatched_predictions: prediction files without a reference.
        warnings: things the user should know (unmatched files, classes not evaluated, ...).
    """

    settings: EvaluationSettings
    cases: tuple[CaseEvaluation, ...]
    unmatched_predictions: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def failures(self) -> tuple[CaseEvaluation, ...]:
        """Cases whose prediction was missing or unreadable."""
        return tuple(c for c in self.cases if c.failed)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.settings.classes

    @property
    def strata_keys(self) -> tuple[str, ...]:
        """Every stratum key some case has, metadata order first seen."""
        keys: dict[str, None] = {}
        for c in self.cases:
            keys.update(dict.fromkeys(c.strata))
        return tuple(keys)

    def records(self) -> list[MetricRecord]:
        """One record per case and class."""
        return [
            MetricRecord(c.case, name, metrics, c.strata) for c in self.cases for name, metrics in c.metrics.items()
        ]

    def accumulator(self) -> MetricAccumulator:
        """The records in a :class:`~mrseg.evaluation.metrics.MetricAccumulator`, for custom aggregates."""
        acc = MetricAccumulator(nsd_tolerance=self.settings.nsd_tolerance)
        for record in self.records():
            acc.add(record.case, record.label, record.metrics, strata=record.strata)
        return acc

    def default_strata(self) -> tuple[str, ...]:
        """The usual stratification keys (dataset, site, modality, sequence) that cases carry."""
        present = self.strata_keys
        return tuple(k for k in STRATUM_KEYS if k in present)

    def summary(
        self,
        *,
        by: Sequence[str] | None = None,
        metrics: Sequence[str] = METRICS,
        distance_cap: float | None = None,
    ) -> list[SummaryRow]:
        """Summaries per class over all cases, then per class within each group of each ``by`` key.

        Args:
            by: stratum keys (default :meth:`default_strata`); cases without a value form ``n/a``.
            metrics: metrics to summarise.
            distance_cap: value (mm) used for distances undefined because a mask was empty;
                None leaves them out (counted in ``n_missing``).
        """
        keys = self.default_strata() if by is None else tuple(by)
        unknown = [k for k in keys if k not in self.strata_keys]
        if unknown:
            raise InputError(
                f"no case has the stratum {', '.join(map(repr, unknown))}; "
                f"available: {', '.join(self.strata_keys) or 'none (give --meta or --pattern)'}"
            )
        records = self.records()
        rows = _summary_rows("all", "all", records, self.classes, metrics, distance_cap)
        for key in keys:
            groups: dict[str, list[MetricRecord]] = {}
            for r in records:
                groups.setdefault(r.strata.get(key, MISSING_STRATUM), []).append(r)
            for group in sorted(groups, key=lambda g: (g == MISSING_STRATUM, g)):
                rows += _summary_rows(key, group, groups[group], self.classes, metrics, distance_cap)
        return rows


def _summary_rows(
    group_by: str,
    group: str,
    records: Sequence[MetricRecord],
    classes: Sequence[str],
    metrics: Sequence[str],
    distance_cap: float | None,
) -> list[SummaryRow]:
    by_label: dict[str, list[MetricRecord]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    rows = []
    for label in classes:
        chosen = by_label.get(label, [])
        if not any(r.metrics.status is not Status.ABSENT for r in chosen):
            continue
        for metric in metrics:
            values, missing, capped = values_of(chosen, metric, distance_cap=distance_cap)
            summary = Summary.of(values, n_missing=missing, n_capped=capped)
            rows.append(SummaryRow(group_by, group, label, metric, summary))
    return rows


def evaluate_cohort(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    *,
    pred_map: str | LabelMap = "base",
    ref_map: str | LabelMap = "base",
    classes: Iterable[str | int] | None = None,
    nsd_tolerance: float = 2.0,
    pred_postfix: str = "_seg",
    metadata: str | os.PathLike[str] | None = None,
    pattern: str | None = None,
    resample_pred: bool = False,
    on_case: Callable[[CaseEvaluation], None] | None = None,
) -> CohortEvaluation:
    """Evaluate a folder of predictions against a folder of references.

    Every grid is checked before any metric is computed, so a mismatch fails fast.

    Args:
        pred: prediction folder (or one file).
        ref: reference folder (or one file).
        pred_map: label map of the predictions (default the 40-class index).
        ref_map: label map of the references (``totalseg``, ``totalseg_mr``, ``amos22``,
            ``chaos``, a JSON file, ...).
        classes: 40-class names or numbers to evaluate (default: all both maps define).
        nsd_tolerance: NSD tolerance in mm.
        pred_postfix: ending of prediction names after the case id.
        metadata: CSV with ``case_id`` and stratum columns.
        pattern: regular expression with named groups matched against each case id.
        resample_pred: resample predictions on another grid instead of refusing them.
        on_case: called with each case's result as it finishes (progress, logging).

    Returns:
        All cases, failures and warnings; see :meth:`CohortEvaluation.summary`.

    Raises:
        InputError: bad paths, maps, classes, metadata or pattern; grids that differ without
            ``resample_pred``.
    """
    if not (math.isfinite(float(nsd_tolerance)) and float(nsd_tolerance) >= 0):
        raise InputError(f"NSD tolerance must be a finite distance >= 0 mm, got {nsd_tolerance}")
    pmap, rmap = resolve_label_map(pred_map), resolve_label_map(ref_map)
    labels, warnings = select_classes(classes, pmap, rmap)
    pairing = pair_cases(pred, ref, pred_postfix=pred_postfix)
    table = read_metadata(metadata) if metadata is not None else {}
    compiled = compile_pattern(pattern) if pattern is not None else None

    strata: dict[str, dict[str, str]] = {}
    for p in pairing.pairs:
        values: dict[str, str] = {}
        if compiled is not None:
            found = strata_from_pattern(p.case, compiled)
            if found is None:
                warnings.append(f"case {p.case!r} does not match the pattern {compiled.pattern!r}; its strata are n/a")
            else:
                values.update(found)
        if metadata is not None:
            if p.case in table:
                values.update(table[p.case])
            else:
                warnings.append(f"case {p.case!r} is not in the metadata file {metadata}; its strata are n/a")
        strata[p.case] = values
    if metadata is not None:
        extra = sorted(set(table) - {p.case for p in pairing.pairs})
        if extra:
            shown = ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")
            warnings.append(f"{len(extra)} case(s) in the metadata file have no reference: {shown}")
    for path in pairing.unmatched_predictions:
        warnings.append(f"prediction {path} has no reference; not evaluated")
    for p in pairing.missing:
        log.warning("case %s: no prediction for reference %s; scored as a failure", p.case, p.ref)

    if not resample_pred:
        mismatched = []
        for p in pairing.pairs:
            if p.pred is None:
                continue
            try:
                g_pred, g_ref = read_geometry(p.pred), read_geometry(p.ref)
            except RuntimeError:
                continue  # unreadable files are reported when read below
            if not g_pred.same_grid(g_ref, atol=GRID_TOLERANCE_MM):
                mismatched.append(f"{p.pred} vs {p.ref}: {_grid_difference(g_pred, g_ref)}")
        if mismatched:
            raise InputError(
                f"{len(mismatched)} prediction(s) are not on their reference's grid:\n  "
                + "\n  ".join(mismatched)
                + "\npass --resample-pred (resample_pred=True) to resample them onto the reference grids "
                "(nearest neighbour), or fix the files"
            )

    names = tuple(BASE.name_of(k) for k in labels)
    cases = []
    for p in pairing.pairs:
        ref_image = read_image(p.ref)
        pred_image: Image | None = None
        error = None
        if p.pred is not None:
            try:
                pred_image = read_image(p.pred)
            except InputError as err:
                error = str(err)
                log.error("case %s: %s; scored as a failure", p.case, err)
        result = evaluate_case(
            pred_image, ref_image, pred_map=pmap, ref_map=rmap, classes=labels, nsd_tolerance=nsd_tolerance,
            resample_pred=resample_pred, case=p.case, strata=strata[p.case], pred_source=str(p.pred),
            ref_source=str(p.ref),
        )
        status = result.status if error is None else "unreadable prediction"
        result = CaseEvaluation(
            p.case, p.ref, p.pred, status, result.metrics, result.strata, result.resampled, error
        )
        cases.append(result)
        if on_case is not None:
            on_case(result)

    settings = EvaluationSettings(
        pred_map=pmap.name,
        ref_map=rmap.name,
        classes=names,
        nsd_tolerance=float(nsd_tolerance),
        resample_pred=resample_pred,
        pred_postfix=pred_postfix,
        metadata=str(metadata) if metadata is not None else None,
        pattern=pattern,
    )
    for w in warnings:
        log.warning("%s", w)
    return CohortEvaluation(settings, tuple(cases), pairing.unmatched_predictions, tuple(warnings))
