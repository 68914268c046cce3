"""DICOM series: synthetic series written with pydicom, series selection, and the real sample data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_factory import COLUMNS, CORONAL, PIXEL_X, PIXEL_Y, ROWS, SLICES, STEP, _stored_value, write_series
from mrseg.errors import InputError
from mrseg.io import Image, orientation_code, read_image, reorient, write_image
from mrseg.io.dicom import find_series, select_series


def _expected_array() -> np.ndarray:
    array = np.empty((SLICES, ROWS, COLUMNS), dtype=np.int64)
    for n in range(SLICES):
        array[n] = _stored_value(n) - 1024
        array[n, 0, :] = np.arange(COLUMNS)
    return array


# --- synthetic series ---------------------------------------------------------------------------


def test_read_series(tmp_path) -> None:
    write_series(tmp_path / "series")
    img = read_image(tmp_path / "series")
    assert img.array.shape == (SLICES, ROWS, COLUMNS)
    assert img.geometry.shape == (5, 10, 8)
    np.testing.assert_allclose(img.geometry.spacing, (PIXEL_X, PIXEL_Y, STEP), atol=1e-6, rtol=0)
    np.testing.assert_allclose(img.geometry.origin, (-20.0, 35.5, -101.0), atol=1e-6, rtol=0)
    np.testing.assert_allclose(img.geometry.direction, np.eye(3).ravel(), atol=1e-6, rtol=0)
    assert orientation_code(img.geometry) == "LPS"
    # slices in position order (not instance-number or file-name order), rescaled to HU
    assert np.issubdtype(img.array.dtype, np.signedinteger) or np.issubdtype(img.array.dtype, np.floating)
    np.testing.assert_array_equal(img.array, _expected_array())


def test_read_coronal_series(tmp_path) -> None:
    write_series(tmp_path / "series", orientation=CORONAL, origin=(5.0, -60.0, 80.0))
    img = read_image(tmp_path / "series")
    np.testing.assert_allclose(img.geometry.spacing, (PIXEL_X, PIXEL_Y, STEP), atol=1e-6, rtol=0)
    np.testing.assert_allclose(img.geometry.origin, (5.0, -60.0, 80.0), atol=1e-6, rtol=0)
    # columns of the direction: row direction, column direction, slice normal
    expected = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    np.testing.assert_allclose(img.geometry.direction_matrix, expected, atol=1e-6, rtol=0)
    assert orientation_code(img.geometry) == "LIP"
    np.testing.assert_array_equal(img.array, _expected_array())


def test_find_series_sorts_files_along_normal(tmp_path) -> None:
    import pydicom

    uid = write_series(tmp_path)
    (series,) = find_series(tmp_path)
    assert series.uid == uid
    assert series.modality == "CT" and series.description == "synthetic CT"
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in series.files]
    assert z == sorted(z) and len(z) == SLICES
    instances = [int(pydicom.dcmread(f).InstanceNumber) for f in series.files]
    assert instances != sorted(instances)  # the ordering really came from the positions


def test_nested_folders(tmp_path) -> None:
    write_series(tmp_path / "patient" / "a" / "b")
    (tmp_path / "patient" / "README.txt").write_text("not DICOM")
    img = read_image(tmp_path / "patient")
    assert img.array.shape == (5, 10, 8)
    np.testing.assert_array_equal(img.array, _expected_array())


@pytest.fixture
def two_series(tmp_path) -> tuple[Path, str, str]:
    folder = tmp_path / "study"
    uid_a = write_series(folder, description="axial soft tissue", seed=1)
    uid_b = write_series(folder, slices=3, description="bone kernel", origin=(0.0, 0.0, 0.0), seed=2)
    return folder, uid_a, uid_b


def test_two_series_need_a_choice(two_series) -> None:
    folder, uid_a, uid_b = two_series
    with pytest.raises(InputError, match=r"holds 2 DICOM series; choose one with --series UID") as info:
        read_image(folder)
    message = str(info.value)
    assert uid_a in message and uid_b in message
    assert "'axial soft tissue'" in message and "'bone kernel'" in message
    assert "5 slices" in message and "3 slices" in message
    # the larger series is listed first
    assert message.index(uid_a) < message.index(uid_b)


def test_series_option_picks_the_right_one(two_series) -> None:
    folder, uid_a, uid_b = two_series
    small = read_image(folder, series=uid_b)
    assert small.array.shape == (3, 10, 8)
    np.testing.assert_allclose(small.geometry.origin, (0.0, 0.0, 0.0), atol=1e-6)
    np.testing.assert_array_equal(small.array, _expected_array()[:3])
    large = read_image(folder, series=uid_a)
    assert large.array.shape == (5, 10, 8)
    assert select_series(folder, uid_a).uid == uid_a


def test_unknown_series_uid(two_series) -> None:
    folder, uid_a, uid_b = two_series
    with pytest.raises(InputError, match=r"no series with UID 1\.2\.3\.4; series found:") as info:
        read_image(folder, series="1.2.3.4")
    assert uid_a in str(info.value) and uid_b in str(info.value)


def test_series_uid_on_single_series_folder(tmp_path) -> None:
    uid = write_series(tmp_path)
    assert read_image(tmp_path, series=uid).array.shape == (5, 10, 8)
    with pytest.raises(InputError, match="no series with UID 9.9"):
        read_image(tmp_path, series="9.9")


def test_empty_folder(tmp_path) -> None:
    with pytest.raises(InputError, match=r"no image files \(.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr\) in this folder "
                                         r"and no DICOM image files in it or below it"):
        read_image(tmp_path)


def test_folder_with_only_text(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.dcm").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match=r"no DICOM"):
        read_image(tmp_path)


def test_dicom_without_pixels_is_ignored(tmp_path) -> None:
    """A DICOM file that is not an image (no Rows), such as a DICOMDIR or report, is skipped."""
    write_series(tmp_path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = FileDataset(str(tmp_path / "report"), {}, file_meta=meta, preamble=b"\0" * 128)
    report.SOPClassUID = meta.MediaStorageSOPClassUID
    report.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    report.SeriesInstanceUID = generate_uid()
    report.Modality = "SR"
    report.save_as(tmp_path / "report", enforce_file_format=True)
    assert len(find_series(tmp_path)) == 1
    assert read_image(tmp_path).array.shape == (5, 10, 8)


def test_truncated_pixel_data(tmp_path) -> None:
    write_series(tmp_path)
    victim = sorted(tmp_path.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-40])  # header intact, last pixels missing
    with pytest.raises(InputError, match=r"cannot decode DICOM series .*\(5 files from"):
        read_image(tmp_path)


def test_missing_slice_is_an_error(tmp_path) -> None:
    import pydicom

    write_series(tmp_path)
    middle_z = -101.0 + 2 * STEP
    for f in tmp_path.iterdir():
        if float(pydicom.dcmread(f).ImagePositionPatient[2]) == middle_z:
            f.unlink()
    with pytest.raises(InputError, match="slice"):
        read_image(tmp_path)


# --- real sample data (skipped when ../shared/data is absent) -----------------------------------


def test_real_jpeg2000_series(shared_data) -> None:
    img = read_image(shared_data / "dicom" / "example_ct_series")
    assert img.array.shape == (20, 512, 512)
    np.testing.assert_allclose(img.geometry.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    assert orientation_code(img.geometry) == "LPS"
    assert img.array.min() < -500 < 500 < img.array.max()  # air and bone in Hounsfield units

    labels = read_image(shared_data / "labels" / "example_ct_series__totalseg117.nii.gz")
    assert orientation_code(labels.geometry) == "LAS"
    as_lps, _ = reorient(labels, "LPS")
    assert as_lps.geometry.shape == img.geometry.shape
    np.testing.assert_allclose(as_lps.geometry.spacing, img.geometry.spacing, atol=1e-3, rtol=0)
    np.testing.assert_allclose(as_lps.geometry.origin, img.geometry.origin, atol=1e-3, rtol=0)
    np.testing.assert_allclose(as_lps.geometry.direction, img.geometry.direction, atol=1e-3, rtol=0)
    assert as_lps.geometry.same_grid(img.geometry, atol=1e-3)


@pytest.mark.parametrize(
    ("relative", "code"),
    [
        ("ct/example_ct.nii.gz", "RAS"),
        ("ct/thorax_cta.nii.gz", "LPS"),
        ("mr/prostatex_0000_t2_tse_tra.nii.gz", "LAS"),
        ("ct/example_ct_sm.nii.gz", "RAS"),
    ],
)
def test_real_nifti_label_output_keeps_geometry(shared_data, tmp_path, relative: str, code: str) -> None:
    source = shared_data / relative
    img = read_image(source)
    assert orientation_code(img.geometry) == code

    array = np.zeros(img.array.shape, dtype=np.uint8)
    array[tuple(s // 2 for s in img.array.shape)] = 7
    labels = Image(array, img.geometry)
    out = write_image(labels, tmp_path / f"labels_{Path(relative).name}")

    reference, written = nib.load(source), nib.load(out)
    assert written.shape == img.array.shape[::-1] == reference.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4, rtol=0)
    assert written.get_data_dtype() == np.uint8
    # the marked voxel lands at the same (x, y, z) voxel index nibabel reports
    centre = tuple(s // 2 for s in reference.shape)
    assert np.asarray(written.dataobj)[centre] == 7
