"""Draft files for ITK-SNAP and 3D Slicer, read back with the libraries those tools use, and the
checks a correction must pass."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
import slicerio

from mrseg.annotation.exchange import (
    itksnap_labels,
    read_correction,
    read_itksnap_labels,
    write_draft_files,
    write_slicer_segmentation,
)
from mrseg.classes import BASE, class_colors
from mrseg.errors import InputError
from mrseg.io import Image, read_image, write_image
from mrseg.phantom import make_case

NAMES = {c.index: c.name for c in BASE.classes}
CLASSES = {c.name: c.index for c in BASE.classes}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A phantom image (oblique axes: a real test of the Slicer geometry) and its truth labels."""
    folder = tmp_path_factory.mktemp("exchange")
    made = make_case(seed=94000, fov="abdomen", spacing=(6.0, 6.0, 6.0), orientation="oblique")
    image = write_image(made.image, folder / "scan.nii.gz")
    return image, made.labels


def test_the_slicer_segmentation_has_every_class_named_coloured_with_terminology_and_the_draft_voxels(case, tmp_path):
    _, labels = case
    path = write_slicer_segmentation(labels, NAMES, tmp_path / "draft.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(path))
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert list(segments) == list(NAMES.values())  # empty classes too: the annotator can paint them
    liver = segments["liver"]
    assert liver["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    assert segments["left_kidney"]["terminology"]["typeModifier"] == ["SCT", "7771000", "Left"]
    assert np.allclose(liver["color"], [c / 255 for c in class_colors(NAMES)[5]], atol=1e-3)
    assert np.allclose(segmentation["ijkToLPS"], labels.geometry.affine_lps, atol=1e-4)
    mask = slicerio.segment_mask(segmentation, liver)
    assert np.array_equal(mask.transpose(2, 1, 0), labels.array == 5)
    assert not list(tmp_path.glob(".*"))


def test_the_draft_files_open_in_itksnap_and_slicer_as_named_structures(case, tmp_path):
    image, labels = case
    files = write_draft_files(image, labels, NAMES, tmp_path / "case")
    assert sorted(p.name for p in files.values()) == ["draft.nii.gz", "draft.seg.nrrd", "image.nii.gz", "labels.txt"]
    draft = nibabel.load(str(files["draft"]))
    assert np.array_equal(np.asarray(draft.dataobj).transpose(2, 1, 0), labels.array)
    assert np.allclose(nibabel.load(str(files["image"])).affine, draft.affine)
    assert read_itksnap_labels(files["itksnap_labels"]) == NAMES
    lines = files["itksnap_labels"].read_text().splitlines()
    assert lines[5].split()[:4] == ["1", *map(str, class_colors(NAMES)[1])] and lines[5].endswith('"spleen"')
    assert itksnap_labels({5: "liver"}).count("\n") == 6


def test_corrections_come_back_from_nifti_and_from_slicer(case, tmp_path):
    image, labels = case
    grid = read_image(image).geometry
    write_image(labels, tmp_path / "corrected.nii.gz")
    assert np.array_equal(read_correction(tmp_path / "corrected.nii.gz", grid, CLASSES).array, labels.array)
    write_slicer_segmentation(labels, NAMES, tmp_path / "corrected.seg.nrrd")
    back = read_correction(tmp_path / "corrected.seg.nrrd", grid, CLASSES)
    assert np.array_equal(back.array, labels.array) and back.geometry == grid


def test_a_correction_on_another_grid_with_unknown_labels_or_empty_is_refused(case, tmp_path):
    image, labels = case
    grid = read_image(image).geometry
    moved = dataclasses.replace(labels.geometry, origin=tuple(o + 3.0 for o in labels.geometry.origin))
    write_image(Image(labels.array, moved), tmp_path / "moved.nii.gz")
    with pytest.raises(InputError, match=r"moved.nii.gz: not on the image's grid \(origin"):
        read_correction(tmp_path / "moved.nii.gz", grid, CLASSES)
    write_image(labels.with_array(np.where(labels.array == 5, 77, labels.array).astype(np.uint8)),
                tmp_path / "unknown.nii.gz")
    with pytest.raises(InputError, match=r"unknown.nii.gz: labels \[77\] are not classes of the project"):
        read_correction(tmp_path / "unknown.nii.gz", grid, CLASSES)
    write_image(labels.with_array(np.zeros_like(labels.array)), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="empty.nii.gz: the correction is empty"):
        read_correction(tmp_path / "empty.nii.gz", grid, CLASSES)
    write_slicer_segmentation(labels, {5: "liver", 1: "tumour"}, tmp_path / "named.seg.nrrd")
    with pytest.raises(InputError, match=r"segments \['tumour'\] are not classes of the project"):
        read_correction(tmp_path / "named.seg.nrrd", grid, CLASSES)
    (tmp_path / "broken.seg.nrrd").write_bytes(b"NRRD0004\nnonsense")
    with pytest.raises(InputError, match="broken.seg.nrrd: not a readable Slicer segmentation"):
        read_correction(tmp_path / "broken.seg.nrrd", grid, CLASSES)


def test_what_a_killed_draft_writer_left_goes_when_the_draft_is_written_again(case, tmp_path):
    """A Slicer write killed midway leaves a hidden ``.draft.seg.nrrd.XXXX.part.seg.nrrd``: once it
    is older than a live writer could be, writing the case's draft files removes it."""
    image, labels = case
    folder = tmp_path / "case"
    folder.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from mrseg.io.files import write_atomic\n"
        "def write(temporary):\n"
        "    temporary.write_text('half a segmentation'); print(temporary, flush=True); time.sleep(60)\n"
        f"write_atomic(Path({str(folder / 'draft.seg.nrrd')!r}), write, suffix='.seg.nrrd')")],
        stdout=subprocess.PIPE, text=True)
    leftover = Path(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert leftover.is_file() and leftover.name.endswith(".part.seg.nrrd")
    fresh = folder / ".labels.txt.abcd.part"  # a live writer's: left alone
    fresh.write_text("being written")
    an_hour_ago = time.time() - 3700
    os.utime(leftover, (an_hour_ago, an_hour_ago))
    write_draft_files(image, labels, NAMES, folder)
    assert not leftover.exists() and fresh.exists()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "draft.nii.gz", "draft.seg.nrrd", "image.nii.gz", "labels.txt"]
