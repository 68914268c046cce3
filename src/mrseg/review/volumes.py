"""Volumes for the review page: an image and its label map in display orientation, sliced on demand.

Both are brought to LPS once when a case is opened (``array[k, j, i]``: +i towards the patient's
left, +j posterior, +k superior), so every plane is a plain slice in radiological display
convention, patient right on screen left:

- axial ``k``: rows anterior → posterior, columns right → left;
- coronal ``j``: rows superior → inferior, columns right → left;
- sagittal ``i``: rows superior → inferior, columns anterior → posterior.

Loaded cases are kept in a small least-recently-used cache; :meth:`VolumeCache.warm` loads the
case the reviewer will probably open next in the background, so ``j`` shows it at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrseg.errors import InputError

log = logging.getLogger(__name__)

PLANES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class Slice:
    """One plane of one volume, ready to draw: rows top → bottom, columns left → right on screen."""

    array: np.ndarray
    row_spacing: float
    column_spacing: float


@dataclass(frozen=True)
class ReviewVolume:
    """An image and its labels on one grid, in LPS voxel order.

    Attributes:
        image: ``(k, j, i)`` intensities as stored (no float copy of the whole volume).
        labels: ``(k, j, i)`` label values.
        spacing: ``(i, j, k)`` voxel size in mm.
        window: default display range (0.5th and 99.5th percentile of the image).
        value_range: smallest and largest image value.
        centre: ``(i, j, k)``: the first slices shown (the centre of the labelled voxels).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    window: tuple[float, float]
    value_range: tuple[float, float]
    centre: tuple[int, int, int]

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.image.shape
        return i, j, k

    def count(self, plane: str) -> int:
        """Number of slices in ``plane``."""
        i, j, k = self.shape_ijk
        return {"axial": k, "coronal": j, "sagittal": i}[_plane(plane)]

    def plane(self, plane: str, index: int, *, layer: str = "image") -> Slice:
        """Slice ``index`` of ``plane`` of the image or the labels (``layer``), in display order.

        Raises:
            InputError: an unknown plane or layer, or an index outside the volume.
        """
        plane = _plane(plane)
        if layer not in ("image", "labels"):
            raise InputError(f"layer must be image or labels, got {layer!r}")
        if not 0 <= index < self.count(plane):
            raise InputError(f"{plane} slice {index} is outside 0 … {self.count(plane) - 1}")
        volume = self.image if layer == "image" else self.labels
        sx, sy, sz = self.spacing
        if plane == "axial":
            return Slice(volume[index], sy, sx)
        if plane == "coronal":
            return Slice(volume[::-1, index, :], sz, sx)
        return Slice(volume[::-1, :, index], sz, sy)


def _plane(plane: str) -> str:
    if plane not in PLANES:
        raise InputError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    return plane


def load_volume(image_path: Path, labels_path: Path) -> ReviewVolume:
    """Read an image and its label map and bring both to LPS.

    Raises:
        InputError: either file cannot be read, or the label map is not on the image's grid.
    """
    from mrseg.io import read_image
    from mrseg.io.orientation import reorient

    with ThreadPoolExecutor(max_workers=2) as pool:  # decompression releases the GIL: both files at once
        reading = pool.submit(read_image, labels_path)
        image = read_image(image_path)
        labels = reading.result()
    problems = image.geometry.differences(labels.geometry, tolerance=1e-3)
    if problems:
        raise InputError(f"{labels_path}: not on the grid of {image_path} ({'; '.join(problems)})")
    image_lps, _ = reorient(image, "LPS")
    labels_lps, _ = reorient(labels, "LPS")
    pixels = image_lps.array
    values = labels_lps.array
    if values.dtype.kind == "f":
        values = np.rint(values)
    values = values.astype(np.uint8 if values.size == 0 or values.max() <= 255 else np.uint16)
    step = max(1, int(round((pixels.size / 2_000_000) ** (1 / 3))))
    sample = np.asarray(pixels[::step, ::step, ::step], dtype=np.float32)
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if high <= low:
        high = low + 1.0
    found = np.argwhere(values[::2, ::2, ::2]) * 2 if values.any() else None
    if found is not None and len(found):
        k, j, i = (int(v) for v in np.median(found, axis=0))
    else:
        k, j, i = (n // 2 for n in values.shape)
    return ReviewVolume(np.ascontiguousarray(pixels), np.ascontiguousarray(values), image_lps.geometry.spacing,
                        (low, high), (float(sample.min()), float(sample.max())), (i, j, k))


class VolumeCache:
    """The last few opened cases, each loaded once even when asked for twice at the same time."""

    def __init__(self, *, capacity: int = 3) -> None:
        self.capacity = capacity
        self._futures: OrderedDict[tuple[str, str, float, float], Future[ReviewVolume]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="review-load")

    def get(self, image: Path, labels: Path) -> ReviewVolume:
        """The loaded volume (loading it now if nobody has yet).

        Raises:
            InputError: the files cannot be read (see :func:`load_volume`).
        """
        return self._future(image, labels).result()

    def warm(self, image: Path, labels: Path) -> None:
        """Start loading in the background; returns at once."""
        self._future(image, labels)

    def _future(self, image: Path, labels: Path) -> Future[ReviewVolume]:
        key = (str(image), str(labels), _mtime(image), _mtime(labels))
        with self._lock:
            future = self._futures.get(key)
            if future is None or (future.done() and future.exception() is not None):
                future = self._pool.submit(load_volume, image, labels)
                self._futures[key] = future
            self._futures.move_to_end(key)
            while len(self._futures) > self.capacity:
                self._futures.popitem(last=False)
            return future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
