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


DICOM_ARCHIVE_SUFFIXES = (".zip",)
"""File endings read as an archive of DICOM files (a PACS export)."""


def is_dicom_input(path: str | os.PathLike[str]) -> bool:
    """A folder, a zip archive or a DICOMDIR: read as a DICOM series, not as an image file."""
    path = Path(path)
    if path.is_dir():
        return True
    name = path.name.lower()
    return path.is_file() and (name == "dicomdir" or name.endswith(DICOM_ARCHIVE_SUFFIXES))


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The supported ending of ``path`` (``".nii.gz"``, ...) or None."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def case_name(path: str | os.PathLike[str]) -> str:
    """A case's name: the file name without its image or archive ending, the folder's name, or for a
    DICOMDIR the name of the folder holding it."""
    path = Path(path)
    if path.name.lower() == "dicomdir":
        return path.resolve().parent.name
    suffix = image_suffix(path) or next((s for s in DICOM_ARCHIVE_SUFFIXES if path.name.lower().endswith(s)), None)
    return path.name[: -len(suffix)] if suffix else path.name


__all__ = ["DICOM_ARCHIVE_SUFFIXES", "IMAGE_SUFFIXES", "LABEL_MAP_DESCRIPTION", "LABEL_NAME_ENDINGS", "case_name",
           "image_suffix", "is_dicom_input"]
