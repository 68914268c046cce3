"""Overlap and surface-distance metrics in millimetres, as pure functions and as an accumulator.

Definitions (``A`` the prediction, ``B`` the reference, both boolean masks on one grid):

* **Dice** ``2|A∩B| / (|A|+|B|)``.
* **Surface** ``∂A``: the voxels of ``A`` with at least one of their 6 face neighbours outside
  ``A``; the image border counts as outside. This is ``A XOR erosion(A)`` with a 3-D cross,
  exactly what MONAI's ``get_mask_edges`` returns without sub-voxel areas.
* **Directed distances** ``d(a, ∂B)`` for every ``a ∈ ∂A``: Euclidean distance in mm from the
  centre of ``a`` to the centre of the nearest voxel of ``∂B``, from an exact Euclidean distance
  transform with the voxel spacing (anisotropy included).
* **HD** (Hausdorff distance) ``max(max_a d(a, ∂B), max_b d(b, ∂A))``.
* **HD95** ``max(P95_a d(a, ∂B), P95_b d(b, ∂A))``: the larger of the two *directed* 95th
  percentiles, each with numpy's default (linear) interpolation. This is MONAI's
  ``compute_hausdorff_distance(percentile=95)``; other tools take the 95th percentile of the
  pooled distances or use surface-area weights, which gives slightly different numbers.
* **ASSD** (average symmetric surface distance): the mean of all distances of both directions
  pooled, ``(Σ_a d(a, ∂B) + Σ_b d(b, ∂A)) / (|∂A| + |∂B|)``, as MONAI's
  ``compute_average_surface_distance(symmetric=True)``.
* **NSD** (normalised surface Dice, Nikolov et al. 2021) at tolerance ``τ`` mm:
  ``(|{a ∈ ∂A : d(a, ∂B) ≤ τ}| + |{b ∈ ∂B : d(b, ∂A) ≤ τ}|) / (|∂A| + |∂B|)``, every surface
  voxel weighing the same. MONAI's ``compute_surface_dice(use_subvoxels=False)`` is the same
  number; DeepMind's ``surface-distance`` package (and MONAI with ``use_subvoxels=True``) weigh
  each surface element by its area instead, which differs by a few percent on curved surfaces.

Edge cases (never silently turned into a perfect score):

* both masks empty: every metric is undefined; the class is *absent in both* and left out of
  every aggregate (not counted as Dice 1.0).
* one mask empty: Dice and NSD are 0; HD, HD95 and ASSD are undefined (*empty prediction* or
  *empty reference*). Aggregates leave them out unless a ``distance_cap`` (mm) is given, which
  is then used in their place.

The pure functions return ``nan`` where a value is undefined; :func:`compare_masks` returns all
metrics at once with the reason. Work is confined to the bounding box of ``A ∪ B`` (see
:func:`compare_masks` for why that crop is exact).

Example:
    >>> import numpy as np
    >>> ref = np.zeros((8, 8, 8), bool); ref[2:6, 2:6, 2:6] = True
    >>> pred = np.roll(ref, 1, axis=2)
    >>> round(dice(pred, ref), 3)
    0.75
    >>> hausdorff_distance(pred, ref, spacing=(3.0, 1.0, 0.5))
    0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from mrseg.errors import InputError

METRICS: tuple[str, ...] = ("dice", "hd", "hd95", "assd", "nsd")
"""Names of the metrics, in report order."""

DISTANCE_METRICS: tuple[str, ...] = ("hd", "hd95", "assd")
"""Metrics in mm that are undefined when one mask is empty (a ``distance_cap`` may stand in)."""

METRIC_TITLES: dict[str, str] = {
    "dice": "Dice",
    "hd": "HD (mm)",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "nsd": "NSD",
}


class Status(str, Enum):
    """Why a class has (or lacks) values for a case."""

    OK = "ok"
    ABSENT = "absent in both"
    EMPTY_PREDICTION = "empty prediction"
    EMPTY_REFERENCE = "empty reference"
    MISSING_PREDICTION = "missing prediction"
    """The whole prediction file is missing; scored as an empty prediction and counted as a failure."""

    def __str__(self) -> str:
        return self.value


# ---------------------------------------------------------------------------------------------
# validation


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise InputError(
            f"spacing must give one voxel size per array axis ({ndim}), got {tuple(spacing)}; "
            "pass the spacing in numpy axis order, e.g. image.geometry.spacing_zyx"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"spacing must be positive and finite, got {values}")
    return values


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf":
        raise InputError(f"{name} must be a boolean mask, got dtype {array.dtype}")
    mask = array != 0
    if not np.array_equal(array[mask], np.ones(int(mask.sum()), array.dtype)):
        raise InputError(
            f"{name} must be a boolean (0/1) mask, got values other than 0 and 1; "
            "for a label map pass (labels == k) or use compare_labels"
        )
    return mask


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_mask, ref_mask = _as_mask(pred, "pred"), _as_mask(ref, "ref")
    if pred_mask.shape != ref_mask.shape:
        raise InputError(
            f"pred and ref must have the same shape, got {pred_mask.shape} and {ref_mask.shape}; "
            "resample the prediction onto the reference grid first"
        )
    if pred_mask.ndim == 0:
        raise InputError("pred and ref must be arrays with at least one axis, got scalars")
    return pred_mask, ref_mask


def _check_tolerance(tolerance: float) -> float:
    value = float(tolerance)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"NSD tolerance must be a finite distance >= 0 mm, got {tolerance}")
    return value


# ---------------------------------------------------------------------------------------------
# building blocks


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every True voxel, or None when empty."""
    slices = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        slices.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(slices)


