"""A small synthetic CT DICOM series written with pydicom (shared by the DICOM and DICOM-SEG tests)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROWS, COLUMNS, SLICES = 10, 8, 5
PIXEL_X, PIXEL_Y, STEP = 0.7, 0.9, 2.5  # column spacing (x), row spacing (y), slice step
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _stored_value(position_index: int) -> int:
    """Stored value of every pixel in the slice at ``position_index`` (0 = lowest along the normal)."""
    return 1024 + 100 * (position_index + 1)


def write_series(
    folder: Path,
    *,
    slices: int = SLICES,
    description: str = "synthetic CT",
    orientation: tuple[float, ...] = AXIAL,
    origin: tuple[float, float, float] = (-20.0, 35.5, -101.0),
    seed: int = 0,
) -> str:
    """Write one CT series into ``folder`` (random file names, shuffled instance numbers).

    Slice ``n`` along the normal lies at ``origin + n * STEP * normal`` and holds the stored value
    ``_stored_value(n)`` (so ``_stored_value(n) - 1024`` after rescaling) in every pixel, except
    for a marker in its first row so that row/column order is checked too.

    Returns:
        The SeriesInstanceUID.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    instance_numbers = rng.permutation(slices) + 1
    for n in rng.permutation(slices):  # write in random order as well
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / uuid.UUID(bytes=rng.bytes(16)).hex
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Test^Synthetic"
        ds.PatientID = "TEST01"
        ds.Modality = "CT"
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(instance_numbers[n])
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + n * STEP * normal]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [PIXEL_Y, PIXEL_X]  # DICOM order: row spacing, column spacing
        ds.SliceThickness = STEP
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.RescaleType = "HU"
        pixels = np.full((ROWS, COLUMNS), _stored_value(n), dtype=np.uint16)
        pixels[0, :] = np.arange(COLUMNS, dtype=np.uint16) + 1024  # marker: row 0 is 0..7 HU
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
    return str(series_uid)
