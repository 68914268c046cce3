"""DICOM series discovery and reading.

pydicom reads the headers (recursively, so nested folders work) and groups files by
SeriesInstanceUID; SimpleITK (GDCM) decodes the pixels, which covers compressed transfer
syntaxes such as JPEG 2000 without extra plugins.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrseg.errors import InputError
from mrseg.io.paths import DICOM_ARCHIVE_SUFFIXES, IMAGE_SUFFIXES

if TYPE_CHECKING:
    import SimpleITK as sitk

log = logging.getLogger(__name__)

_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesDescription", "Modality", "ImagePositionPatient",
    "ImageOrientationPatient", "InstanceNumber", "Rows", "PixelSpacing",
]


@dataclass(frozen=True)
class Shear:
    """A sheared stack: slices that advance along another direction than their normal.

    Attributes:
        first: ImagePositionPatient of the first slice (LPS mm).
        step: the mean advance from one slice to the next (LPS mm), not parallel to the normal.
        orientation: ImageOrientationPatient (row direction, column direction).
        degrees: the angle between ``step`` and the slice normal (the gantry tilt for a tilted CT).
    """

    first: tuple[float, float, float]
    step: tuple[float, float, float]
    orientation: tuple[float, ...]
    degrees: float


@dataclass(frozen=True)
class DicomSeries:
    """One image series found in a folder, its files sorted along the slice normal."""

    uid: str
    description: str
    modality: str
    files: tuple[Path, ...]
    positions: tuple[float, ...] | None = None
    """Slice positions along the normal (mm), sorted; None when the headers lack them."""
    shear: Shear | None = None
    """Where the slices do not advance along their normal (a gantry-tilted CT): how they do."""
    keep: object = field(default=None, compare=False, repr=False)
    """What must live as long as the series (the temporary folder of an extracted zip archive)."""

    def summary(self) -> str:
        text = self.description or "(no description)"
        return f"{self.uid}  {self.modality or '?'}  {text!r}  {len(self.files)} slices"


def find_series(source: str | os.PathLike[str]) -> list[DicomSeries]:
    """All image series in ``source``, largest first: a folder (searched recursively), a zip
    archive of DICOM files (extracted to a temporary folder that lives as long as its series),
    or a DICOMDIR (the files it lists).

    Raises:
        InputError: an archive that cannot be read or whose members would land outside it, or a
            DICOMDIR that cannot be read.
    """
    source = Path(source)
    keep: object = None
    if source.is_dir():
        files = _walk(source)
    elif source.name.lower() == "dicomdir":
        files = _dicomdir_files(source)
    elif source.name.lower().endswith(DICOM_ARCHIVE_SUFFIXES):
        keep = _Extraction(source)
        files = _walk(keep.folder)  # type: ignore[attr-defined]
    else:
        raise InputError(f"{source}: not a DICOM folder, zip archive or DICOMDIR")
    return _group(files, keep)


def _walk(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(folder) for name in sorted(names)]


def _dicomdir_files(path: Path) -> list[Path]:
    """The files a DICOMDIR lists (pydicom's FileSet), where they exist."""
    from pydicom.errors import InvalidDicomError
    from pydicom.fileset import FileSet

    try:
        fileset = FileSet(str(path))
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError) as err:
        raise InputError(f"{path}: cannot read this DICOMDIR ({err}); give the folder of the DICOM files "
                         "instead") from err
    files = [Path(instance.path) for instance in fileset]
    missing = [f for f in files if not f.is_file()]
    if missing:
        log.warning("%s lists %d file(s) that are not there (the first: %s)", path, len(missing), missing[0])
    return [f for f in files if f.is_file()]


class _Extraction:
    """A zip archive extracted into a private temporary folder, removed when nothing uses it."""

    def __init__(self, archive: Path) -> None:
        import shutil
        import tempfile
        import weakref
        import zipfile

        self.folder = Path(tempfile.mkdtemp(prefix="mrseg-dicom-zip-"))
        weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        try:
            with zipfile.ZipFile(archive) as opened:
                for member in opened.infolist():
                    if member.is_dir():
                        continue
                    parts = Path(member.filename.replace("\\", "/")).parts
                    if member.filename.startswith(("/", "\\")) or ".." in parts or not parts or ":" in parts[0]:
                        raise InputError(f"{archive}: member {member.filename!r} would land outside the archive's "
                                         "folder; not extracted (a damaged or malicious archive)")
                    if (member.external_attr >> 16) & 0o170000 == 0o120000:
                        continue  # a symbolic link: never followed
                    target = self.folder.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with opened.open(member) as reading, open(target, "wb") as writing:
                        shutil.copyfileobj(reading, writing, 1 << 20)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise InputError(f"{archive}: cannot read this zip archive ({err}); re-export it") from err


