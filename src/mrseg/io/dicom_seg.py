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
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from mrseg._version import __version__
from mrseg.classes import Coding, SegmentClass, class_colors, find_class
from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.io.image import Image

if TYPE_CHECKING:
    from mrseg.io.dicom import DicomSeries

TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")
"""Type 2 patient/study attributes the segmentation copies from its source; missing ones (common in
anonymised or synthetic series) are filled empty in memory so the copy is valid."""

LATERALITY = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
CATEGORIES = {"anatomical_structure": ("91723000", "Anatomical Structure"), "tissue": ("85756007", "Tissue")}
UNCODED = Coding("91723000", "Anatomical Structure")
"""The type of a class no catalogue knows (a custom model's): its category, as nothing more specific is known."""


def write_dicom_seg(
    labels: Image,
    series: DicomSeries,
    path: str | os.PathLike[str],
    *,
    classes: Mapping[int, str],
    model_name: str = "mrseg",
    series_description: str = "mrseg segmentation",
) -> Path:
    """Write ``labels`` (on the series' grid) as a DICOM Segmentation of ``series``.

    Args:
        labels: the label map, on the grid SimpleITK reads from ``series``.
        series: the source series (its files are read for the references).
        path: the output ``.dcm`` file, written atomically.
        classes: label value → class name; the catalogue supplies codes and colours by name.
        model_name: recorded as the algorithm's name (``mrseg <model_name>``).
        series_description: the segmentation series' description.

    Raises:
        InputError: the labels do not match the series' slices, or no class is present.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    # series.files is the order SimpleITK read the slices in (ascending along the normal): frame k
    # of the labels is series.files[k].
    sources = [_read_source(f) for f in series.files]
    if not all(str(getattr(d, "FrameOfReferenceUID", "") or "") for d in sources):
        raise InputError(f"series {series.uid} ({series.files[0].parent}) has no FrameOfReferenceUID; a DICOM-SEG "
                         "could not be aligned with it. Use --output-type nifti")
    shape = labels.array.shape
    if (len(sources), int(sources[0].Rows), int(sources[0].Columns)) != shape:
        raise InputError(f"the labels ({shape[0]}×{shape[1]}×{shape[2]} slices×rows×columns) do not match the "
                         f"series {series.uid} ({len(sources)}×{sources[0].Rows}×{sources[0].Columns})")
    first = np.asarray([float(v) for v in sources[0].ImagePositionPatient])
    if not np.allclose(first, labels.geometry.origin, atol=1e-2):
        raise InputError(f"the labels' origin {labels.geometry.origin} is not the first slice of series {series.uid} "
                         f"({tuple(first)}); write DICOM-SEG only for labels made from that series")
    present = [int(v) for v in np.unique(labels.array) if v != 0 and int(v) in classes]
    if not present:
        raise InputError("no class is present in the labels; a DICOM-SEG needs at least one segment")
    colours = class_colors({v: classes[v] for v in present})
    algorithm = hd.AlgorithmIdentificationSequence(name=f"mrseg {model_name}", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    numbered = np.zeros(shape, np.uint8 if len(present) < 256 else np.uint16)
    for number, value in enumerate(present, start=1):
        entry = find_class(classes[value]) or SegmentClass(0, classes[value])
        coding = entry.coding or UNCODED
        category_code, category_meaning = CATEGORIES[coding.category]
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=classes[value],
            segmented_property_category=hd.sr.CodedConcept(category_code, "SCT", category_meaning),
            segmented_property_type=hd.sr.CodedConcept(coding.code, "SCT", coding.meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[hd.sr.CodedConcept(code, "SCT", meaning) for code, meaning in coding.regions] or None,
            display_color=hd.color.CIELabColor(*_rgb_to_cielab(colours[value])),
        )
        if entry.laterality is not None:
            code, meaning = LATERALITY[entry.laterality]
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(code, "SCT", meaning)]
        descriptions.append(description)
        numbered[labels.array == value] = number
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
        raise InputError(f"highdicom cannot make a DICOM-SEG of series {series.uid} ({series.files[0].parent}): "
                         f"{err}. Use --output-type nifti") from err
    buffer = io.BytesIO()
    segmentation.save_as(buffer)
    return write_bytes_atomic(Path(path), buffer.getvalue())


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


__all__ = ["write_dicom_seg"]