def union_box(*boxes: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The bounding box of several boxes (None entries are empty and ignored)."""
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    return tuple(
        slice(min(b[axis].start for b in present), max(b[axis].stop for b in present))
        for axis in range(len(present[0]))
    )


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: those of ``mask`` with a face neighbour outside it (image border is outside).

    Equal to ``mask ^ scipy.ndimage.binary_erosion(mask)`` (6-connected cross, border value 0),
    computed with shifted views, which is several times faster.
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for axis in range(mask.ndim):
        for start, stop in ((None, -2), (2, None)):
            view = list(core)
            view[axis] = slice(start, stop)
            np.logical_and(interior, padded[tuple(view)], out=interior)
    return mask & ~interior


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances (mm) between a prediction and a reference.

    Attributes:
        pred_to_ref: for each prediction surface voxel, the distance to the nearest reference
            surface voxel (empty when either mask is empty).
        ref_to_pred: the same from each reference surface voxel to the prediction surface.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray


def _directed_distances(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> SurfaceDistances:
    """Distances between the surfaces of two non-empty masks already cropped to their union box."""
    surface_pred, surface_ref = surface(pred), surface(ref)
    to_ref = ndimage.distance_transform_edt(~surface_ref, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    return SurfaceDistances(pred_to_ref=to_ref[surface_pred], ref_to_pred=to_pred[surface_ref])


def _crop(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    box = union_box(bounding_box(pred), bounding_box(ref))
    if box is None:
        return None
    return pred[box], ref[box]


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float] | None = None
) -> SurfaceDistances:
    """Directed surface distances in mm both ways; empty arrays when either mask is empty.

    Args:
        pred: boolean prediction mask.
        ref: boolean reference mask of the same shape.
        spacing: voxel size in mm along the array's axes (numpy order, e.g.
            ``image.geometry.spacing_zyx``); a single number for isotropic voxels; None for 1 mm.

    Returns:
        The distances from each prediction surface voxel to the reference surface and back.

    Raises:
        InputError: shapes differ, masks are not binary, or the spacing is invalid.
    """
    pred_mask, ref_mask = _check_pair(pred, ref)
    sampling = _check_spacing(spacing, pred_mask.ndim)
    empty = np.zeros(0, dtype=np.float64)
    if not pred_mask.any() or not ref_mask.any():
        return SurfaceDistances(empty, empty)
    cropped = _crop(pred_mask, ref_mask)
    assert cropped is not None
    return _directed_distances(*cropped, sampling)


# ---------------------------------------------------------------------------------------------
# one mask pair, all metrics


@dataclass(frozen=True)
class MaskMetrics:
    """All metrics of one prediction/reference mask pair; None where a value is undefined.

    Attributes:
        status: why values are missing (:class:`Status`); ``ok`` when all are defined.
        pred_voxels: voxels in the prediction mask.
        ref_voxels: voxels in the reference mask.
        dice: Dice coefficient.
        hd: Hausdorff distance (mm).
        hd95: 95th-percentile Hausdorff distance (mm).
        assd: average symmetric surface distance (mm).
        nsd: normalised surface Dice at ``nsd_tolerance``.
        nsd_tolerance: the NSD tolerance (mm).
    """

    status: Status
    pred_voxels: int
    ref_voxels: int
    dice: float | None
    hd: float | None
    hd95: float | None
    assd: float | None
    nsd: float | None
    nsd_tolerance: float

    def value(self, metric: str) -> float | None:
        """The value of one metric by name (one of :data:`METRICS`)."""
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        result: float | None = getattr(self, metric)
        return result

    @classmethod
    def undefined(cls, status: Status, *, pred_voxels: int, ref_voxels: int, nsd_tolerance: float) -> MaskMetrics:
        """The metrics of a pair where one or both masks are empty."""
        one_empty = status is not Status.ABSENT
        score = 0.0 if one_empty else None
        return cls(status, pred_voxels, ref_voxels, score, None, None, None, score, nsd_tolerance)


def compare_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    nsd_tolerance: float = 2.0,
) -> MaskMetrics:
    """Dice, HD, HD95, ASSD and NSD of one mask pair, sharing the surface work.

    The work is done inside the bounding box of ``pred ∪ ref`` only, which is exact:

    * surfaces: a voxel just outside the box is outside both masks, exactly as the image
      border is treated, so every surface voxel and only those are found inside the box;
    * distances: every surface voxel of either mask lies inside the box, so the nearest
      surface voxel of the other mask to any surface voxel is inside the box too, and the
      distance transform of the cropped array gives the same distances as the full one.

    Args:
        pred: boolean prediction mask (0/1 integers accepted).
        ref: boolean reference mask of the same shape.
        spacing: voxel size in mm per array axis, numpy order (``image.geometry.spacing_zyx``).
        nsd_tolerance: NSD tolerance in mm.

    Returns:
        The metrics; see the module docstring for the definitions and the empty-mask cases.

    Raises:
        InputError: shapes differ, masks are not binary, spacing or tolerance invalid.
    """
    pred_mask, ref_mask = _check_pair(pred, ref)
    sampling = _check_spacing(spacing, pred_mask.ndim)
    tolerance = _check_tolerance(nsd_tolerance)
    cropped = _crop(pred_mask, ref_mask)
    if cropped is None:
        return MaskMetrics.undefined(Status.ABSENT, pred_voxels=0, ref_voxels=0, nsd_tolerance=tolerance)
    return _compare_cropped(*cropped, sampling, tolerance)


def _compare_cropped(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> MaskMetrics:
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred == 0 or n_ref == 0:
        if n_pred == n_ref == 0:
            status = Status.ABSENT
        else:
            status = Status.EMPTY_PREDICTION if n_pred == 0 else Status.EMPTY_REFERENCE
        return MaskMetrics.undefined(status, pred_voxels=n_pred, ref_voxels=n_ref, nsd_tolerance=tolerance)
    n_both = int(np.count_nonzero(pred & ref))
    d = _directed_distances(pred, ref, spacing)
    pooled = d.pred_to_ref.size + d.ref_to_pred.size
    within = int(np.count_nonzero(d.pred_to_ref <= tolerance) + np.count_nonzero(d.ref_to_pred <= tolerance))
    return MaskMetrics(
        status=Status.OK,
        pred_voxels=n_pred,
        ref_voxels=n_ref,
        dice=2.0 * n_both / (n_pred + n_ref),
        hd=float(max(d.pred_to_ref.max(), d.ref_to_pred.max())),
        hd95=float(max(np.percentile(d.pred_to_ref, 95), np.percentile(d.ref_to_pred, 95))),
        assd=float((d.pred_to_ref.sum() + d.ref_to_pred.sum()) / pooled),
        nsd=within / pooled,
        nsd_tolerance=tolerance,
    )


def compare_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    labels: Iterable[int],
    spacing: Sequence[float] | None = None,
    nsd_tolerance: float = 2.0,
) -> dict[int, MaskMetrics]:
    """Metrics for several classes of two label maps on the same grid, one class at a time.

    Bounding boxes of all labels come from one pass over each map
    (``scipy.ndimage.find_objects``); each class is then evaluated inside the box of its
    prediction ∪ reference only.

    Args:
        pred: integer label map (the prediction).
        ref: integer label map of the same shape (the reference).
        labels: label values to evaluate (> 0).
        spacing: voxel size in mm per array axis, numpy order.
        nsd_tolerance: NSD tolerance in mm.

    Returns:
        Label value → metrics, in the order given.

    Raises:
        InputError: shapes differ, maps are not integer, labels invalid, spacing invalid.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise InputError(
            f"pred and ref label maps must have the same shape, got {pred.shape} and {ref.shape}; "
            "resample the prediction onto the reference grid first"
        )
    for name, array in (("pred", pred), ("ref", ref)):
        if array.dtype.kind not in "iub":
            raise InputError(f"{name} must be an integer label map, got dtype {array.dtype}")
        if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
            raise InputError(f"{name} label map holds negative values (min {int(array.min())}); labels must be >= 0")
    wanted = [int(k) for k in labels]
    if any(k <= 0 for k in wanted):
        raise InputError(f"labels must be positive label values (0 is background), got {wanted}")
    sampling = _check_spacing(spacing, pred.ndim)
    tolerance = _check_tolerance(nsd_tolerance)
    if not wanted:
        return {}
    top = max(wanted)
    boxes_pred = label_bounding_boxes(pred, top)
    boxes_ref = label_bounding_boxes(ref, top)
    results: dict[int, MaskMetrics] = {}
    for k in wanted:
        box = union_box(boxes_pred[k - 1], boxes_ref[k - 1])
        if box is None:
            results[k] = MaskMetrics.undefined(Status.ABSENT, pred_voxels=0, ref_voxels=0, nsd_tolerance=tolerance)
        else:
            results[k] = _compare_cropped(pred[box] == k, ref[box] == k, sampling, tolerance)
    return results