def _group(files: list[Path], keep: object = None) -> list[DicomSeries]:
    """The image series among ``files`` (one per SeriesInstanceUID), largest first."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list[tuple[Path, object]]] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if getattr(ds, "Rows", None) is None:
            continue  # not an image (DICOMDIR, structured report, ...)
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")  # anonymised exports may lack it: one group
        groups.setdefault(uid, []).append((path, ds))

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
                shear=_shear([ds for _, ds in ordered]) if located else None,
                keep=keep,
            )
        )
    series.sort(key=lambda s: (-len(s.files), s.uid))
    return series


def _shear(slices: list) -> Shear | None:  # type: ignore[type-arg]
    """How a stack of slices is sheared, or None when each slice lies along the normal of the first
    (within half a pixel over the whole stack)."""
    if len(slices) < 2 or getattr(slices[0], "ImageOrientationPatient", None) is None:
        return None
    orientation = np.asarray([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    first = np.asarray([float(v) for v in slices[0].ImagePositionPatient])
    last = np.asarray([float(v) for v in slices[-1].ImagePositionPatient])
    advance = last - first
    lateral = float(np.linalg.norm(advance - np.dot(advance, normal) * normal))
    spacing = getattr(slices[0], "PixelSpacing", None)
    pixel = min(float(v) for v in spacing) if spacing else 1.0
    if lateral <= 0.5 * pixel:
        return None
    degrees = float(np.degrees(np.arctan2(lateral, abs(float(np.dot(advance, normal))))))
    step = advance / (len(slices) - 1)
    return Shear(tuple(first), tuple(step), tuple(orientation), degrees)  # type: ignore[arg-type]


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
    uneven = np.abs(steps - typical) > tolerance * typical + 1e-3
    if np.any(uneven):
        gaps = [n for n in np.flatnonzero(uneven) if steps[n] > 1.5 * typical]
        if gaps:
            n = int(gaps[0])
            missing = int(round(steps[n] / typical)) - 1
            more = f" (and {len(gaps) - 1} more gap(s))" if len(gaps) > 1 else ""
            raise InputError(
                f"{where}: {missing} slice(s) missing between {series.positions[n]:.4g} mm and "
                f"{series.positions[n + 1]:.4g} mm along the slice normal (files {series.files[n].name} and "
                f"{series.files[n + 1].name}; the other slices are {typical:.3g} mm apart){more}; "
                "a complete series is needed: export it again with every slice"
            )
        raise InputError(
            f"{where}: slice spacing is uneven ({steps.min():.3g} to {steps.max():.3g} mm); "
            "a series with even slice spacing is needed"
        )


def select_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> DicomSeries:
    """The one series to read from ``folder`` (a folder, a zip archive or a DICOMDIR); several
    without ``series_uid`` is an error."""
    found = find_series(folder)
    if not found:
        if Path(folder).is_dir():
            raise InputError(
                f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder and no DICOM "
                "image files in it or below it; give image files or a DICOM series folder"
            )
        raise InputError(f"{folder}: no DICOM image files in it; give a zip archive or DICOMDIR of a DICOM series")
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
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(
            f"cannot decode DICOM series {series.uid} ({len(series.files)} files from "
            f"{series.files[0].parent}): {str(err).strip().splitlines()[-1]}"
        ) from err
    if series.shear is not None:
        log.warning("DICOM series %s: the slices advance %.1f° off their normal (gantry tilt); resampled onto a "
                    "regular grid, so the labels are on that grid, not on the slices", series.uid,
                    series.shear.degrees)
        image = regular_grid(image, series.shear)
    return image


def regular_grid(image: "sitk.Image", shear: Shear) -> "sitk.Image":
    """A sheared stack (the slices as read, in order) resampled (linearly) onto a regular grid.

    The grid keeps the slices' row direction and pixel sizes and takes the direction the slices
    advance along (the table axis of a tilted CT) as its third axis, with the slice step as its
    spacing; it covers the whole stack, and voxels outside it get the smallest value of the image.
    """
    import SimpleITK as sitk

    dx, dy = image.GetSpacing()[:2]
    orientation = np.asarray(shear.orientation)
    row, column = orientation[:3], orientation[3:]
    step = np.asarray(shear.step)
    source = np.column_stack([dx * row, dy * column, step])  # (c, r, k) → world offset from the first slice
    axis_z = step / np.linalg.norm(step)
    axis_y = np.cross(axis_z, row)
    axis_y /= np.linalg.norm(axis_y)
    axis_z = np.cross(row, axis_y)
    axes = np.column_stack([row, axis_y, axis_z])
    spacing = np.array([dx, dy, abs(float(np.dot(step, axis_z)))])
    size = np.asarray(image.GetSize(), float)
    corners = np.array([[c, r, k] for c in (0, size[0] - 1) for r in (0, size[1] - 1) for k in (0, size[2] - 1)])
    world = corners @ source.T + np.asarray(shear.first)
    local = world @ axes
    low, high = local.min(axis=0), local.max(axis=0)
    shape = np.maximum(np.ceil((high - low) / spacing - 1e-6).astype(int) + 1, 1)
    reference = sitk.Image([int(v) for v in shape], image.GetPixelID())
    reference.SetSpacing([float(v) for v in spacing])
    reference.SetOrigin([float(v) for v in axes @ low])
    reference.SetDirection([float(v) for v in axes.ravel()])
    indexed = sitk.Image(image)  # the stack as it is stored: physical point = voxel index (c, r, k)
    indexed.SetSpacing((1.0, 1.0, 1.0))
    indexed.SetOrigin((0.0, 0.0, 0.0))
    indexed.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    inverse = np.linalg.inv(source)
    to_index = sitk.AffineTransform(3)
    to_index.SetMatrix([float(v) for v in inverse.ravel()])
    to_index.SetTranslation([float(v) for v in -inverse @ np.asarray(shear.first)])
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(indexed, reference, to_index, sitk.sitkLinear, lowest, image.GetPixelID())
