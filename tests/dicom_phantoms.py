"""DICOM series of phantoms, written with pydicom with complete headers, as archives hold them.

Each series is one phantom image on its own grid (axial, sagittal, coronal or oblique MR; axial
CT), as classic single-frame files or as one enhanced multi-frame file, uncompressed or in a
compressed transfer syntax, optionally with a gantry tilt (CT: the slices advance along the table,
not along their normal), with a slice left out, or without the identifiers anonymisers blank.
The phantom's truth on the same grid comes back with it, so a test knows where every structure is.
"""

from __future__ import annotations

import datetime
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from mrseg.io.image import Geometry, Image
from mrseg.phantom import make_case

ORIENTATIONS = {"axial": "LPS", "sagittal": "PIR", "coronal": "LIP", "oblique": "oblique"}
"""Series orientation → the phantom grid's axis code (i along the rows, j down the columns, k the slices)."""


@dataclass
class PhantomSeries:
    """A written series: its folder and files, its UIDs, the image and truth it was made from."""

    folder: Path
    files: list[Path]
    series_uid: str
    study_uid: str
    image: Image
    labels: Image
    tilt: float = 0.0
    extra: dict = field(default_factory=dict)


def phantom(*, seed: int, modality: str = "mr", orientation: str = "axial",
            spacing: float = 6.0) -> tuple[Image, Image]:
    """A small phantom image and its truth on a grid of ``orientation`` (see :data:`ORIENTATIONS`)."""
    case = make_case(seed=seed, modality=modality, sequence="t1_in" if modality == "mr" else "contrast",
                     fov="abdomen", spacing=(spacing, spacing * 0.9, spacing * 1.2),
                     orientation=ORIENTATIONS[orientation])
    return case.image, case.labels


