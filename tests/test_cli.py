"""The ``mrseg segment`` command: outputs, batches, naming, exit codes and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrseg.cli import main
from mrseg.io import read_image, write_image
from parity import phantom_image


@pytest.fixture()
def cases(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(phantom_image("RAS", seed=1), folder / "a.nii.gz")
    write_image(phantom_image("PIL", seed=2), folder / "b.mha")
    write_image(phantom_image("oblique", seed=3), folder / "c.nrrd")
    return folder


def run(*args: str) -> int:
    return main(["segment", "--no-progress", *args])


def test_help_and_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "mrseg", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "segment" in done.stdout
    done = subprocess.run([sys.executable, "-m", "mrseg", "segment", "--help"], capture_output=True, text=True)
    assert "--fast" in done.stdout and "--folds" in done.stdout


def test_folder_batch_writes_labels_on_each_input_grid(model_dir, cases, tmp_path):
    out = tmp_path / "out"
    assert run(str(cases), "-o", str(out), "--model", str(model_dir())) == 0
    for name in ("a.nii.gz", "b.mha", "c.nrrd"):
        image = read_image(cases / name)
        labels = read_image(out / f"{name.split('.')[0]}_seg.nii.gz")
        assert labels.array.dtype == np.uint8
        assert labels.geometry.same_grid(image.geometry, atol=1e-4)
        assert labels.array.max() > 0
    written = sorted(p.name for p in out.iterdir())
    assert written[:3] == ["a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]
    assert len(written) == 4 and written[3].startswith("mrseg_run_")  # and the run report


def test_low_memory_gives_the_same_labels(model_dir, cases, tmp_path):
    """--low-memory only changes where freed memory goes, never the arithmetic."""
    model = str(model_dir())
    for flag, out in (([], tmp_path / "usual"), (["--low-memory"], tmp_path / "low")):
        assert run(str(cases / "a.nii.gz"), "-o", str(out), "--model", model, "--fast", *flag) == 0
    usual, low = (read_image(p / "a_seg.nii.gz").array for p in (tmp_path / "usual", tmp_path / "low"))
    assert usual.max() > 0 and np.array_equal(usual, low)


def test_model_from_environment_glob_and_postfix(model_dir, cases, tmp_path, monkeypatch):
    monkeypatch.setenv("MRSEG_WEIGHTS_PATH", str(model_dir()))
    out = tmp_path / "out"
    assert run(str(cases / "*.nii.gz"), "-o", str(out), "--postfix", "labels", "--fast") == 0
    assert [p.name for p in out.iterdir() if not p.name.startswith("mrseg_run_")] == ["a_labels.nii.gz"]


def test_existing_outputs_are_skipped_unless_overwrite(model_dir, cases, tmp_path, caplog):
    out = tmp_path / "out"
    args = [str(cases / "a.nii.gz"), "-o", str(out), "--model", str(model_dir()), "--fast"]
    assert run(*args) == 0
    target = out / "a_seg.nii.gz"
    target.write_bytes(b"stale")
    assert run(*args) == 0
    assert target.read_bytes() == b"stale" and "skipped" in caplog.text
    assert run(*args, "--overwrite") == 0
    assert read_image(target).array.dtype == np.uint8


def test_bad_cases_are_reported_and_the_rest_finish(model_dir, cases, tmp_path, caplog):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.nii.gz").write_text("not an image")
    good = cases / "a.nii.gz"
    truncated = bad / "cut.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "out"
    code = run(str(bad / "text.nii.gz"), str(truncated), str(bad / "missing.nii.gz"), str(good),
               "-o", str(out), "--model", str(model_dir()), "--fast")
    assert code == 1
    # nothing half-written for the bad ones (the run report records them)
    assert [p.name for p in out.iterdir() if not p.name.startswith("mrseg_run_")] == ["a_seg.nii.gz"]
    assert "text.nii.gz" in caplog.text and "truncated" in caplog.text and "no such file" in caplog.text
    assert "4 case(s): 1 segmented, 0 skipped, 3 failed" in caplog.text


def test_four_d_needs_a_channel(model_dir, tmp_path, caplog):
    volume = phantom_image("LPS").array
    itk = sitk.JoinSeries([sitk.GetImageFromArray(volume), sitk.GetImageFromArray(volume * 2)])
    sitk.WriteImage(itk, str(tmp_path / "dyn.nii.gz"))
    out = tmp_path / "out"
    assert run(str(tmp_path / "dyn.nii.gz"), "-o", str(out), "--model", str(model_dir()), "--fast") == 1
    assert "--channel" in caplog.text
    assert run(str(tmp_path / "dyn.nii.gz"), "-o", str(out), "--model", str(model_dir()), "--fast",
               "--channel", "1") == 0
    assert (out / "dyn_seg.nii.gz").exists()


def test_two_d_image_is_refused(model_dir, tmp_path, caplog):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.float32)), str(tmp_path / "flat.nii.gz"))
    assert run(str(tmp_path / "flat.nii.gz"), "-o", str(tmp_path / "out"), "--model", str(model_dir())) == 1
    assert "2-D" in caplog.text


def test_nan_voxels_are_repaired_with_a_warning(model_dir, tmp_path, caplog):
    """MHA keeps NaN (SimpleITK's NIfTI reader already turns NaN into 0 itself)."""
    image = phantom_image("LPS")
    array = image.array.copy()
    array[0, :5, :5] = np.nan
    array[1, 0, 0] = np.inf
    write_image(image.with_array(array), tmp_path / "nan.mha")
    assert run(str(tmp_path / "nan.mha"), "-o", str(tmp_path / "out"), "--model", str(model_dir()), "--fast") == 0
    assert "26 NaN/infinite voxels replaced" in caplog.text


def test_no_model_says_where_to_put_weights(cases, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MRSEG_WEIGHTS_PATH", raising=False)
    assert run(str(cases), "-o", str(tmp_path / "out")) == 2
    assert "--model DIR" in caplog.text and "MRSEG_WEIGHTS_PATH" in caplog.text
    assert not (tmp_path / "out").exists()


def test_model_errors_exit_non_zero(model_dir, cases, tmp_path, caplog):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    assert run(str(cases), "-o", str(tmp_path / "out"), "--model", str(empty)) == 2
    assert "plans.json is missing" in caplog.text
    assert run(str(cases), "-o", str(tmp_path / "out"), "--model", str(model_dir()), "--folds", "0", "4") == 2
    assert "lacks fold(s) 4" in caplog.text


def test_dicom_folder_input(model_dir, tmp_path):
    """A folder without image files is a DICOM case, named after the folder."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    image = phantom_image("LPS", spacing=(1.5, 1.5, 3.0))
    volume = np.round(image.array).astype(np.int16)
    series_uid, study_uid = generate_uid(), generate_uid()
    folder = tmp_path / "ct_series"
    folder.mkdir()
    for k, plane in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "MR", series_uid, study_uid
        ds.PatientName, ds.PatientID = "Phantom", "0"
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing = [1.5, 1.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = plane.tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    assert run(str(folder), "-o", str(out), "--model", str(model_dir()), "--fast") == 0
    labels = read_image(out / "ct_series_seg.nii.gz")
    assert labels.array.shape == volume.shape
    # This series has no FrameOfReferenceUID, so the automatic DICOM-SEG is left out (with a warning).
    assert not (out / "ct_series_seg.dcm").exists()
    assert labels.array.max() > 0
