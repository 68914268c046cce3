"""Per-class statistics of a label map: volume, voxel count, intensity, bounding box, border contact.

Each quantity takes one pass over the label map, not one masked pass per class: ``np.bincount``
for counts, sums and sums of squares, ``scipy.ndimage.find_objects`` for the boxes, and one
stable sort of the foreground voxels by label for the medians. On a 512×512×300 map with every
voxel in one of 40 classes (the worst case, 2 cores) the whole call took 29.8 s with
``scipy.ndimage.median`` (24.6 s of it the medians) and 10.2 s with the sort; ``example_ct``
(122×101×112) with its 40-class reference takes 0.27 s.

Example:
    >>> import numpy as np
    >>> from mrseg.io import Geometry, Image
    >>> geometry = Geometry((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> labels = np.zeros((4, 4, 4), np.uint8); labels[1:3, 1:3, 1:3] = 5
    >>> stats = class_statistics(Image(labels, geometry), names={5: "liver"})
    >>> stats[0].name, stats[0].voxels, stats[0].volume_ml, stats[0].touches_border
    ('liver', 8, 0.064, False)
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.io.image import Image


@dataclass(frozen=True)
class ClassStatistics:
    """One class of one label map.

    Attributes:
        label: label value.
        name: class name.
        voxels: number of voxels.
        volume_ml: voxels × voxel volume, in millilitres.
        mean, median, std: input intensity inside the class (None without an image or voxels).
        bbox_min, bbox_max: first and last voxel index inside the class, ITK order (x, y, z),
            inclusive (None when absent).
        bbox_min_mm, bbox_max_mm: per LPS axis the smallest and largest world coordinate (mm) of the
            box's corner voxel centres, so min <= max on every grid.
        touches_border: the class reaches a face of the image, so the structure may continue
            outside the field of view (its volume is then a lower bound).
        centroid_mm: the class's centre of mass in LPS world coordinates (mm; None when absent):
            where it lies relative to the other classes (left of, above, behind), whatever the grid.
    """

    label: int
    name: str
    voxels: int
    volume_ml: float
    mean: float | None
    median: float | None
    std: float | None
    bbox_min: tuple[int, int, int] | None
    bbox_max: tuple[int, int, int] | None
    bbox_min_mm: tuple[float, float, float] | None
    bbox_max_mm: tuple[float, float, float] | None
    touches_border: bool
    centroid_mm: tuple[float, float, float] | None = None


CSV_COLUMNS = ("label", "name", "voxels", "volume_ml", "mean", "median", "std", "bbox_min", "bbox_max",
               "bbox_min_mm", "bbox_max_mm", "touches_border", "centroid_mm")


def class_statistics(
    labels: Image,
    image: Image | None = None,
    *,
    names: Mapping[int, str],
    include_absent: bool = True,
) -> list[ClassStatistics]:
    """Statistics of every class in ``names`` (label value → name) in ``labels``.

    Args:
        labels: an integer label map.
        image: the intensity image on the same grid (None: no intensity statistics).
        names: the classes to report, label value → name (a model's catalogue).
        include_absent: report classes with no voxel too (voxels 0), so every case's table has
            the same rows.

    Raises:
        InputError: the label map is not integer, the image is on another grid, or the map
            holds values ``names`` does not know.
    """
    array = labels.array
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"labels must be an integer label map, got dtype {array.dtype}")
    if image is not None and not image.geometry.same_grid(labels.geometry):
        raise InputError("the image and the label map are on different grids (shape, spacing, origin or direction "
                         "differ); pass the image the labels were made from")
    flat = array.reshape(-1).astype(np.int64, copy=False)
    top = max([int(flat.max(initial=0)), *names]) + 1
    counts = np.bincount(flat, minlength=top)
    unknown = sorted({int(v) for v in np.flatnonzero(counts[1:]) + 1} - set(names))
    if unknown:
        raise InputError(f"the label map holds values {unknown[:10]} that the class list does not name; "
                         "pick the right model or catalogue")
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    if image is not None:
        values = image.array.reshape(-1).astype(np.float64)
        sums = np.bincount(flat, weights=values, minlength=top)
        squares = np.bincount(flat, weights=values * values, minlength=top)
    present = [int(v) for v in sorted(names) if counts[v] > 0]
    medians: dict[int, float] = {}
    if image is not None and present:
        medians = _medians(image.array.reshape(-1), array.reshape(-1), counts, present)
    boxes = _bounding_boxes(array, top)
    centroids = _centroids(array, counts, affine=labels.geometry.affine_lps)
    shape_zyx = array.shape
    affine = labels.geometry.affine_lps
    rows = []
    for value in sorted(names):
        n = int(counts[value]) if value < len(counts) else 0
        if n == 0 and not include_absent:
            continue
        mean = median = std = None
        if image is not None and n:
            mean = float(sums[value] / n)
            std = float(np.sqrt(max(squares[value] / n - mean * mean, 0.0)))
            median = medians[value]
        box = boxes.get(value) if n else None
        if box is None:
            bbox_min = bbox_max = None
            min_mm = max_mm = None
            border = False
        else:
            lo_zyx, hi_zyx = box
            bbox_min = (lo_zyx[2], lo_zyx[1], lo_zyx[0])
            bbox_max = (hi_zyx[2], hi_zyx[1], hi_zyx[0])
            min_mm, max_mm = _world_box(affine, bbox_min, bbox_max)
            border = any(lo == 0 for lo in lo_zyx) or any(hi == size - 1 for hi, size in zip(hi_zyx, shape_zyx))
        rows.append(ClassStatistics(value, names[value], n, round(n * voxel_ml, 6), mean, median, std, bbox_min,
                                    bbox_max, min_mm, max_mm, border, centroids.get(value) if n else None))
    return rows


def write_statistics(
    rows: list[ClassStatistics],
    base: str | os.PathLike[str],
    *,
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``BASE.json`` (with ``meta``) and ``BASE.csv``, each atomically; returns both paths."""
    base = Path(base)
    payload = {**(meta or {}), "classes": [asdict(row) for row in rows]}
    json_path = write_bytes_atomic(base.with_name(base.name + ".json"), json.dumps(payload, indent=2))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        record = asdict(row)
        writer.writerow(["" if record[c] is None else _csv_value(record[c]) for c in CSV_COLUMNS])
    csv_path = write_bytes_atomic(base.with_name(base.name + ".csv"), buffer.getvalue())
    return json_path, csv_path


def _medians(values: np.ndarray, flat_labels: np.ndarray, counts: np.ndarray, present: list[int]) -> dict[int, float]:
    """Median of ``values`` per label in ``present``: the foreground voxels sorted once by label
    (a stable sort of small integers), then each label's run is a contiguous slice."""
    foreground = np.flatnonzero(flat_labels)
    by_label = foreground[np.argsort(flat_labels[foreground], kind="stable")]
    grouped = values[by_label]
    ends = np.cumsum(counts[1:])
    return {v: float(np.median(grouped[ends[v - 1] - counts[v]:ends[v - 1]])) for v in present}


def _bounding_boxes(array: np.ndarray, top: int) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    from scipy import ndimage

    boxes = {}
    for index, found in enumerate(ndimage.find_objects(array, max_label=top - 1), start=1):
        if found is not None:
            boxes[index] = (tuple(s.start for s in found), tuple(s.stop - 1 for s in found))
    return boxes


def _centroids(array: np.ndarray, counts: np.ndarray, *, affine: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """Centre of mass of every present label in LPS mm: per numpy axis, the label histogram of each
    slice weighted by the slice index (three passes over the map, no coordinate arrays)."""
    top = len(counts)
    mean_index = np.zeros((top, 3))
    for axis in range(3):
        moved = np.moveaxis(array, axis, 0)
        per_slice = np.stack([np.bincount(moved[i].reshape(-1), minlength=top)[:top] for i in range(moved.shape[0])])
        mean_index[:, axis] = np.arange(moved.shape[0]) @ per_slice / np.maximum(counts, 1)
    index_xyz1 = np.column_stack([mean_index[:, ::-1], np.ones(top)])
    world = (affine @ index_xyz1.T).T[:, :3]
    return {v: tuple(round(float(c), 3) for c in world[v]) for v in np.flatnonzero(counts) if v > 0}  # type: ignore[misc]


def _world_box(affine: np.ndarray, low_xyz: tuple[int, int, int], high_xyz: tuple[int, int, int]
               ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The LPS box around the voxel-centre corners of an index box: per axis the smallest and
    largest coordinate of its eight corners (a flipped or oblique grid maps the first voxel to
    the larger coordinate)."""
    corners = np.array([[x, y, z, 1.0] for x in (low_xyz[0], high_xyz[0]) for y in (low_xyz[1], high_xyz[1])
                        for z in (low_xyz[2], high_xyz[2])])
    world = (affine @ corners.T).T[:, :3]
    low, high = world.min(axis=0), world.max(axis=0)
    return (tuple(round(float(v), 3) for v in low), tuple(round(float(v), 3) for v in high))  # type: ignore[return-value]


def _csv_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


__all__ = ["CSV_COLUMNS", "ClassStatistics", "class_statistics", "write_statistics"]
