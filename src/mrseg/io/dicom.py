"""DICOM series discovery and reading.

pydicom reads the headers (recursively, so nested folders work) and groups files by
SeriesInstanceUID; SimpleITK (GDCM) decodes the pixels, which covers compressed transfer
syntaxes such as JPEG 2000 without extra plugins.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrseg.errors import InputError
from mrseg.io.paths import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import SimpleITK as sitk

log = logging.getLogger(__name__)

_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesDescription", "Modality", "ImagePositionPatient",
    "ImageOrientationPatient", "InstanceNumber", "Rows",
]


@dataclass(frozen=True)
class DicomSeries:
    """One image series found in a folder, its files sorted along the slice normal."""

    uid: str
    description: str
    modality: str
    files: tuple[Path, ...]
    positions: tuple[float, ...] | None = None
    """Slice positions along the normal (mm), sorted; None when the headers lack them."""

    def summary(self) -> str:
        text = self.description or "(no description)"
        return f"{self.uid}  {self.modality or '?'}  {text!r}  {len(self.files)} slices"


def find_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """All image series under ``folder`` (searched recursively), largest first."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    groups: dict[str, list[tuple[Path, object]]] = {}
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            except (InvalidDicomError, OSError, ValueError, EOFError):
                continue
            uid = getattr(ds, "SeriesInstanceUID", None)
            if uid is None or getattr(ds, "Rows", None) is None:
                continue  # not an image (DICOMDIR, structured report, ...)
            groups.setdefault(str(uid), []).append((path, ds))

    series = []
    for uid, members in groups.items():
        first = members[0][1]
        ordered = sorted(members, key=_slice_key)
        positions = [_slice_key(m)[0] for m in ordered]
        located = all(getattr(ds, "ImagePositionPatient", None) is not None for _, ds in ordered)
        series.append(
            DicomSeries(
                uid=uid,
                description=str(getattr(first, "SeriesDescription", "") or ""),
                modality=str(getattr(first, "Modality", "") or ""),
                files=tuple(path for path, _ in ordered),
                positions=tuple(positions) if located else None,
            )
        )
    series.sort(key=lambda s: (-len(s.files), s.uid))
    return series


def _slice_key(item: tuple[Path, object]) -> tuple[float, float, str]:
    """Sort key of a slice: position along the slice normal, then instance number."""
    path, ds = item
    position = getattr(ds, "ImagePositionPatient", None)
    orientation = getattr(ds, "ImageOrientationPatient", None)
    instance = float(getattr(ds, "InstanceNumber", 0) or 0)
    if position is None or orientation is None:
        return (instance, instance, str(path))
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return (float(np.dot(np.asarray(position, float), np.cross(row, col))), instance, str(path))


def check_slice_spacing(series: DicomSeries, *, tolerance: float = 0.01) -> None:
    """Refuse gaps, duplicates and uneven spacing, which a 3-D grid cannot represent.

    SimpleITK would only warn and spread the slices evenly, misplacing them.
    """
    if series.positions is None or len(series.positions) < 3:
        return
    steps = np.diff(series.positions)
    typical = float(np.median(steps))
    where = f"DICOM series {series.uid} ({len(series.files)} files in {series.files[0].parent})"
    if typical <= 1e-6 or np.any(steps <= 1e-6):
        raise InputError(
            f"{where}: several slices share one position (multi-echo, multi-phase or duplicated files?); "
            "split the series or remove the duplicates"
        )
    if np.max(np.abs(steps - typical)) > tolerance * typical + 1e-3:
        raise InputError(
            f"{where}: slice spacing is uneven ({steps.min():.3g} to {steps.max():.3g} mm; missing slices?); "
            "a complete series with even slice spacing is needed"
        )


def select_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> DicomSeries:
    """The one series to read from ``folder``; several without ``series_uid`` is an error."""
    found = find_series(folder)
    if not found:
        raise InputError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder and no DICOM "
            "image files in it or below it; give image files or a DICOM series folder"
        )
    if series_uid is not None:
        for s in found:
            if s.uid == series_uid:
                return s
        listing = "\n  ".join(s.summary() for s in found)
        raise InputError(f"{folder}: no series with UID {series_uid}; series found:\n  {listing}")
    if len(found) > 1:
        listing = "\n  ".join(s.summary() for s in found)
        raise InputError(
            f"{folder} holds {len(found)} DICOM series; choose one with --series UID "
            f"(series=... in Python):\n  {listing}"
        )
    return found[0]


def read_series_itk(series: DicomSeries) -> "sitk.Image":
    """Decode a series with SimpleITK; returns the ``SimpleITK.Image``."""
    import SimpleITK as sitk

    check_slice_spacing(series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(
            f"cannot decode DICOM series {series.uid} ({len(series.files)} files from "
            f"{series.files[0].parent}): {str(err).strip().splitlines()[-1]}"
        ) from err
