"""After the export: nnU-Net's connected-component steps, keep a subset of the classes, or split a
label map into one mask per class.

Example:
    >>> import numpy as np
    >>> from mrseg.classes import resolve_classes
    >>> from mrseg.io import Geometry, Image
    >>> g = Geometry((1, 1, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> keep = resolve_classes(["liver", "1"], {"spleen": 1, "liver": 5})
    >>> keep
    {'spleen': 1, 'liver': 5}
    >>> select_classes(Image(np.array([[[1, 5, 13]]], np.uint8), g), keep.values()).array.tolist()
    [[[1, 5, 0]]]
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from mrseg.errors import InputError
from mrseg.io.files import write_image
from mrseg.io.image import Image
from mrseg.model.postprocessing import KeepLargestComponent


def keep_largest_components(labels: np.ndarray, steps: Sequence[KeepLargestComponent]) -> np.ndarray:
    """``labels`` after each step in turn: of the voxels labelled any of the step's labels, only
    the largest 26-connected component (all of them where several share the largest size) keeps
    its labels; the others become background. nnU-Net's
    ``remove_all_but_largest_component_from_segmentation``, voxel for voxel; ``labels`` is not
    changed.

    Example:
        >>> a = np.array([[[1, 1, 0, 1, 2, 0, 2, 2]]], np.uint8)
        >>> keep_largest_components(a, [KeepLargestComponent((1,))]).tolist()
        [[[1, 1, 0, 0, 2, 0, 2, 2]]]
    """
    from scipy import ndimage

    result = np.array(labels, copy=True)
    if not steps:
        return result
    # Steps only ever clear voxels, so each label's box from before the first step still holds it.
    boxes = ndimage.find_objects(result)
    structure = ndimage.generate_binary_structure(result.ndim, result.ndim)  # 26-connected in 3-D, as nnU-Net
    for step in steps:
        present = [boxes[v - 1] for v in step.labels if v - 1 < len(boxes) and boxes[v - 1] is not None]
        if not present:
            continue
        box = tuple(slice(min(s[d].start for s in present), max(s[d].stop for s in present))
                    for d in range(result.ndim))
        part = result[box]
        inside = np.isin(part, step.labels)
        components, count = ndimage.label(inside, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        part[inside & (sizes[components] != sizes.max())] = 0
    return result


def apply_postprocessing(labels: Image, steps: Sequence[KeepLargestComponent]) -> Image:
    """The label map after a model's postprocessing steps (:func:`keep_largest_components`)."""
    return labels.with_array(keep_largest_components(labels.array, steps)) if steps else labels


def select_classes(labels: Image, values: Iterable[int]) -> Image:
    """The label map with every class not in ``values`` set to background (values unchanged)."""
    keep = np.zeros(max(int(labels.array.max(initial=0)), *values, 0) + 1, dtype=bool)
    keep[list(values)] = True
    keep[0] = True
    array = labels.array
    return labels.with_array(np.where(keep[array], array, 0).astype(array.dtype, copy=False))


def write_class_masks(labels: Image, classes: Mapping[str, int], folder: str | os.PathLike[str]) -> Path:
    """One binary uint8 mask per class, ``FOLDER/<name>.nii.gz`` (empty ones included).

    The masks are written into a hidden folder beside ``folder`` that is renamed into place at the
    end, so an interrupted run never leaves a folder with some masks missing.
    """
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.writing-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        for name, value in classes.items():
            write_image(labels.with_array((labels.array == value).astype(np.uint8)), staging / f"{name}.nii.gz")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def combine_label_maps(maps: Sequence[Image], offsets: Sequence[int]) -> Image:
    """One label map from several models' maps on the same grid.

    Model ``k``'s labels are shifted by ``offsets[k]`` (so 1–10 of a body-composition model after
    the 40 base classes become 41–50); where two models label a voxel, the earlier one wins.

    Raises:
        InputError: the maps are on different grids, or a shifted value does not fit in uint8/uint16.
    """
    if len(maps) != len(offsets) or not maps:
        raise InputError(f"need one offset per label map, got {len(maps)} maps and {len(offsets)} offsets")
    first = maps[0]
    for other in maps[1:]:
        if not other.geometry.same_grid(first.geometry):
            raise InputError("the label maps to combine are on different grids")
    top = max(int(m.array.max(initial=0)) + o for m, o in zip(maps, offsets))
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    combined = np.zeros(first.array.shape, dtype)
    for labels, offset in zip(reversed(maps), reversed(list(offsets))):
        inside = labels.array > 0
        combined[inside] = labels.array[inside].astype(dtype) + offset
    return first.with_array(combined)


def combined_classes(models: Sequence[Mapping[str, int]]) -> tuple[list[int], dict[int, str]]:
    """Offsets and the combined value → name table for several models' classes (name → value).

    Names that two models share get the later model's name prefixed with its position
    (``2:liver``), so the table stays one-to-one.
    """
    offsets: list[int] = []
    table: dict[int, str] = {}
    offset = 0
    for position, foreground in enumerate(models, start=1):
        offsets.append(offset)
        for name, value in foreground.items():
            shown = name if name not in table.values() else f"{position}:{name}"
            table[value + offset] = shown
        offset += max(foreground.values(), default=0)
    return offsets, table


__all__ = ["apply_postprocessing", "combine_label_maps", "combined_classes", "keep_largest_components",
           "select_classes", "write_class_masks"]