def write_phantom_series(
    folder: Path,
    image: Image,
    labels: Image,
    *,
    modality: str = "MR",
    enhanced: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    tilt_degrees: float = 0.0,
    drop_slices: Sequence[int] = (),
    blank: Sequence[str] = (),
    seed: int = 0,
) -> PhantomSeries:
    """Write ``image`` as a DICOM series into ``folder``.

    Args:
        image: the phantom image (its k axis becomes the slices).
        labels: its truth (returned with the series; resampled like the image for a tilt).
        modality: ``"MR"`` or ``"CT"``.
        enhanced: one enhanced multi-frame file instead of one file per slice.
        transfer_syntax: a pydicom transfer syntax UID; compressed ones are encoded with
            pydicom's encoders (RLE natively, JPEG-LS with pyjpegls, JPEG 2000 with pylibjpeg).
        tilt_degrees: a CT gantry tilt about the patient's left-right axis: the slices are
            tilted, their positions still advance along the table (sheared stack).
        drop_slices: slice numbers to leave out (a series with a gap).
        blank: Type 1 attributes to leave out everywhere (``StudyInstanceUID``, ...), as
            anonymisers do.
        seed: file names and instance numbers are shuffled with it.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    if tilt_degrees:
        image, labels = _tilted(image, labels, tilt_degrees)
    geometry = image.geometry
    direction = geometry.direction_matrix
    sx, sy, sz = geometry.spacing
    row_dir, column_dir = direction[:, 0], direction[:, 1]
    slice_step = direction[:, 2] * sz if not tilt_degrees else np.array([0.0, 0.0, sz])
    origin = np.asarray(geometry.origin)
    stored, intercept = _stored(image.array, modality)
    slices = [k for k in range(geometry.shape[0]) if k not in set(drop_slices)]
    positions = [origin + k * slice_step for k in slices]
    orientation = [float(v) for v in (*row_dir, *column_dir)]
    common = _common(modality, study_uid, series_uid, frame_uid, orientation, (sy, sx), sz, intercept,
                     tilt_degrees, stored.shape[1:], blank)
    files = []
    if enhanced:
        files.append(_enhanced_file(folder / "enhanced.dcm", common, stored, slices, positions, modality,
                                    transfer_syntax, orientation, (sy, sx), sz))
    else:
        numbers = rng.permutation(len(slices)) + 1
        for order, n in enumerate(rng.permutation(len(slices))):
            k = slices[n]
            ds = _file(folder / f"IM{order:04d}", common, MRImageStorage if modality == "MR" else CTImageStorage)
            ds.InstanceNumber = int(numbers[n])
            ds.ImagePositionPatient = [round(float(v), 6) for v in positions[n]]
            ds.SliceLocation = round(float(np.dot(positions[n], np.cross(row_dir, column_dir))), 6)
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            files.append(_save(ds, transfer_syntax))
    return PhantomSeries(folder, files, series_uid, study_uid, image, labels, tilt_degrees)


def dciodvfy_errors(path: Path) -> list[str]:
    """The DICOM validator's error lines for one file (empty: valid); skips the test where
    dicom3tools is not installed (the README's install command installs it)."""
    import shutil
    import subprocess

    import pytest

    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools; the README's install command does it)")
    done = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def zip_series(series: PhantomSeries, path: Path, *, inner: str = "export/series") -> Path:
    """The series' files in a zip archive (inside ``inner``), as a PACS export gives them."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in series.files:
            archive.write(file, f"{inner}/{file.name}")
    return path


def write_dicomdir(root: Path) -> Path:
    """A DICOMDIR for every DICOM file under ``root`` (pydicom's FileSet), as on a CD export."""
    import pydicom
    from pydicom.fileset import FileSet

    fileset = FileSet()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        fileset.add(pydicom.dcmread(path))
    fileset.write(root / "cd")
    return root / "cd" / "DICOMDIR"


def _stored(array: np.ndarray, modality: str) -> tuple[np.ndarray, float]:
    """Stored pixel values (uint16) and the rescale intercept: HU + 1024 for CT, 0–4095 for MR."""
    if modality == "CT":
        return np.clip(np.rint(array) + 1024, 0, 4095).astype(np.uint16), -1024.0
    low, high = float(array.min()), float(array.max())
    return np.rint((array - low) / max(high - low, 1e-6) * 4000).astype(np.uint16), 0.0


def _tilted(image: Image, labels: Image, degrees: float) -> tuple[Image, Image]:
    """``image`` and ``labels`` sampled on gantry-tilted slices: the column direction is rotated
    about the left-right axis, the slice origins advance along the table (z).

    The returned images carry the grid of the *first* slice with a direction whose k column is the
    table axis (not orthogonal to the rows and columns); only the writer reads it.
    """
    from scipy.ndimage import map_coordinates

    angle = np.radians(degrees)
    geometry = image.geometry
    sx, sy, sz = geometry.spacing
    rows, columns = geometry.shape[1], geometry.shape[2]
    row_dir = np.array([1.0, 0.0, 0.0])
    column_dir = np.array([0.0, np.cos(angle), np.sin(angle)])
    slices = geometry.shape[0]
    origin = np.asarray(geometry.origin)
    k, j, i = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(columns), indexing="ij")
    world = (origin[:, None, None, None] + i[None] * sx * row_dir[:, None, None, None]
             + j[None] * sy * column_dir[:, None, None, None]
             + k[None] * sz * np.array([0, 0, 1.0])[:, None, None, None])
    inverse = np.linalg.inv(geometry.direction_matrix * np.asarray(geometry.spacing)[None, :])
    index = np.tensordot(inverse, world - origin[:, None, None, None], axes=1)  # (i, j, k) continuous
    coordinates = index[::-1]  # numpy order (k, j, i)
    sampled = map_coordinates(image.array.astype(np.float32), coordinates, order=1, mode="nearest")
    truth = map_coordinates(labels.array, coordinates, order=0, mode="constant", cval=0)
    sheared = Geometry(geometry.shape, geometry.spacing, geometry.origin,
                       tuple(float(v) for v in np.column_stack([row_dir, column_dir, [0, 0, 1.0]]).ravel()))
    return Image(sampled, sheared), Image(truth.astype(labels.array.dtype), sheared)


def _common(modality: str, study: str, series: str, frame: str, orientation: list[float], spacing: tuple[float, float],
            thickness: float, intercept: float, tilt: float, shape: tuple[int, ...], blank: Sequence[str]) -> Dataset:
    """The attributes every file of the series shares (patient, study, series, equipment, pixels)."""
    now = datetime.datetime(2026, 11, 30, 9, 30, 0)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "PHANTOM01", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study, now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", "ACC001"
    ds.StudyDescription = "mrseg DICOM tests"
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series, 3
    ds.SeriesDescription = f"phantom {modality}"
    ds.BodyPartExamined = "ABDOMEN"  # unpaired: no Laterality
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
    ds.Manufacturer, ds.InstitutionName = "mrseg phantom", "mrseg"
    ds.ManufacturerModelName, ds.DeviceSerialNumber, ds.SoftwareVersions = "phantom", "0", "1"
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    ds.AcquisitionDate, ds.AcquisitionTime = ds.StudyDate, ds.StudyTime
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [round(v, 8) for v in orientation]
    ds.PixelSpacing = [round(float(v), 6) for v in spacing]
    ds.SliceThickness = round(float(thickness), 6)
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.BurnedInAnnotation = "NO"
    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, 1, "HU"
        ds.KVP, ds.AcquisitionNumber = 120, 1
        ds.GantryDetectorTilt = round(float(tilt), 4)
        ds.WindowCenter, ds.WindowWidth = 40, 400
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
        ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "3D", 4.2, 2.3, 1
        ds.MagneticFieldStrength, ds.ImagingFrequency, ds.ImagedNucleus = 1.5, 63.9, "1H"
        ds.SequenceName = "phantom_t1"
    for attribute in blank:
        if attribute in ds:
            del ds[attribute]
    return ds


def _file(path: Path, common: Dataset, sop_class: str) -> FileDataset:
    meta = FileMetaDataset()
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.update(common)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def _save(ds: FileDataset, transfer_syntax: str) -> Path:
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    if transfer_syntax != ExplicitVRLittleEndian:
        plugin = {RLELossless: "pydicom", JPEGLSLossless: "pyjpegls", JPEG2000Lossless: "pylibjpeg"}[transfer_syntax]
        ds.compress(transfer_syntax, encoding_plugin=plugin)
    ds.save_as(ds.filename, enforce_file_format=True)
    return Path(ds.filename)


def _enhanced_file(path: Path, common: Dataset, stored: np.ndarray, slices: list[int], positions: list[np.ndarray],
                   modality: str, transfer_syntax: str, orientation: list[float], spacing: tuple[float, float],
                   thickness: float) -> Path:
    """One enhanced MR/CT image holding every slice as a frame, with its functional groups."""
    sop_class = EnhancedMRImageStorage if modality == "MR" else EnhancedCTImageStorage
    ds = _file(path, common, sop_class)
    for attribute in ("ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleIntercept", "RescaleSlope",
                      "RescaleType", "WindowCenter", "WindowWidth", "ScanningSequence", "SequenceVariant",
                      "ScanOptions", "SequenceName", "RepetitionTime", "EchoTime", "EchoTrainLength", "KVP",
                      "GantryDetectorTilt"):
        if attribute in ds:
            del ds[attribute]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(slices)
    ds.ContentQualification = "PRODUCT"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.AcquisitionDateTime = ds.StudyDate + ds.StudyTime
    ds.AcquisitionContextSequence = DicomSequence([])
    if modality == "MR":
        ds.PulseSequenceName, ds.MRAcquisitionType = "phantom_t1", "3D"
        ds.ResonantNucleus, ds.MagneticFieldStrength = "1H", 1.5
        ds.ApplicableSafetyStandardAgency, ds.ImageComments = "IEC", "phantom"
        ds.EchoPulseSequence, ds.PhaseContrast, ds.MultiPlanarExcitation = "GRADIENT", "NO", "NO"
        ds.AcquisitionDuration, ds.KSpaceFiltering = 120.0, "NONE"
        ds.TimeOfFlightContrast, ds.SteadyStatePulseSequence, ds.EchoPlanarPulseSequence = "NO", "NONE", "NO"
        ds.SaturationRecovery, ds.SpectrallySelectedSuppression, ds.OversamplingPhase = "NO", "NONE", "NONE"
        ds.GeometryOfKSpaceTraversal, ds.SegmentedKSpaceTraversal, ds.RectilinearPhaseEncodeReordering = (
            "RECTILINEAR", "SINGLE", "LINEAR")
        ds.NumberOfKSpaceTrajectories, ds.CoverageOfKSpace = 1, "FULL"
        ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "VOLUME", "NONE"
        ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "T1"
        ds.PixelPresentation = "MONOCHROME"
    else:
        ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "VOLUME", "NONE"
        ds.PixelPresentation = "MONOCHROME"
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [round(float(v), 6) for v in spacing]
    measures.SliceThickness = round(float(thickness), 6)
    plane = Dataset()
    plane.ImageOrientationPatient = [round(v, 8) for v in orientation]
    shared.PixelMeasuresSequence = DicomSequence([measures])
    anatomy = Dataset()
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "818981001", "SCT", "Abdomen"
    anatomy.AnatomicRegionSequence = DicomSequence([region])
    anatomy.FrameLaterality = "U"
    shared.FrameAnatomySequence = DicomSequence([anatomy])
    shared.PlaneOrientationSequence = DicomSequence([plane])
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope = (-1024.0, 1) if modality == "CT" else (0.0, 1)
    transform.RescaleType = "HU" if modality == "CT" else "US"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    frame_type.PixelPresentation, frame_type.VolumetricProperties = "MONOCHROME", "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    if modality == "MR":
        frame_type.ComplexImageComponent, frame_type.AcquisitionContrast = "MAGNITUDE", "T1"
        shared.MRImageFrameTypeSequence = DicomSequence([frame_type])
        timing = Dataset()
        timing.RepetitionTime, timing.FlipAngle, timing.EchoTrainLength = 4.2, 10.0, 1
        timing.RFEchoTrainLength, timing.GradientEchoTrainLength = 0, 1
        timing.GradientOutputType, timing.GradientOutput = "DB_DT", 50.0
        mode = Dataset()
        mode.OperatingModeType, mode.OperatingMode = "STATIC FIELD", "IEC_NORMAL"
        timing.OperatingModeSequence = DicomSequence([mode])
        absorption = Dataset()
        absorption.SpecificAbsorptionRateDefinition, absorption.SpecificAbsorptionRateValue = "IEC_WHOLE_BODY", 0.5
        timing.SpecificAbsorptionRateSequence = DicomSequence([absorption])
        shared.MRTimingAndRelatedParametersSequence = DicomSequence([timing])
        fov = Dataset()
        fov.InPlanePhaseEncodingDirection = "ROW"
        fov.MRAcquisitionFrequencyEncodingSteps = int(stored.shape[2])
        fov.MRAcquisitionPhaseEncodingStepsInPlane = int(stored.shape[1])
        fov.PercentSampling, fov.PercentPhaseFieldOfView = 100.0, 100.0
        shared.MRFOVGeometrySequence = DicomSequence([fov])
        echo = Dataset()
        echo.EffectiveEchoTime = 2.3
        shared.MREchoSequence = DicomSequence([echo])
        modifier = Dataset()
        modifier.InversionRecovery, modifier.FlowCompensation, modifier.Spoiling = "NO", "NONE", "RF"
        modifier.T2Preparation, modifier.SpectrallySelectedExcitation, modifier.SpatialPresaturation = (
            "NO", "NONE", "NONE")
        modifier.PartialFourier, modifier.ParallelAcquisition = "NO", "NO"
        shared.MRModifierSequence = DicomSequence([modifier])
        imaging = Dataset()
        imaging.MagnetizationTransfer, imaging.BloodSignalNulling, imaging.Tagging = "NONE", "NO", "NONE"
        imaging.TransmitterFrequency, imaging.PixelBandwidth = 63.9, 300.0
        shared.MRImagingModifierSequence = DicomSequence([imaging])
        receive = Dataset()
        receive.ReceiveCoilName, receive.ReceiveCoilType, receive.QuadratureReceiveCoil = "BODY", "BODY", "NO"
        receive.ReceiveCoilManufacturerName = "phantom"
        shared.MRReceiveCoilSequence = DicomSequence([receive])
        transmit = Dataset()
        transmit.TransmitCoilName, transmit.TransmitCoilType = "BODY", "BODY"
        transmit.TransmitCoilManufacturerName = "phantom"
        shared.MRTransmitCoilSequence = DicomSequence([transmit])
        averages = Dataset()
        averages.NumberOfAverages = 1
        shared.MRAveragesSequence = DicomSequence([averages])
    else:
        shared.CTImageFrameTypeSequence = DicomSequence([frame_type])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    dimension = generate_uid()
    index = Dataset()
    index.DimensionOrganizationUID = dimension
    index.DimensionIndexPointer = 0x00200032  # ImagePositionPatient
    index.FunctionalGroupPointer = 0x00209113  # PlanePositionSequence
    ds.DimensionOrganizationSequence = DicomSequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dimension
    ds.DimensionIndexSequence = DicomSequence([index])
    frames = []
    for number, position in enumerate(positions, start=1):
        group = Dataset()
        placed = Dataset()
        placed.ImagePositionPatient = [round(float(v), 6) for v in position]
        group.PlanePositionSequence = DicomSequence([placed])
        content = Dataset()
        content.DimensionIndexValues = [number]
        content.StackID, content.InStackPositionNumber = "1", number
        content.FrameAcquisitionDateTime = ds.AcquisitionDateTime
        content.FrameReferenceDateTime = ds.AcquisitionDateTime
        content.FrameAcquisitionDuration = 100.0
        group.FrameContentSequence = DicomSequence([content])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.ascontiguousarray(stored[slices]).tobytes()
    return _save(ds, transfer_syntax)