def label_bounding_boxes(labels: np.ndarray, top: int) -> list[tuple[slice, ...] | None]:
    """Bounding boxes of labels 1..``top`` in one pass (entry ``k - 1`` for label ``k``; None if absent)."""
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    boxes: list[tuple[slice, ...] | None] = list(ndimage.find_objects(labels, max_label=top))
    return boxes + [None] * (top - len(boxes))


# ---------------------------------------------------------------------------------------------
# pure single-metric functions


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)``; ``nan`` when both masks are empty (never 1.0).

    Raises:
        InputError: shapes differ or the masks are not binary.
    """
    pred_mask, ref_mask = _check_pair(pred, ref)
    total = int(np.count_nonzero(pred_mask)) + int(np.count_nonzero(ref_mask))
    if total == 0:
        return math.nan
    return 2.0 * int(np.count_nonzero(pred_mask & ref_mask)) / total


def labelled_as(labels: np.ndarray, ref: np.ndarray) -> dict[int, float]:
    """Where a reference mask went: the share of its voxels that the label map ``labels`` gives
    each label (0 is background), largest share first (ties in label order); empty for an empty
    mask.

    Raises:
        InputError: shapes differ or ``ref`` is not binary.
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(ref):
        raise InputError(f"label map and reference differ in shape: {labels.shape} vs {np.shape(ref)}")
    mask = _as_mask(ref, "reference")
    values, counts = np.unique(labels[mask], return_counts=True)
    total = int(counts.sum())
    order = np.argsort(-counts, kind="stable")
    return {int(values[i]): int(counts[i]) / total for i in order}


