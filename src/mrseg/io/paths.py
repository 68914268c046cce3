"""What file names mean: which endings are images, a case's name, which names are label maps."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File endings read as images; a folder is read as a DICOM series."""

LABEL_MAP_DESCRIPTION = "mrseg label map"
"""What mrseg writes into a label map's header (NIfTI ``descrip``), so a folder scan can tell it
from an image without reading its voxels."""

LABEL_NAME_ENDINGS = ("_seg", "_labels", "_label", "_mask", "_combined", "_body_comp_seg", "_gt")
"""Name endings (before the file ending) of label maps: mrseg's outputs, ``mrseg phantom``'s
labels and the usual names of reference segmentations."""


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The supported ending of ``path`` (``".nii.gz"``, ...) or None."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def case_name(path: str | os.PathLike[str]) -> str:
    """A case's name: the file name without its image ending, or the folder's name."""
    path = Path(path)
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


__all__ = ["IMAGE_SUFFIXES", "LABEL_MAP_DESCRIPTION", "LABEL_NAME_ENDINGS", "case_name", "image_suffix"]
