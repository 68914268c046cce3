"""DICOM as archives hold it, from phantoms with complete headers: every orientation, enhanced
multi-frame files, compressed transfer syntaxes, a gantry-tilted CT, zip archives, DICOMDIRs,
anonymised series and series with a gap. Each DICOM-SEG written is checked by the standard's
validator (``dciodvfy``, Debian's dicom3tools) and read back twice, with highdicom and with
pydicom plus this module's own geometry, frame by frame in world coordinates against the labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_phantoms import (
    PhantomSeries,
    dciodvfy_errors,
    phantom,
    write_dicomdir,
    write_phantom_series,
    zip_series,
)
from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io import Image, read_image
from mrseg.io.dicom import select_series
from mrseg.io.dicom_seg import write_dicom_seg
from mrseg.io.resample import resample_labels

NAMES = {c.index: c.name for c in BASE.classes}

KINDS = {
    # name: (modality, orientation, enhanced, transfer syntax, tilt)
    "mr_axial": ("MR", "axial", False, None, 0.0),
    "mr_sagittal": ("MR", "sagittal", False, None, 0.0),
    "mr_coronal": ("MR", "coronal", False, None, 0.0),
    "mr_oblique": ("MR", "oblique", False, None, 0.0),
    "ct_axial": ("CT", "axial", False, None, 0.0),
    "mr_enhanced_axial": ("MR", "axial", True, None, 0.0),
    "mr_enhanced_oblique": ("MR", "oblique", True, None, 0.0),
    "ct_enhanced_axial": ("CT", "axial", True, None, 0.0),
    "mr_sagittal_rle": ("MR", "sagittal", False, RLELossless, 0.0),
    "mr_coronal_jpegls": ("MR", "coronal", False, JPEGLSLossless, 0.0),
    "ct_axial_jpeg2000": ("CT", "axial", False, JPEG2000Lossless, 0.0),
    "ct_tilted_15": ("CT", "axial", False, None, 15.0),
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict[str, PhantomSeries]:
    """One series of each kind, written once for the module."""
    root = tmp_path_factory.mktemp("dicom_archive")
    written = {}
    for number, (name, (modality, orientation, enhanced, syntax, tilt)) in enumerate(KINDS.items()):
        image, labels = phantom(seed=97100 + number, modality=modality.lower(), orientation=orientation)
        options = {"transfer_syntax": syntax} if syntax else {}
        written[name] = write_phantom_series(root / name, image, labels, modality=modality, enhanced=enhanced,
                                             tilt_degrees=tilt, seed=number, **options)
    return written


def labels_at(labels: Image, world: np.ndarray) -> np.ndarray:
    """The label map's value at each world point (``(..., 3)`` LPS mm), nearest voxel; −1 outside."""
    affine = labels.geometry.affine_lps
    index = np.rint((world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(np.int64)
    shape = np.asarray(labels.geometry.shape[::-1])
    inside = np.all((index >= 0) & (index < shape), axis=-1)
    index = np.clip(index, 0, shape - 1)
    return np.where(inside, labels.array[index[..., 2], index[..., 1], index[..., 0]], -1)


def frames_by_pydicom(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every frame of a SEG file as (world coordinates of its pixel centres, class values), placed
    by its own PlanePositionSequence and the shared orientation and pixel spacing: the second reader."""
    seg = pydicom.dcmread(path)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    shared = seg.SharedFunctionalGroupsSequence[0]
    cosines = np.asarray([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    value_of = {item.SegmentNumber: BASE.index_of(item.SegmentLabel) for item in seg.SegmentSequence}
    rows, columns = np.meshgrid(np.arange(int(seg.Rows)), np.arange(int(seg.Columns)), indexing="ij")
    frames = []
    for number, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        origin = np.asarray([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        world = (origin + columns[..., None] * column_spacing * cosines[:3]
                 + rows[..., None] * row_spacing * cosines[3:])
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frames.append((world, np.where(pixels[number] > 0, value_of[segment], 0)))
    return frames


def check_seg_against(path: Path, labels: Image, sources: list[Path] | None = None, *, same_grid: bool = True) -> None:
    """Both readers place every SEG voxel on the label map's class at that world point, and, where
    the labels are on the source's own grid (``same_grid``), every labelled voxel is in the SEG."""
    # reader 1: pydicom + own geometry, frame by frame (one frame per segment per source frame)
    covered: dict[tuple[int, int, int], int] = {}
    for world, values in frames_by_pydicom(path):
        truth = labels_at(labels, world)
        segment = values > 0
        assert np.all(truth[segment] == values[segment])  # every SEG pixel sits on its class
        affine = labels.geometry.affine_lps
        index = np.rint((world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(np.int64)
        for key in map(tuple, index[segment]):
            covered[key] = covered.get(key, 0) + 1
    if same_grid:  # every labelled voxel of the map is in some SEG frame
        k, j, i = np.nonzero(labels.array)
        assert all((a, b, c) in covered for a, b, c in zip(i, j, k))
    # reader 2: highdicom; its own volume placed by its affine, or, for frames that do not form a
    # regular volume (a tilted gantry), its pixels per source slice placed by that slice's header
    seg = hd.seg.segread(str(path))
    value_of = np.zeros(len(seg.SegmentSequence) + 1, np.int64)
    for item in seg.SegmentSequence:
        value_of[item.SegmentNumber] = BASE.index_of(item.SegmentLabel)
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False, skip_overlap_checks=True)
    except RuntimeError:
        assert sources, "a SEG that is no regular volume needs its source files to be placed"
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sources]
        numbers = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], combine_segments=True,
                                                    skip_overlap_checks=True)
        for header, frame in zip(headers, numbers):
            cosines = np.asarray([float(v) for v in header.ImageOrientationPatient])
            dy, dx = (float(v) for v in header.PixelSpacing)
            r, c = np.meshgrid(np.arange(frame.shape[0]), np.arange(frame.shape[1]), indexing="ij")
            world = (np.asarray([float(v) for v in header.ImagePositionPatient]) + c[..., None] * dx * cosines[:3]
                     + r[..., None] * dy * cosines[3:])
            assert np.array_equal(labels_at(labels, world), value_of[frame])
        return
    a, b, c = np.nonzero(volume.array)
    world = (volume.affine @ np.stack([a, b, c, np.ones_like(a)]))[:3].T
    assert np.array_equal(labels_at(labels, world), value_of[volume.array[a, b, c]])


def read_with_truth(series: PhantomSeries) -> tuple[Image, Image]:
    """The series as mrseg reads it, and the phantom's truth on that grid (world coordinates)."""
    image = read_image(series.folder)
    return image, resample_labels(series.labels, image)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_read_on_its_world_grid_and_its_seg_lands_on_the_labels(archive, kind, tmp_path):
    series = archive[kind]
    image, labels = read_with_truth(series)
    if not series.tilt:
        assert not image.geometry.differences(series.image.geometry, tolerance=1e-3)  # the grid it was written on
        assert np.array_equal(labels.array, series.labels.array)
    written = write_dicom_seg(labels.with_array(labels.array.astype(np.uint8)), select_series(series.folder),
                              tmp_path / "seg.dcm", classes=NAMES)
    assert written.notes == ()
    check_seg_against(written.path, labels, series.files, same_grid=not series.tilt)


@pytest.mark.parametrize("kind", ["mr_axial", "mr_sagittal", "mr_coronal", "mr_oblique", "ct_axial",
                                  "mr_enhanced_oblique", "ct_axial_jpeg2000", "ct_tilted_15"])
def test_sources_and_their_segs_pass_the_dicom_validator(archive, kind, tmp_path):
    series = archive[kind]
    assert dciodvfy_errors(series.files[0]) == []  # the source is valid, so the SEG must be too
    image, labels = read_with_truth(series)
    written = write_dicom_seg(labels.with_array(labels.array.astype(np.uint8)), select_series(series.folder),
                              tmp_path / "seg.dcm", classes=NAMES)
    assert dciodvfy_errors(written.path) == []


def test_a_gantry_tilt_is_resampled_onto_a_regular_grid_with_a_warning(archive, caplog):
    series = archive["ct_tilted_15"]
    found = select_series(series.folder)
    assert found.shear is not None and found.shear.degrees == pytest.approx(15.0, abs=0.01)
    with caplog.at_level("WARNING"):
        image = read_image(series.folder)
    assert "gantry tilt" in caplog.text and "resampled onto a regular grid" in caplog.text
    assert np.allclose(image.geometry.direction_matrix, np.eye(3), atol=1e-6)  # a regular axial grid
    # the image sits where the phantom is: compare with the phantom on the same world points
    phantom_image = Image(series.image.array, series.image.geometry)
    world_labels = resample_labels(series.labels, image)
    body = world_labels.array > 0
    assert body.sum() > 1000
    # a structure's centre of mass in world coordinates stays where it was (no shift along the tilt)
    liver = BASE.index_of("liver")
    got = image.geometry.affine_lps @ np.r_[np.argwhere(world_labels.array == liver).mean(0)[::-1], 1.0]
    true = phantom_image.geometry.affine_lps @ np.r_[np.argwhere(series.labels.array == liver).mean(0)[::-1], 1.0]
    assert np.linalg.norm(got[:3] - true[:3]) < 3.0  # mm, on a 6 mm grid


def test_zip_archives_and_dicomdirs_are_read_like_folders(archive, tmp_path):
    series = archive["mr_coronal"]
    packed = zip_series(series, tmp_path / "export.zip")
    from_zip = read_image(packed)
    assert not from_zip.geometry.differences(series.image.geometry, tolerance=1e-3)
    assert np.array_equal(from_zip.array, read_image(series.folder).array)
    shutil.copytree(series.folder, tmp_path / "cd_source")
    dicomdir = write_dicomdir(tmp_path / "cd_source")
    from_dicomdir = read_image(dicomdir)
    assert np.array_equal(from_dicomdir.array, from_zip.array)
    found = select_series(packed)
    extracted = found.files[0].parent
    assert extracted.is_dir()
    del found
    import gc

    gc.collect()
    assert not extracted.exists()  # the extraction goes with its series


def test_a_zip_member_escaping_the_archive_is_refused(tmp_path):
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../outside.dcm", b"DICM")
    with pytest.raises(InputError, match="would land outside the archive's folder"):
        read_image(evil)
    assert not (tmp_path.parent / "outside.dcm").exists()
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="cannot read this zip archive"):
        read_image(tmp_path / "broken.zip")