def hausdorff_distance(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    percentile: float | None = None,
) -> float:
    """Symmetric Hausdorff distance in mm; ``nan`` when either mask is empty.

    Args:
        pred: boolean prediction mask.
        ref: boolean reference mask.
        spacing: voxel size in mm per array axis, numpy order.
        percentile: None for the maximum; else the larger of the two directed percentiles
            (linear interpolation), as MONAI's ``compute_hausdorff_distance``.

    Raises:
        InputError: invalid masks, spacing or percentile.
    """
    if percentile is not None and not 0 <= float(percentile) <= 100:
        raise InputError(f"percentile must be between 0 and 100, got {percentile}")
    d = surface_distances(pred, ref, spacing=spacing)
    if d.pred_to_ref.size == 0:
        return math.nan
    if percentile is None:
        return float(max(d.pred_to_ref.max(), d.ref_to_pred.max()))
    return float(max(np.percentile(d.pred_to_ref, percentile), np.percentile(d.ref_to_pred, percentile)))


def hd95(pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance in mm (max of the directed 95th percentiles); ``nan`` if a mask is empty."""
    return hausdorff_distance(pred, ref, spacing=spacing, percentile=95.0)


def average_symmetric_surface_distance(
    pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float] | None = None
) -> float:
    """Mean of the pooled surface distances of both directions, in mm; ``nan`` if a mask is empty."""
    d = surface_distances(pred, ref, spacing=spacing)
    if d.pred_to_ref.size == 0:
        return math.nan
    return float((d.pred_to_ref.sum() + d.ref_to_pred.sum()) / (d.pred_to_ref.size + d.ref_to_pred.size))


def normalized_surface_dice(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    tolerance: float = 2.0,
) -> float:
    """Normalised surface Dice at ``tolerance`` mm (surface voxels counted, not areas).

    Returns 0 when exactly one mask is empty and ``nan`` when both are.

    Raises:
        InputError: invalid masks, spacing or tolerance.
    """
    tau = _check_tolerance(tolerance)
    pred_mask, ref_mask = _check_pair(pred, ref)
    has_pred, has_ref = bool(pred_mask.any()), bool(ref_mask.any())
    if not has_pred and not has_ref:
        return math.nan
    if not has_pred or not has_ref:
        return 0.0
    d = surface_distances(pred_mask, ref_mask, spacing=spacing)
    within = np.count_nonzero(d.pred_to_ref <= tau) + np.count_nonzero(d.ref_to_pred <= tau)
    return float(within / (d.pred_to_ref.size + d.ref_to_pred.size))


# ---------------------------------------------------------------------------------------------
# aggregation


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one metric over cases.

    Attributes:
        n: values aggregated (capped ones included).
        n_missing: values undefined because a mask was empty and left out (no cap given).
        n_capped: values undefined and replaced by the cap.
        mean, sd: mean and sample standard deviation (``ddof=1``; nan for fewer than two values).
        median, q1, q3: median and quartiles (linear interpolation).
        minimum, maximum: extremes.
    """

    n: int
    n_missing: int
    n_capped: int
    mean: float
    sd: float
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: Iterable[float], *, n_missing: int = 0, n_capped: int = 0) -> Summary:
        """Summarise finite values (nan values are an error: pass undefined ones as ``n_missing``)."""
        array = np.asarray(list(values), dtype=np.float64)
        if array.size and not np.all(np.isfinite(array)):
            raise InputError("values to summarise must be finite; count undefined values as n_missing instead")
        if array.size == 0:
            nan = math.nan
            return cls(0, n_missing, n_capped, nan, nan, nan, nan, nan, nan, nan)
        q1, median, q3 = (float(v) for v in np.percentile(array, [25, 50, 75]))
        return cls(
            n=int(array.size),
            n_missing=n_missing,
            n_capped=n_capped,
            mean=float(array.mean()),
            sd=float(array.std(ddof=1)) if array.size > 1 else math.nan,
            median=median,
            q1=q1,
            q3=q3,
            minimum=float(array.min()),
            maximum=float(array.max()),
        )

    def mean_sd(self, digits: int = 3) -> str:
        """``"mean ± SD"`` (``"–"`` when there are no values; SD omitted for a single value)."""
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"

    def median_iqr(self, digits: int = 3) -> str:
        """``"median [Q1, Q3]"`` (``"–"`` when there are no values)."""
        if self.n == 0:
            return "–"
        return f"{self.median:.{digits}f} [{self.q1:.{digits}f}, {self.q3:.{digits}f}]"


