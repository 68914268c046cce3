"""The ``mrseg segment`` command: outputs, batches, naming, exit codes and bad input.

Bad paths run as real processes, so the tests see exactly what a user sees: the exit code, one
line on stderr and no traceback, and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrseg.cli import main
from mrseg.io import read_image, write_image
from mrseg_processes import run_mrseg
from parity import phantom_image, two_piece_image


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
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("mrseg_run_"))
    assert written == ["a_seg.nii.gz", "a_seg_record.json", "b_seg.nii.gz", "b_seg_record.json", "c_seg.nii.gz",
                       "c_seg_record.json"]
    assert len(list(out.glob("mrseg_run_*.json"))) == 1  # and the run record


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
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("mrseg_run_")) == [
        "a_labels.nii.gz", "a_labels_record.json"]


def test_a_done_case_is_skipped_and_a_damaged_output_made_again(model_dir, cases, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(cases / "a.nii.gz"), "-o", str(out), "--model", str(model_dir()), "--fast"]
    assert run(*args) == 0
    target = out / "a_seg.nii.gz"
    assert run(*args) == 0
    assert "skipped    " in capsys.readouterr().out
    target.write_bytes(b"damaged")  # not the size the case record holds: the case is not done
    assert run(*args) == 0
    assert "segmented  " in capsys.readouterr().out
    assert read_image(target).array.dtype == np.uint8
    assert run(*args, "--overwrite") == 0
    assert "1 segmented" in capsys.readouterr().out


def test_bad_cases_are_reported_and_the_rest_finish(model_dir, cases, tmp_path, caplog):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.nii.gz").write_text("not an image")
    good = cases / "a.nii.gz"
    truncated = bad / "cut.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "out"
    code = run(str(bad / "text.nii.gz"), str(truncated), str(good), "-o", str(out), "--model", str(model_dir()),
               "--fast")
    assert code == 1
    # nothing half-written for the bad ones (the run record lists them)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("mrseg_run_")) == [
        "a_seg.nii.gz", "a_seg_record.json"]
    assert "text.nii.gz" in caplog.text and "truncated" in caplog.text
    assert "3 case(s): 1 segmented, 0 completed, 0 skipped, 2 failed" in caplog.text


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


def test_two_d_image_fails_its_case(model_dir, tmp_path, caplog):
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


# --------------------------------------------------------------------------- bad paths, as a user sees them


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder this process cannot write: permission bits for a normal user; for root (whom
    permission bits do not stop) a read-only tmpfs mount; skipped where neither works."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert lines[0].startswith("ERROR ")
    return lines[0]


def test_output_folder_problems_stop_before_any_work(model_dir, cases, tmp_path, read_only_folder):
    scan = str(cases / "a.nii.gz")
    file = tmp_path / "file.txt"
    file.write_text("x")
    for out, message in ((file, "file.txt: exists and is not a folder; give a folder"),
                         (file / "sub", "because " + str(file) + " is a file; choose another -o"),
                         (read_only_folder / "out", "is not writable (Read-only file system)" if os.geteuid() == 0
                          else "is not writable (Permission denied)")):
        done = run_mrseg("segment", scan, "-o", str(out), "--model", str(model_dir()), "--no-progress")
        assert done.returncode == 2 and message in one_error_line(done)
    assert file.read_text() == "x" and list(read_only_folder.iterdir()) == []


def test_a_missing_input_writes_nothing(model_dir, cases, tmp_path):
    out = tmp_path / "out"
    done = run_mrseg("segment", str(cases / "a.nii.gz"), str(tmp_path / "nope.nii.gz"), "-o", str(out),
                     "--model", str(model_dir()))
    assert done.returncode == 2
    assert one_error_line(done) == f"ERROR {tmp_path / 'nope.nii.gz'}: no such file or folder; check the path"
    assert not out.exists()


def test_an_empty_folder_says_what_was_looked_for(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_mrseg("segment", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--model", str(model_dir()))
    assert done.returncode == 2
    assert "the folder is empty; give image files (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr) or a DICOM series" in \
        one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_a_model_name_typo_gets_the_closest_names(cases, tmp_path):
    done = run_mrseg("segment", str(cases / "a.nii.gz"), "-o", str(tmp_path / "out"), "--model", "demoo",
                     cwd=tmp_path)
    assert done.returncode == 2 and "unknown model 'demoo'; did you mean demo?" in one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_an_empty_checkpoint_is_named(model_dir, cases, tmp_path):
    broken = tmp_path / "broken_model"
    shutil.copytree(model_dir(), broken)
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    done = run_mrseg("segment", str(cases / "a.nii.gz"), "-o", str(tmp_path / "out"), "--model", str(broken),
                     "--fast")
    assert done.returncode == 2
    assert "checkpoint_final.pth: cannot load checkpoint (the file is empty, 0 bytes)" in one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_an_unknown_class_is_refused(model_dir, cases, tmp_path):
    done = run_mrseg("segment", str(cases / "a.nii.gz"), "-o", str(tmp_path / "out"), "--model", str(model_dir()),
                     "--classes", "clas_1")
    assert done.returncode == 2 and "unknown class 'clas_1' in --classes; did you mean class_1" in one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_an_mha_whose_header_promises_more_voxels_than_it_holds(model_dir, cases, tmp_path):
    small = tmp_path / "small.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 10, 10), np.int16)), str(small))
    big = tmp_path / "bad" / "big.mha"
    big.parent.mkdir()
    big.write_bytes(small.read_bytes().replace(b"DimSize = 10 10 10", b"DimSize = 1200 1200 1200"))
    out = tmp_path / "out"
    done = run_mrseg("segment", str(big), str(cases / "a.nii.gz"), "-o", str(out), "--model", str(model_dir()),
                     "--fast", "--no-progress")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "big.mha: cannot read this image (file truncated: the header promises 1200x1200x1200 voxels " \
           "(3,456,000,000 bytes), the file holds" in done.stderr
    assert not list(out.glob("big*")) and (out / "a_seg.nii.gz").is_file()


def test_folder_input_leaves_out_label_maps_and_says_so(model_dir, cases, tmp_path):
    out = tmp_path / "out"
    assert run_mrseg("segment", str(cases), "-o", str(out), "--model", str(model_dir()), "--fast",
                     "--no-progress").returncode == 0
    shutil.copy(out / "a_seg.nii.gz", cases / "a_seg.nii.gz")  # an earlier output among the inputs
    shutil.copy(out / "b_seg.nii.gz", cases / "b_labels.nii.gz")
    done = run_mrseg("segment", str(cases), "-o", str(out), "--model", str(model_dir()), "--fast", "--no-progress")
    assert done.returncode == 0
    assert "left out 2 file(s) of the input folders that are label maps or earlier outputs" in done.stderr
    assert "3 case(s): 0 segmented, 0 completed, 3 skipped, 0 failed" in done.stdout
    assert not (out / "a_seg_seg.nii.gz").exists()


def test_success_goes_to_stdout_and_the_record_holds_every_stage(model_dir, cases, tmp_path):
    out = tmp_path / "out"
    done = run_mrseg("segment", str(cases / "a.nii.gz"), "-o", str(out), "--model", str(model_dir()), "--fast",
                     "--no-progress", "--statistics", "--preview")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[-1].startswith("1 case(s): 1 segmented, 0 completed, 0 skipped, 0 failed")
    record = json.loads((out / "a_seg_record.json").read_text())
    stages = {"read", "preprocess", "predict", "export", "write", "statistics", "preview"}
    assert set(record["timings"]) == stages  # written before the commit that makes it visible
    assert record["settings"]["precision"] == "fp32" and record["versions"]["mrseg"]
    (run_record,) = [json.loads(p.read_text()) for p in out.glob("mrseg_run_*.json")]
    assert set(run_record["cases"][0]["timings"]) == stages | {"commit"}


def test_no_ensemble_runs_the_folders_own_model_alone(model_dir, cases, tmp_path, caplog):
    """--no-ensemble labels as the folder's own model does without its members, and a case
    segmented by the whole ensemble is not taken as done by it (nor the other way round)."""
    from mrseg.model.ensemble import make_ensemble

    folder = make_ensemble([model_dir(), model_dir(spacing=(2.4, 1.2, 1.2))], out=tmp_path / "ensemble")
    image = str(cases / "a.nii.gz")
    assert run(image, "-o", str(tmp_path / "plain"), "--model", str(model_dir()), "--fast") == 0
    assert run(image, "-o", str(tmp_path / "both"), "--model", str(folder), "--fast") == 0
    assert run(image, "-o", str(tmp_path / "alone"), "--model", str(folder), "--fast", "--no-ensemble") == 0
    labels = {name: read_image(tmp_path / name / "a_seg.nii.gz").array for name in ("plain", "both", "alone")}
    assert np.array_equal(labels["alone"], labels["plain"])
    assert not np.array_equal(labels["both"], labels["plain"])  # the finer member changes some voxels
    records = {name: json.loads((tmp_path / name / "a_seg_record.json").read_text()) for name in ("both", "alone")}
    (member,) = records["both"]["settings"]["members"]
    assert member["folder"].startswith("members/") and member["configuration"] == "3d_fullres"
    assert "members" not in records["alone"]["settings"]

    assert run(image, "-o", str(tmp_path / "both"), "--model", str(folder), "--fast", "--no-ensemble") == 1
    assert "made with other settings (members" in caplog.text
    assert np.array_equal(read_image(tmp_path / "both" / "a_seg.nii.gz").array, labels["both"])


def test_a_folders_postprocessing_runs_unless_turned_off(model_dir, tmp_path, caplog):
    """A model folder's nnU-Net postprocessing.json shapes the labels by default; --no-postprocessing
    gives the engine's own, and a case done one way is not taken as done the other way."""
    from mrseg.model.postprocessing import KeepLargestComponent, write_postprocessing
    from mrseg.postprocess import keep_largest_components

    folder = tmp_path / "model"
    shutil.copytree(model_dir(), folder)
    steps = (KeepLargestComponent((1, 2, 3, 4)),)
    write_postprocessing(steps, folder / "postprocessing.json")
    image = str(tmp_path / "in" / "a.nii.gz")
    write_image(two_piece_image("LPS"), image)
    assert run(image, "-o", str(tmp_path / "raw"), "--model", str(folder), "--fast", "--no-postprocessing") == 0
    assert run(image, "-o", str(tmp_path / "done"), "--model", str(folder), "--fast") == 0
    raw, done = (read_image(tmp_path / name / "a_seg.nii.gz").array for name in ("raw", "done"))
    assert np.array_equal(done, keep_largest_components(raw, steps))
    assert not np.array_equal(done, raw)
    record = json.loads((tmp_path / "done" / "a_seg_record.json").read_text())
    assert record["settings"]["postprocessing"] == [[1, 2, 3, 4]]
    assert run(image, "-o", str(tmp_path / "done"), "--model", str(folder), "--fast", "--no-postprocessing") == 1
    assert "made with other settings (postprocessing" in caplog.text


def test_a_broken_postprocessing_file_is_named_and_nothing_is_written(model_dir, cases, tmp_path):
    """In a real process: one line naming the file and what is wrong, exit 2, no output folder."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir(), folder)
    (folder / "postprocessing.json").write_text(json.dumps(
        {"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
         "postprocessing_kwargs": [{"labels_or_regions": 77}]}))
    done = run_mrseg("segment", str(cases), "-o", str(tmp_path / "out"), "--model", str(folder), "--no-progress")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{folder / 'postprocessing.json'}: label(s) 77 are not among the labels" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
