"""Files for the tools annotators use, and corrected label maps taken back from them.

A draft goes out as:

- ``image.nii.gz``: the image (as the project has it);
- ``draft.nii.gz``: the draft label map on the image's grid (uint8, the model's label values);
- ``labels.txt``: an ITK-SNAP label description file (value, colour, visibility, name), so
  *Segmentation → Import Label Descriptions* in ITK-SNAP names and colours every structure;
- ``draft.seg.nrrd``: a 3D Slicer segmentation (written with ``slicerio``): one segment per class,
  named, coloured, with its DICOM/SNOMED terminology, empty ones included so the annotator can
  paint a structure the model missed.

A correction comes back as a label map (``.nii.gz``, ``.nrrd``, ``.mha``; the model's label
values) or as a Slicer ``.seg.nrrd`` (its segments matched by name). It must lie on the image's
grid (within a tolerance), hold only known labels and not be empty.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from mrseg.classes import class_colors, find_class
from mrseg.errors import InputError
from mrseg.io.files import read_image, write_atomic, write_bytes_atomic
from mrseg.io.image import Geometry, Image

ITKSNAP_LABELS = "labels.txt"
SLICER_SEGMENTATION = "draft.seg.nrrd"
SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMY = ["SCT", "123037004", "Anatomical Structure"]
TISSUE = ["SCT", "85756007", "Tissue"]
SIDES = {"left": ["SCT", "7771000", "Left"], "right": ["SCT", "24028007", "Right"]}
GRID_TOLERANCE = 1e-3
"""Relative tolerance on spacing and origin, absolute on direction cosines, for a correction's grid."""


def itksnap_labels(classes: Mapping[int, str]) -> str:
    """An ITK-SNAP label description file for label value → class name (background included)."""
    colours = class_colors(classes)
    lines = ["################################################",
             "# ITK-SnAP Label Description File (written by mrseg)",
             "# Columns: IDX  -R-  -G-  -B-  -A--  VIS MSH  LABEL",
             "################################################",
             f'{0:5d} {0:5d} {0:4d} {0:4d} {0.0:8.2f} {0:2d} {0:2d}    "Clear Label"']
    for value, name in sorted(classes.items()):
        red, green, blue = colours[value]
        lines.append(f'{value:5d} {red:5d} {green:4d} {blue:4d} {1.0:8.2f} {1:2d} {1:2d}    "{name}"')
    return "\n".join(lines) + "\n"


