"""Reading and writing image files and DICOM folders, with their exact geometry.

SimpleITK does the file work for every format, the same library nnU-Net and MRSegmentator
use, so an image gets the same geometry here as there. This module is the one place that
turns a ``SimpleITK.Image`` into an :class:`~mrseg.io.image.Image` and back.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from mrseg.errors import InputError
from mrseg.io.dicom import read_series_itk, select_series
from mrseg.io.image import Geometry, Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File endings read as images; a folder is read as a DICOM series."""


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The supported ending of ``path`` (``".nii.gz"``, ...) or None."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def case_name(path: str | os.PathLike[str]) -> str:
    """A case's name: the file name without its image ending, or the folder's name."""
    path = Path(path)
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def read_image(
    path: str | os.PathLike[str],
    *,
    series: str | None = None,
    channel: int | None = None,
) -> Image:
    """Read a NIfTI/MHA/NRRD file or a DICOM series folder.

    Args:
        path: an image file, or a folder holding one DICOM series (nested folders are searched).
        series: SeriesInstanceUID to pick when the folder holds several series.
        channel: which volume of a 4-D or multi-component image to use.

    Returns:
        The image with its geometry, voxel values as stored (not yet cast).

    Raises:
        InputError: missing, unreadable, truncated, 2-D or 4-D without ``channel``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        itk_image = read_series_itk(select_series(path, series))
    else:
        if image_suffix(path) is None:
            raise InputError(
                f"{path}: not a supported image file; use one of {', '.join(IMAGE_SUFFIXES)} "
                "or a DICOM folder"
            )
        itk_image = _read_itk_file(path)
    return _from_itk(itk_image, source=path, channel=channel)


def _read_itk_file(path: Path) -> object:
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(
            f"{path}: cannot read this image (file truncated, corrupt or not an image: {detail}); "
            "re-export or re-download it"
        ) from err


def _from_itk(itk_image: object, *, source: Path, channel: int | None) -> Image:
    import SimpleITK as sitk

    assert isinstance(itk_image, sitk.Image)
    dim = itk_image.GetDimension()
    components = itk_image.GetNumberOfComponentsPerPixel()
    if dim == 2:
        raise InputError(f"{source}: image is 2-D (size {itk_image.GetSize()}); a 3-D volume is needed")
    if dim > 4:
        raise InputError(f"{source}: image is {dim}-D; a 3-D volume is needed")
    try:
        array = sitk.GetArrayFromImage(itk_image)
    except RuntimeError as err:
        raise InputError(f"{source}: cannot read the voxel data ({err}); the file may be truncated") from err
    spacing = itk_image.GetSpacing()[:3]
    origin = itk_image.GetOrigin()[:3]
    direction = np.asarray(itk_image.GetDirection()).reshape(dim, dim)[:3, :3]

    if dim == 4 or components > 1:
        stacked = array if dim == 4 else np.moveaxis(array, -1, 0)
        what = "4-D" if dim == 4 else f"{components}-component"
        if channel is None:
            raise InputError(
                f"{source}: image is {what} with {stacked.shape[0]} volumes of shape {stacked.shape[1:]}; "
                "pick one with --channel N (channel=N in Python)"
            )
        if not 0 <= channel < stacked.shape[0]:
            raise InputError(f"{source}: channel {channel} out of range 0..{stacked.shape[0] - 1}")
        array = np.ascontiguousarray(stacked[channel])
    elif channel not in (None, 0):
        raise InputError(f"{source}: image has one channel, so --channel {channel} does not apply")

    return Image.from_array(array, spacing=spacing, origin=origin, direction=tuple(direction.ravel()))


def to_itk(image: Image) -> object:
    """The ``SimpleITK.Image`` of an image, geometry included."""
    import SimpleITK as sitk

    itk_image = sitk.GetImageFromArray(np.ascontiguousarray(image.array))
    itk_image.SetSpacing(image.geometry.spacing)
    itk_image.SetOrigin(image.geometry.origin)
    itk_image.SetDirection(image.geometry.direction)
    return itk_image


def write_image(image: Image, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write an image atomically: to a temporary name beside ``path``, then renamed.

    A crash never leaves a half-written file under the final name.
    """
    import SimpleITK as sitk

    path = Path(path)
    suffix = image_suffix(path)
    if suffix is None:
        raise InputError(f"{path}: output must end with one of {', '.join(IMAGE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(to_itk(image), tmp_name, compress)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_geometry(path: str | os.PathLike[str]) -> Geometry:
    """Geometry of an image file without reading its voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    return Geometry(
        shape=tuple(int(s) for s in reader.GetSize()[:3][::-1]),  # type: ignore[arg-type]
        spacing=tuple(reader.GetSpacing()[:3]),  # type: ignore[arg-type]
        origin=tuple(reader.GetOrigin()[:3]),  # type: ignore[arg-type]
        direction=tuple(np.asarray(reader.GetDirection()).reshape(dim, dim)[:3, :3].ravel()),  # type: ignore[arg-type]
    )
