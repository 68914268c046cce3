"""Reading and writing image files and DICOM folders, with their exact geometry.

SimpleITK does the file work for every format, the same library nnU-Net and MRSegmentator
use, so an image gets the same geometry here as there. This module is the one place that
turns a ``SimpleITK.Image`` into an :class:`~mrseg.io.image.Image` and back.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from mrseg.errors import InputError

if TYPE_CHECKING:
    import SimpleITK as sitk
from mrseg.io.dicom import DicomSeries, read_series_itk, select_series
from mrseg.io.image import Geometry, Image
from mrseg.io.paths import (
    IMAGE_SUFFIXES,
    LABEL_MAP_DESCRIPTION,
    LABEL_NAME_ENDINGS,
    case_name,
    image_suffix,
    is_dicom_input,
)

log = logging.getLogger(__name__)

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
    if is_dicom_input(path):
        return read_series(select_series(path, series), channel=channel, source=path)
    if image_suffix(path) is None:
        raise InputError(
            f"{path}: not a supported image file; use one of {', '.join(IMAGE_SUFFIXES)} "
            "or a DICOM folder"
        )
    return _from_itk(_read_itk_file(path), source=path, channel=channel)


def read_series(series: DicomSeries, *, channel: int | None = None, source: Path | None = None) -> Image:
    """Read a DICOM series already found (:func:`mrseg.io.dicom.select_series`), so a caller that
    also needs the series itself (DICOM-SEG output) scans the folder's headers once.

    Args:
        series: the series.
        channel: as for :func:`read_image`.
        source: the path named in errors (default: the first slice's folder).
    """
    return _from_itk(read_series_itk(series), source=source or series.files[0].parent, channel=channel)


def _check_nifti_complete(path: Path) -> None:
    """Refuse a truncated or corrupt NIfTI file: SimpleITK reads one silently, filling the gap.

    The header says how many bytes the file must hold. ``.nii`` files are checked by size;
    ``.nii.gz`` files are decompressed once as a stream (gzip verifies its CRC and end marker),
    which costs well under a second per 100 MB and catches a cut download.
    """
    import nibabel as nib

    try:
        header: Any = nib.load(str(path)).header
        data_bytes = int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        expected = max(int(header.get_data_offset()), int(header.sizeof_hdr) + 4) + data_bytes
    except Exception as err:  # nibabel raises many kinds on a damaged header
        raise InputError(f"{path}: cannot read this image (file truncated, corrupt or not an image: {err})") from err
    if path.name.lower().endswith(".gz"):
        total = 0
        try:
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 24):
                    total += len(chunk)
        except (EOFError, OSError, gzip.BadGzipFile) as err:
            raise InputError(
                f"{path}: cannot read this image (file truncated or corrupt: {err}); re-export or re-download it"
            ) from err
    else:
        total = path.stat().st_size
    if total < expected:
        raise InputError(
            f"{path}: cannot read this image (file truncated: the header promises {expected} bytes, "
            f"the file holds {total}); re-export or re-download it"
        )


def _read_itk_file(path: Path) -> "sitk.Image":
    import SimpleITK as sitk

    if image_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        truncated = _missing_voxel_bytes(path)
        if truncated:
            raise InputError(f"{path}: cannot read this image (file truncated: {truncated}); "
                             "re-export or re-download it") from err
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(
            f"{path}: cannot read this image (file truncated, corrupt or not an image: {detail}); "
            "re-export or re-download it"
        ) from err


def _missing_voxel_bytes(path: Path) -> str | None:
    """Why an uncompressed MHA/MHD/NRRD file cannot hold the voxels its header promises, or None.

    ITK reports such a file as "No such file or directory"; the header and the file size tell
    the real reason.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    keys = set(reader.GetMetaDataKeys())
    if any(reader.GetMetaData(k).strip().lower() in ("true", "gzip", "gz") for k in keys
           if k.lower() in ("compresseddata", "encoding")):
        return None
    pixel_bytes = {1: 1, 0: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 8, 7: 8, 8: 4, 9: 8}.get(reader.GetPixelID())
    if pixel_bytes is None:
        return None
    size = reader.GetSize()
    promised = int(np.prod(size)) * pixel_bytes * max(reader.GetNumberOfComponents(), 1)
    held = path.stat().st_size
    if held >= promised:
        return None
    shape = "x".join(str(s) for s in size)
    return f"the header promises {shape} voxels ({promised:,} bytes), the file holds {held:,} bytes"


def label_map_reason(path: str | os.PathLike[str], *, postfixes: tuple[str, ...] = ()) -> str | None:
    """Why the file at ``path`` looks like a label map rather than an image, or None.

    By name (``*_seg``, ``*_labels``, ... and ``*_<postfix>`` for ``postfixes``), then by a cheap
    header read: mrseg's :data:`LABEL_MAP_DESCRIPTION`, or NIfTI's label intent (1002).
    """
    import SimpleITK as sitk

    path = Path(path)
    name = case_name(path)
    endings = LABEL_NAME_ENDINGS + tuple(f"_{p}" for p in postfixes)
    for ending in endings:
        if name.endswith(ending):
            return f"its name ends in {ending}"
    if image_suffix(path) not in (".nii", ".nii.gz"):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # unreadable: the case reports it
    keys = set(reader.GetMetaDataKeys())
    if "descrip" in keys and reader.GetMetaData("descrip").startswith(LABEL_MAP_DESCRIPTION):
        return "its header says it is an mrseg label map"
    if "intent_code" in keys and reader.GetMetaData("intent_code").strip() == "1002":
        return "its header says it is a label map (NIfTI intent 1002)"
    return None


def _from_itk(itk_image: "sitk.Image", *, source: Path, channel: int | None) -> Image:
    import SimpleITK as sitk

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

    if dim == 4 and components == 1 and array.shape[0] == 1:
        dim, array = 3, array[0]  # one volume (an enhanced multi-frame series, a 4-D NIfTI of one): 3-D to a user
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


def to_itk(image: Image) -> "sitk.Image":
    """The ``SimpleITK.Image`` of an image, geometry included."""
    import SimpleITK as sitk

    itk_image = sitk.GetImageFromArray(np.ascontiguousarray(image.array))
    itk_image.SetSpacing(image.geometry.spacing)
    itk_image.SetOrigin(image.geometry.origin)
    itk_image.SetDirection(image.geometry.direction)
    return itk_image


def write_image(
    image: Image, path: str | os.PathLike[str], *, compress: bool = True, description: str | None = None
) -> Path:
    """Write an image atomically: into a hidden folder beside ``path``, then renamed into place.

    A crash never leaves a half-written file under the final name. Formats with a detached
    voxel file (``.mhd``, ``.nhdr``) move the voxel file first and the header last.
    ``description`` goes into the header's notes (NIfTI ``descrip``, 79 characters at most), e.g.
    :data:`LABEL_MAP_DESCRIPTION` for label maps.
    """
    import SimpleITK as sitk

    path = Path(path)
    if image_suffix(path) is None:
        raise InputError(f"{path}: output must end with one of {', '.join(IMAGE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        itk_image = to_itk(image)
        if description:
            itk_image.SetMetaData("ITK_FileNotes", description[:79])
        sitk.WriteImage(itk_image, str(staging / path.name), compress)
        for written in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object], *, suffix: str = "") -> Path:
    """Let ``write`` fill a hidden file beside ``path`` (``.NAME.XXXX.part`` + ``suffix``, for
    writers that choose the format by the name's ending), then rename it into place: nothing is
    ever under ``path`` but a whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


LEFTOVER_AGE_S = 3600.0
"""Hidden ``.NAME.*.part`` items older than this are leftovers of a killed writer (a live one
finishes in seconds): :func:`remove_leftovers` removes them."""


def remove_leftovers(folder: str | os.PathLike[str], *, older_than_s: float = LEFTOVER_AGE_S,
                     of: Iterable[str] | None = None) -> list[Path]:
    """Remove what killed atomic writers left in ``folder``: hidden ``.NAME.XXXX.part`` files and
    folders (:func:`write_atomic`, :func:`write_image`), with a ``suffix`` after ``.part`` too, and
    ``.writing-`` items, older than ``older_than_s``. Returns what was removed.

    Args:
        of: only the leftovers of these file names (``NAME``), for a caller that holds the lock of
            every writer of them and so may remove their leftovers of any age.
    """
    limit = time.time() - older_than_s
    prefixes = None if of is None else tuple(f".{name}." for name in of)
    removed = []
    for item in Path(folder).glob(".*"):
        if not (item.name.endswith(".part") or ".part." in item.name or ".writing-" in item.name):
            continue  # not a writer's temporary name (``.part`` last, or before write_atomic's suffix)
        if prefixes is not None and not item.name.startswith(prefixes):
            continue
        try:
            if item.lstat().st_mtime >= limit:
                continue  # perhaps a live writer's
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
        except OSError:
            continue
        removed.append(item)
    return removed


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to a hidden file beside ``path``, then rename it into place."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return write_atomic(path, lambda temporary: temporary.write_bytes(payload))


def check_output_folder(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be an output folder, without writing anything that stays.

    The folder may not exist yet: then its nearest existing ancestor must be a folder we can
    write in. A probe file is created and removed (permission bits lie for root and on
    read-only mounts).

    Raises:
        InputError: ``path`` is a file, lies under a file, or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; give a folder (new or existing) for -o")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create this folder because {existing} is a file; choose another -o")
    try:
        handle, probe = tempfile.mkstemp(prefix=".mrseg-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        what = "folder" if existing == path else f"folder's parent {existing}"
        raise InputError(
            f"{path}: the output {what} is not writable ({err.strerror or err}); choose another -o or fix its "
            "permissions"
        ) from err
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