def read_itksnap_labels(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label value → name from an ITK-SNAP label description file (background left out)."""
    names = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        value = int(line.split()[0])
        if value:
            names[value] = line.split('"')[1]
    return names


def _terminology(name: str) -> dict[str, object] | None:
    entry = find_class(name)
    if entry is None or entry.coding is None:
        return None
    terminology: dict[str, object] = {
        "contextName": SLICER_CONTEXT,
        "category": TISSUE if entry.coding.category == "tissue" else ANATOMY,
        "type": ["SCT", entry.coding.code, entry.coding.meaning],
    }
    if entry.laterality is not None:
        terminology["typeModifier"] = SIDES[entry.laterality]
    return terminology


def write_slicer_segmentation(labels: Image, classes: Mapping[int, str], path: str | os.PathLike[str]) -> Path:
    """Write ``labels`` as a 3D Slicer ``.seg.nrrd``: one named, coloured segment per class of
    ``classes`` (label value → name), with its terminology; written to a temporary name, then
    renamed.

    Raises:
        InputError: slicerio is not installed.
    """
    try:
        import slicerio
    except ImportError as err:
        raise InputError("Slicer segmentations need slicerio: pip install 'mrseg[annotate]'") from err
    voxels = np.ascontiguousarray(labels.array.transpose(2, 1, 0))  # (z, y, x) → Slicer's (i, j, k)
    segmentation = slicerio.create_segmentation(voxels.shape, labels.geometry.affine_lps)
    colours = class_colors(classes)
    for value, name in sorted(classes.items()):
        segment: dict[str, object] = {"id": name, "name": name, "color": [c / 255.0 for c in colours[value]]}
        terminology = _terminology(name)
        if terminology is not None:
            segment["terminology"] = terminology
        slicerio.add_segment(segmentation, voxels == value, segment)
    return write_atomic(path, lambda temporary: slicerio.write_segmentation(str(temporary), segmentation),
                        suffix=".seg.nrrd")


def write_draft_files(image_path: Path, draft: Image, classes: Mapping[int, str], folder: Path) -> dict[str, Path]:
    """Write the files a draft goes out with (see the module docstring) into ``folder``; what a
    killed writer left there (hidden ``.part`` files older than an hour) goes."""
    from mrseg.io.files import remove_leftovers, write_image

    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    image_target = folder / "image.nii.gz"
    if not image_target.exists():
        write_image(read_image(image_path), image_target)
    files = {"image": image_target, "draft": write_image(draft, folder / "draft.nii.gz"),
             "itksnap_labels": write_bytes_atomic(folder / ITKSNAP_LABELS, itksnap_labels(classes)),
             "slicer": write_slicer_segmentation(draft, classes, folder / SLICER_SEGMENTATION)}
    return files


def read_correction(path: str | os.PathLike[str], image: Geometry, classes: Mapping[str, int]) -> Image:
    """A corrected label map, checked against the image's grid and the known classes.

    Args:
        path: a label map file, or a Slicer ``.seg.nrrd`` (segments matched by name).
        image: the grid of the case's image.
        classes: class name → label value.

    Raises:
        InputError: unreadable, another grid, unknown labels or segment names, empty.
    """
    path = Path(path)
    if path.name.endswith(".seg.nrrd"):
        labels = _read_slicer(path, classes)
    else:
        labels = read_image(path)
        if not np.issubdtype(labels.array.dtype, np.integer):
            values = labels.array
            if not np.array_equal(values, np.round(values)):
                raise InputError(f"{path}: not a label map (non-integer values); save the segmentation as labels")
            labels = labels.with_array(values.astype(np.int32))
    problems = image.differences(labels.geometry, tolerance=GRID_TOLERANCE)
    if problems:
        raise InputError(f"{path}: not on the image's grid ({'; '.join(problems)}); save the segmentation on "
                         "the image it was drawn on")
    present = set(np.unique(labels.array).tolist()) - {0}
    unknown = sorted(present - set(classes.values()))
    if unknown:
        raise InputError(f"{path}: labels {unknown[:10]} are not classes of the project (known: 1-"
                         f"{max(classes.values())}); relabel them or leave them out")
    if not present:
        raise InputError(f"{path}: the correction is empty (no labelled voxel); reject the case instead")
    return Image(labels.array.astype(np.uint8), image)


def _read_slicer(path: Path, classes: Mapping[str, int]) -> Image:
    try:
        import slicerio
    except ImportError as err:
        raise InputError("Slicer segmentations need slicerio: pip install 'mrseg[annotate]'") from err
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as err:  # slicerio/pynrrd raise many kinds on a damaged file
        raise InputError(f"{path}: not a readable Slicer segmentation ({err})") from err
    names = [s["name"] for s in segmentation.get("segments", [])]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise InputError(f"{path}: segments {unknown[:5]} are not classes of the project; rename them to class "
                         f"names such as {', '.join(list(classes)[:3])}")
    voxels = slicerio.extract_segments(segmentation, [(name, classes[name]) for name in names])["voxels"]
    array = np.ascontiguousarray(np.asarray(voxels).transpose(2, 1, 0))
    geometry = Geometry.from_affine_lps(np.asarray(segmentation["ijkToLPS"]), array.shape)  # type: ignore[arg-type]
    return Image(array, geometry)


__all__ = ["ITKSNAP_LABELS", "SLICER_SEGMENTATION", "itksnap_labels", "read_correction", "read_itksnap_labels",
           "write_draft_files", "write_slicer_segmentation"]