@dataclass(frozen=True)
class MetricRecord:
    """The metrics of one class in one case, with the case's strata (dataset, sequence, ...)."""

    case: str
    label: str
    metrics: MaskMetrics
    strata: Mapping[str, str] = field(default_factory=dict)


def values_of(
    records: Iterable[MetricRecord],
    metric: str,
    *,
    distance_cap: float | None = None,
) -> tuple[list[float], int, int]:
    """The values of ``metric`` over records, applying the empty-mask rules.

    Returns:
        ``(values, n_missing, n_capped)``: records absent in both are skipped entirely;
        undefined distances (one mask empty) count as missing, or become ``distance_cap``.
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if distance_cap is not None and not (math.isfinite(distance_cap) and distance_cap >= 0):
        raise InputError(f"distance cap must be a finite distance >= 0 mm, got {distance_cap}")
    values: list[float] = []
    missing = capped = 0
    for record in records:
        if record.metrics.status is Status.ABSENT:
            continue
        value = record.metrics.value(metric)
        if value is not None:
            values.append(value)
        elif distance_cap is not None and metric in DISTANCE_METRICS:
            values.append(float(distance_cap))
            capped += 1
        else:
            missing += 1
    return values, missing, capped


class MetricAccumulator:
    """Collects per-case, per-class metrics and aggregates them; the stateful side of this module.

    Example:
        >>> import numpy as np
        >>> acc = MetricAccumulator(nsd_tolerance=2.0)
        >>> ref = np.zeros((6, 6, 6), bool); ref[1:5, 1:5, 1:5] = True
        >>> _ = acc.update(ref, ref, spacing=(2.0, 1.0, 1.0), case="a", label="liver")
        >>> _ = acc.update(np.zeros_like(ref), ref, spacing=(2.0, 1.0, 1.0), case="b", label="liver")
        >>> acc.aggregate("dice").mean, acc.aggregate("hd").n_missing
        (0.5, 1)
    """

    def __init__(self, *, nsd_tolerance: float = 2.0) -> None:
        self.nsd_tolerance = _check_tolerance(nsd_tolerance)
        self._records: list[MetricRecord] = []

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> tuple[MetricRecord, ...]:
        """Every record added so far, in order."""
        return tuple(self._records)

    def update(
        self,
        pred: np.ndarray,
        ref: np.ndarray,
        *,
        spacing: Sequence[float] | None,
        case: str,
        label: str,
        strata: Mapping[str, str] | None = None,
    ) -> MaskMetrics:
        """Compare one mask pair (see :func:`compare_masks`), store and return its metrics."""
        metrics = compare_masks(pred, ref, spacing=spacing, nsd_tolerance=self.nsd_tolerance)
        self.add(case, label, metrics, strata=strata)
        return metrics

    def add(self, case: str, label: str, metrics: MaskMetrics, *, strata: Mapping[str, str] | None = None) -> None:
        """Store metrics computed elsewhere (for example by :func:`compare_labels`)."""
        if not math.isclose(metrics.nsd_tolerance, self.nsd_tolerance):
            raise InputError(
                f"metrics for case {case!r}, class {label!r} use NSD tolerance {metrics.nsd_tolerance} mm, "
                f"this accumulator {self.nsd_tolerance} mm; compute them with the same tolerance"
            )
        self._records.append(MetricRecord(case, label, metrics, dict(strata or {})))

    def reset(self) -> None:
        """Forget every record."""
        self._records.clear()

    def select(self, *, label: str | None = None, where: Mapping[str, str] | None = None) -> list[MetricRecord]:
        """Records of one class (None: all) whose strata match every ``where`` entry."""
        chosen = []
        for record in self._records:
            if label is not None and record.label != label:
                continue
            if where and any(record.strata.get(k) != v for k, v in where.items()):
                continue
            chosen.append(record)
        return chosen

    def aggregate(
        self,
        metric: str,
        *,
        label: str | None = None,
        where: Mapping[str, str] | None = None,
        distance_cap: float | None = None,
    ) -> Summary:
        """Summary statistics of one metric over the selected records (see :func:`values_of`)."""
        values, missing, capped = values_of(self.select(label=label, where=where), metric, distance_cap=distance_cap)
        return Summary.of(values, n_missing=missing, n_capped=capped)

