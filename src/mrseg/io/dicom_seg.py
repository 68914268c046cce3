"""DICOM-SEG output with highdicom: one binary segment per present class, referencing the source series.

Each segment carries the class name as its label, the structure's SNOMED CT type code from the
class catalogue with a laterality modifier (SCT 7771000 Left / 24028007 Right) for paired
structures, so left and right never share an identical coding, the anatomic regions that place a
tissue type (body-composition fats: which fat is which), the catalogue's display colour
(as CIELab, DICOM's recommended display value), and the algorithm (``mrseg`` with the model's
name and the package version). The frames are the source slices in their own order; empty
frames are left out, as highdicom does by default.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

import numpy as np

from mrseg._version import __version__
from mrseg.classes import Coding, SegmentClass, class_colors, find_class
from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.io.image import Image

if TYPE_CHECKING:
    from mrseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)

TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")
"""Type 2 patient/study attributes the segmentation copies from its source; missing ones (common in
anonymised or synthetic series) are filled empty in memory so the copy is valid."""

LATERALITY = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
CATEGORIES = {"anatomical_structure": ("91723000", "Anatomical Structure"), "tissue": ("85756007", "Tissue")}
UNCODED = Coding("91723000", "Anatomical Structure")
"""The type of a class no catalogue knows (a custom model's): its category, as nothing more specific is known."""


class WrittenSeg(NamedTuple):
    """A DICOM-SEG written: its file, and what the source lacked that the writer had to make up."""

    path: Path
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Frame:
    """Where one source frame lies: its first pixel's centre, its row and column directions and
    pixel sizes (LPS, mm), its size."""

    position: np.ndarray
    row: np.ndarray
    column: np.ndarray
    spacing: tuple[float, float]
    """Between rows, between columns (DICOM's PixelSpacing order)."""
    rows: int
    columns: int


def write_dicom_seg(
    labels: Image,
    series: DicomSeries,
    path: str | os.PathLike[str],
    *,
    classes: Mapping[int, str],
    model_name: str = "mrseg",
    series_description: str = "mrseg segmentation",
) -> WrittenSeg:
    """Write ``labels`` as a DICOM Segmentation of ``series``, one frame per source frame.

    Each frame of the segmentation is the source frame it references: its pixels take the label
    found at their centre in world coordinates (nearest voxel), so the segmentation is right
    whatever grid the labels are on (the series' own, or a regular grid a tilted series was
    resampled onto), whatever the slices' orientation and order, for one file per slice and for an
    enhanced multi-frame file alike.

    A source without a StudyInstanceUID or SeriesInstanceUID (anonymised exports blank them) gets a
    new one in the segmentation, so it stays valid DICOM; the returned notes say so, because such a
    segmentation cannot be linked to its source in an archive.

    Args:
        labels: the label map made from ``series``.
        series: the source series (its files are read for the references).
        path: the output ``.dcm`` file, written atomically.
        classes: label value → class name; the catalogue supplies codes and colours by name.
        model_name: recorded as the algorithm's name (``mrseg <model_name>``).
        series_description: the segmentation series' description.

    Raises:
        InputError: the series has no frame of reference or cannot be referenced, the labels do
            not cover its frames, or no class is present.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    sources = [_read_source(f) for f in series.files]
    where = f"series {series.uid} ({series.files[0].parent})"
    if not all(str(getattr(d, "FrameOfReferenceUID", "") or "") for d in sources):
        raise InputError(f"{where} has no FrameOfReferenceUID; a DICOM-SEG could not be aligned with it. "
                         "Use --output-type nifti")
    notes = _fill_identifiers(sources, where)
    frames = [frame for source in sources for frame in source_frames(source)]
    known = [int(v) for v in np.unique(labels.array) if v != 0 and int(v) in classes]
    sampled = np.stack([sample_frame(labels, frame) for frame in frames])
    outside = [n for n, frame in enumerate(sampled) if np.any(frame < 0)]
    if outside:
        raise InputError(f"the labels (grid {labels.geometry.shape[::-1]} at {labels.geometry.origin}) do not cover "
                         f"{len(outside)} of the {len(frames)} frames of {where} (the first: frame {outside[0] + 1}); "
                         "write DICOM-SEG only for labels made from that series")
    present = [value for value in known if np.any(sampled == value)]
    if not present:
        raise InputError("no class is present in the labels; a DICOM-SEG needs at least one segment")
    colours = class_colors({v: classes[v] for v in present})
    algorithm = hd.AlgorithmIdentificationSequence(name=f"mrseg {model_name}", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    numbered = np.zeros(sampled.shape, np.uint8 if len(present) < 256 else np.uint16)
    for number, value in enumerate(present, start=1):
        descriptions.append(_describe(number, classes[value], colours[value], algorithm))
        numbered[sampled == value] = number
    try:
        segmentation = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=numbered,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="mrseg",
            manufacturer_model_name=model_name,
            software_versions=__version__,
            device_serial_number="0",
            series_description=series_description,
            content_label="MRSEG",
            content_description=f"{len(present)} structures segmented by mrseg {__version__} ({model_name})",
        )
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"highdicom cannot make a DICOM-SEG of {where}: {err}. Use --output-type nifti") from err
    buffer = io.BytesIO()
    segmentation.save_as(buffer)
    return WrittenSeg(write_bytes_atomic(Path(path), buffer.getvalue()), notes)


def _describe(number: int, name: str, colour: tuple[int, int, int], algorithm: Any) -> Any:
    """The segment description of one class: label, SNOMED codes with laterality, regions, colour."""
    import highdicom as hd

    entry = find_class(name) or SegmentClass(0, name)
    coding = entry.coding or UNCODED
    category_code, category_meaning = CATEGORIES[coding.category]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name,
        segmented_property_category=hd.sr.CodedConcept(category_code, "SCT", category_meaning),
        segmented_property_type=hd.sr.CodedConcept(coding.code, "SCT", coding.meaning),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[hd.sr.CodedConcept(code, "SCT", meaning) for code, meaning in coding.regions] or None,
        display_color=hd.color.CIELabColor(*_rgb_to_cielab(colour)),
    )
    if entry.laterality is not None:
        code, meaning = LATERALITY[entry.laterality]
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(code, "SCT", meaning)]
    return description


def _fill_identifiers(sources: list[Any], where: str) -> tuple[str, ...]:
    """Give the sources the Type 1 identifiers they lack (one new UID per attribute for the whole
    series, in memory only); returns one note per attribute made up."""
    from pydicom.uid import generate_uid

    notes = []
    for attribute in ("StudyInstanceUID", "SeriesInstanceUID"):
        if all(str(getattr(d, attribute, "") or "") for d in sources):
            continue
        made = generate_uid()
        for dataset in sources:
            if not str(getattr(dataset, attribute, "") or ""):
                setattr(dataset, attribute, made)
        notes.append(f"{where} has no {attribute}: the DICOM-SEG references a new one ({made}), so an archive "
                     "cannot link it to its source; export the series with its identifiers to link them")
    for note in notes:
        log.warning("%s", note)
    return tuple(notes)


def source_frames(dataset: Any) -> list[Frame]:
    """Every frame of a source image, in its stored order: one for a classic image, each frame of an
    enhanced multi-frame image (from its shared and per-frame functional groups).

    Raises:
        InputError: a frame's position, orientation or pixel spacing is missing.
    """
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    count = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    per_frame = getattr(dataset, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is None:
        return [_frame(dataset, dataset, dataset, rows, columns)]
    shared = getattr(dataset, "SharedFunctionalGroupsSequence", [None])[0]
    frames = []
    for number in range(count):
        group = per_frame[number]
        position = _group_item(group, shared, "PlanePositionSequence")
        orientation = _group_item(group, shared, "PlaneOrientationSequence")
        measures = _group_item(group, shared, "PixelMeasuresSequence")
        frames.append(_frame(position, orientation, measures, rows, columns))
    return frames


def _group_item(group: Any, shared: Any, name: str) -> Any:
    for holder in (group, shared):
        items = getattr(holder, name, None) if holder is not None else None
        if items:
            return items[0]
    return None


def _frame(position: Any, orientation: Any, measures: Any, rows: int, columns: int) -> Frame:
    try:
        origin = np.asarray([float(v) for v in position.ImagePositionPatient])
        cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
        spacing = tuple(float(v) for v in measures.PixelSpacing)
    except AttributeError as err:
        raise InputError(f"a source frame lacks its position, orientation or pixel spacing ({err}); a DICOM-SEG "
                         "cannot place it. Use --output-type nifti") from err
    return Frame(origin, cosines[:3], cosines[3:], (spacing[0], spacing[1]), rows, columns)


def sample_frame(labels: Image, frame: Frame) -> np.ndarray:
    """The label at each pixel centre of ``frame`` (nearest voxel); −1 outside the label map.

    Where the frame lies on the label grid (the usual case) the rounding is exact, so the
    segmentation holds the very voxels of the label map.
    """
    affine = labels.geometry.affine_lps
    inverse = np.linalg.inv(affine[:3, :3])
    start = inverse @ (frame.position - affine[:3, 3])
    along_columns = inverse @ (frame.row * frame.spacing[1])  # one column to the right
    along_rows = inverse @ (frame.column * frame.spacing[0])  # one row down
    r = np.arange(frame.rows)[:, None, None]
    c = np.arange(frame.columns)[None, :, None]
    index = np.rint(start + r * along_rows + c * along_columns).astype(np.int64)  # (rows, columns, 3): i, j, k
    shape_ijk = np.asarray(labels.geometry.shape[::-1])
    inside = np.all((index >= 0) & (index < shape_ijk), axis=-1)
    clipped = np.clip(index, 0, shape_ijk - 1)
    values = labels.array[clipped[..., 2], clipped[..., 1], clipped[..., 0]].astype(np.int64)
    return np.where(inside, values, -1)


def _read_source(path: Path):  # type: ignore[no-untyped-def]
    """A source slice's header. Anonymisers sometimes blank SOPClassUID/SOPInstanceUID in the data
    set while the file meta keeps them; the references need them, so they are taken from there."""
    import pydicom

    dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
    meta = getattr(dataset, "file_meta", None)
    for attribute, fallback in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if not str(getattr(dataset, attribute, "") or ""):
            value = str(getattr(meta, fallback, "") or "") if meta is not None else ""
            if not value:
                raise InputError(f"{path}: no {attribute} in the data set or its file meta; a DICOM-SEG cannot "
                                 "reference this slice. Write NIfTI output instead (--output-type nifti)")
            setattr(dataset, attribute, value)
    for attribute in TYPE2_COPIED:
        if attribute not in dataset:
            setattr(dataset, attribute, "")  # type 2: present but may be empty, as DICOM allows
    return dataset


def _rgb_to_cielab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """sRGB (0–255) to CIELab (D65), the space DICOM's recommended display values use."""
    channels = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[1] - 16
    return (float(np.clip(lightness, 0, 100)), float(np.clip(500 * (f[0] - f[1]), -128, 127)),
            float(np.clip(200 * (f[1] - f[2]), -128, 127)))


__all__ = ["Frame", "WrittenSeg", "sample_frame", "source_frames", "write_dicom_seg"]