def test_a_series_with_a_missing_slice_names_the_gap(tmp_path):
    image, labels = phantom(seed=97200, orientation="axial")
    write_phantom_series(tmp_path / "gap", image, labels, drop_slices=[7])
    with pytest.raises(InputError, match=r"1 slice\(s\) missing between .* mm and .* mm along the slice normal "
                                         r"\(files IM\d+ and IM\d+; the other slices are .* mm apart\)"):
        read_image(tmp_path / "gap")


def test_an_anonymised_source_gets_new_identifiers_and_a_valid_seg(tmp_path):
    image, labels = phantom(seed=97300, orientation="axial")
    series = write_phantom_series(tmp_path / "anon", image, labels, blank=("StudyInstanceUID", "SeriesInstanceUID"))
    read = read_image(series.folder)
    written = write_dicom_seg(read.with_array(labels.array.astype(np.uint8)), select_series(series.folder),
                              tmp_path / "seg.dcm", classes=NAMES)
    assert [note.split(" has no ")[1].split(":")[0] for note in written.notes] == ["StudyInstanceUID",
                                                                                   "SeriesInstanceUID"]
    check_seg_against(written.path, read.with_array(labels.array))
    assert dciodvfy_errors(written.path) == []


@pytest.mark.slow
def test_mrseg_segment_writes_matching_nifti_and_valid_seg_for_every_input_kind(archive, tmp_path):
    """The real command on an enhanced multi-frame file, a tilted CT, a zip archive and a DICOMDIR:
    NIfTI labels and DICOM-SEG agree in world coordinates, the SEG is valid, and the record says
    where the grid was resampled."""
    import json

    from mrseg_processes import run_mrseg

    inputs = tmp_path / "inputs"
    shutil.copytree(archive["mr_enhanced_oblique"].folder, inputs / "enhanced")
    shutil.copytree(archive["ct_tilted_15"].folder, inputs / "tilted")
    zip_series(archive["mr_sagittal"], inputs / "exported.zip")
    shutil.copytree(archive["ct_axial_jpeg2000"].folder, tmp_path / "cd_source")
    dicomdir = write_dicomdir(tmp_path / "cd_source")
    out = tmp_path / "out"
    done = run_mrseg("segment", str(inputs / "enhanced"), str(inputs / "tilted"), str(inputs / "exported.zip"),
                     str(dicomdir), "-o", str(out), "--model", "demo", "--output-type", "both", "--fast",
                     "--no-progress", timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    sources = {"enhanced": archive["mr_enhanced_oblique"].files, "tilted": archive["ct_tilted_15"].files,
               "exported": None, "cd": None}  # a DICOMDIR case is named after its folder
    for name, files in sources.items():
        labels = read_image(out / f"{name}_seg.nii.gz")
        assert np.count_nonzero(labels.array) > 100, name
        check_seg_against(out / f"{name}_seg.dcm", labels, files, same_grid=name != "tilted")
        assert dciodvfy_errors(out / f"{name}_seg.dcm") == [], name
    record = json.loads((out / "tilted_seg_record.json").read_text())
    assert any("gantry tilt" in note for note in record["notes"])
    assert json.loads((out / "enhanced_seg_record.json").read_text())["notes"] == []
