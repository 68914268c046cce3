"""The segmenter (:mod:`mrseg.inference.segmenter`): option checks, devices, non-finite repair,
and one run end to end on a trained tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrseg.errors import InputError, ModelError
from mrseg.inference import Segmentation, Segmenter
from mrseg.inference.segmenter import repair_nonfinite, resolve_device
from mrseg.io.image import Image
from parity import phantom_image


def test_repair_nonfinite():
    array = np.array([[[np.nan, -np.inf, 1.5], [np.inf, -2.0, 7.0]]], np.float32)
    before = array.copy()
    fixed, count = repair_nonfinite(array)
    assert count == 3
    assert fixed.dtype == np.float32
    assert np.array_equal(fixed, np.array([[[-2.0, -2.0, 1.5], [7.0, -2.0, 7.0]]], np.float32))
    assert np.array_equal(array, before, equal_nan=True)  # the input is not modified


def test_repair_leaves_finite_and_integer_arrays_alone():
    finite = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    assert repair_nonfinite(finite) == (finite, 0)
    assert repair_nonfinite(finite)[0] is finite
    integers = np.arange(-4, 4, dtype=np.int16).reshape(2, 2, 2)
    fixed, count = repair_nonfinite(integers)
    assert fixed is integers and count == 0


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_repair_with_no_finite_voxel_raises(fill):
    with pytest.raises(InputError, match=r"scan\.nii\.gz: no finite voxel"):
        repair_nonfinite(np.full((2, 3, 4), fill), source="scan.nii.gz")


def test_cpu_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_unavailable(device):
    with pytest.raises(InputError, match="not available"):
        resolve_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_unavailable():
    with pytest.raises(InputError, match="MPS is not available"):
        resolve_device("mps")


@pytest.mark.parametrize("device", ["tpu", "nonsense", "meta", "cuda:x"])
def test_unknown_devices(device):
    with pytest.raises(InputError, match=rf"device '{device}' not (understood|supported); use cpu, cuda"):
        resolve_device(device)


@pytest.fixture(scope="module")
def segmenter(model_dir):
    return Segmenter(model_dir(), folds=[0], threads=1)


@pytest.mark.parametrize("step", [0, 1.5, -0.1])
def test_segmenter_bad_step(model_dir, step):
    with pytest.raises(InputError, match=rf"step must be in \(0, 1\], got {step}"):
        Segmenter(model_dir(), step=step)


def test_segmenter_bad_threads(model_dir):
    with pytest.raises(InputError, match="threads must be at least 1, got 0"):
        Segmenter(model_dir(), threads=0)


def test_segmenter_bad_device(model_dir):
    with pytest.raises(InputError, match="not understood"):
        Segmenter(model_dir(), device="nonsense")


def test_segmenter_accepts_a_loaded_model(segmenter):
    other = Segmenter(segmenter.model, threads=1)
    assert other.model is segmenter.model
    assert len(other.networks) == 1


def test_wrong_number_of_channels(segmenter):
    image = phantom_image("RAS", shape=(8, 16, 16))
    with pytest.raises(InputError, match=r"case7: the model takes 1 input channel\(s\) \(MR\), got 2"):
        segmenter.run([image, image], source="case7")


def test_all_nan_image_is_refused(segmenter):
    image = Image.from_array(np.full((6, 8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match="no finite voxel"):
        segmenter.run(image)


def _with_nonfinite(image: Image) -> tuple[Image, Image, int]:
    """The image with NaN/inf voxels, the same image repaired by hand, and how many were set."""
    broken = image.array.copy()
    broken[:, :3, :] = np.nan                     # outside the field of view
    broken[4, 20, 10:14] = np.nan                 # inside the body
    broken[2, 30, 5] = -np.inf
    broken[9, 25, 20] = np.inf
    bad = ~np.isfinite(broken)
    low, high = np.nanmin(broken[np.isfinite(broken)]), np.nanmax(broken[np.isfinite(broken)])
    repaired = np.where(np.isnan(broken) | (broken == -np.inf), low, broken)
    repaired = np.where(repaired == np.inf, high, repaired).astype(np.float32)
    return image.with_array(broken), image.with_array(repaired), int(bad.sum())


def test_segmenter_repairs_nan_and_keeps_inputs_and_geometry(segmenter):
    image = phantom_image("oblique", shape=(16, 40, 36), spacing=(1.3, 1.2, 3.5))
    broken, repaired, count = _with_nonfinite(image)
    before = broken.array.copy()
    geometry = broken.geometry
    ticks: list[tuple[int, int]] = []

    result = segmenter.run(broken, on_tile=lambda done, total: ticks.append((done, total)))

    assert isinstance(result, Segmentation)
    assert np.array_equal(broken.array, before, equal_nan=True)  # the input is not modified
    assert broken.geometry is geometry
    assert result.labels.geometry == image.geometry
    assert result.labels.array.shape == image.array.shape
    assert result.labels.array.dtype == np.uint8
    assert result.repaired_voxels == count
    assert result.num_tiles == len(ticks) >= 1
    assert ticks[-1] == (result.num_tiles, result.num_tiles)
    assert set(result.timings) == {"preprocess", "predict", "export"}
    assert len(np.unique(result.labels.array)) >= 3  # a trained model, not a blank map

    reference = segmenter.run(repaired)
    assert reference.repaired_voxels == 0
    assert np.array_equal(result.labels.array, reference.labels.array)
    assert np.array_equal(segmenter.segment(repaired).array, reference.labels.array)


def test_segmenter_restores_torch_threads(model_dir):
    threads = torch.get_num_threads()
    segmenter = Segmenter(model_dir(), folds=[0], threads=threads + 1)
    assert torch.get_num_threads() == threads
    segmenter.run(phantom_image("RAS", shape=(8, 16, 16)))
    assert torch.get_num_threads() == threads


def test_segmenter_warns_about_repaired_voxels(segmenter, caplog):
    image = phantom_image("RAS", shape=(8, 16, 16))
    broken = image.array.copy()
    broken[0, 0, :5] = np.nan
    with caplog.at_level("WARNING", logger="mrseg.inference.segmenter"):
        result = segmenter.run(image.with_array(broken), source="scan.nii.gz")
    assert result.repaired_voxels == 5
    assert "scan.nii.gz: 5 NaN/infinite voxels replaced" in caplog.text


def test_the_engine_refuses_a_name_without_consulting_the_store(tmp_path, monkeypatch):
    """The engine only loads folders: a model name is resolved (and installed) by the CLI or mrseg.segment()."""
    monkeypatch.chdir(tmp_path)  # no ./demo or ./base here that would make the name a path
    import urllib.request

    from mrseg.model import download, store

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine consulted the model store or the network")

    for name in ("resolve_model_folder", "install", "model_path", "is_installed", "bundled_model_folder", "download"):
        monkeypatch.setattr(store, name, forbidden)
    monkeypatch.setattr(download, "download", forbidden)
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    for name in ("demo", "base"):
        with pytest.raises(ModelError, match=rf"model folder {name} does not exist; pass a model folder.*"
                                             r"mrseg\.model\.store\.resolve_model_folder"):
            Segmenter(name)


@pytest.mark.parametrize("device, expected", [("cpu", "fp32"), ("cuda", "fp16"), ("cuda:1", "fp16"), ("mps", "fp32")])
def test_auto_precision_is_nnunets_whatever_the_cpu(device, expected, monkeypatch):
    """The default never depends on the CPU: fp32 even where bfloat16 is native (nnU-Net's CPU
    precision), fp16 autocast on CUDA as nnU-Net runs there."""
    from mrseg.inference import segmenter

    monkeypatch.setattr(segmenter, "cpu_has_native_bf16", lambda: True)
    assert segmenter.auto_precision(torch.device(device)) == expected


def test_bf16_without_native_support_warns(model_dir, monkeypatch, caplog):
    from mrseg.inference import segmenter

    monkeypatch.setattr(segmenter, "cpu_has_native_bf16", lambda: False)
    assert Segmenter(model_dir(), precision="bf16").precision == "bf16"
    assert "no native bfloat16" in caplog.text


@pytest.mark.parametrize(("scales", "message"), [
    ((), r"scales: give at least one factor"),
    ((0.4,), r"scales: every factor must lie in \[0.5, 2.0\], got 0.4"),
    ((1.0, 2.5), r"scales: every factor must lie in \[0.5, 2.0\], got 2.5"),
    ((1.0, 1.2, 1.0), r"scales: each factor once, got 1.0, 1.2, 1.0"),
])
def test_bad_scales_are_refused(model_dir, scales, message):
    with pytest.raises(InputError, match=message):
        Segmenter(model_dir(), scales=scales)


def test_one_scale_is_the_image_shown_that_much_larger(segmenter):
    """Scale 1.25 alone labels the image as the plain engine labels it with voxels 1.25 times larger."""
    image = phantom_image("LPS", shape=(16, 40, 36), spacing=(1.3, 1.2, 3.5))
    magnified = image.with_geometry(spacing=tuple(s * 1.25 for s in image.geometry.spacing))

    scaled = Segmenter(segmenter.model, threads=1, scales=(1.25,)).run(image)
    plain = segmenter.run(magnified)

    assert scaled.labels.geometry == image.geometry
    assert scaled.num_tiles == plain.num_tiles
    # The same network grid; only the export differs (probabilities resampled instead of logits).
    assert np.mean(scaled.labels.array == plain.labels.array) > 0.98
    assert len(np.unique(scaled.labels.array)) >= 3


def test_scales_average_the_class_probabilities(segmenter):
    """Where the model's own grid and a 1.25 times finer one agree, the average keeps their label."""
    image = phantom_image("oblique", shape=(16, 40, 36), spacing=(1.3, 1.2, 3.5))
    magnified = image.with_geometry(spacing=tuple(s * 1.25 for s in image.geometry.spacing))
    own_run, finer_run = segmenter.run(image), segmenter.run(magnified)
    own, finer = own_run.labels.array, finer_run.labels.array
    ticks: list[tuple[int, int]] = []

    both = Segmenter(segmenter.model, threads=1, scales=(1.0, 1.25), confidence=True).run(
        image, on_tile=lambda done, total: ticks.append((done, total)))

    assert both.labels.geometry == image.geometry
    assert both.labels.array.dtype == np.uint8
    assert both.num_tiles == own_run.num_tiles + finer_run.num_tiles
    assert ticks[-1] == (both.num_tiles, both.num_tiles) and len(ticks) == both.num_tiles
    assert set(both.timings) == {"preprocess", "predict", "export", "confidence"}
    assert set(both.confidence) and all(0 < v <= 1 for v in both.confidence.values())
    agree = own == finer
    assert agree.mean() > 0.5
    assert np.mean(both.labels.array[agree] == own[agree]) > 0.99
    # where they disagree the average takes one of the two (or, rarely, a third class)
    assert np.mean((both.labels.array == own) | (both.labels.array == finer)) > 0.99


@pytest.fixture(scope="module")
def ensemble_of_two_grids(segmenter, tmp_path_factory):
    """The module's model (fold 0) with a member that is the same network planned 1.25 times finer."""
    import json
    import shutil

    from mrseg.model import ENSEMBLE_FILE

    folder = tmp_path_factory.mktemp("ensemble") / "model"
    source = segmenter.model.folder
    for place in (folder, folder / "members" / "finer"):
        (place / "fold_0").mkdir(parents=True)
        shutil.copyfile(source / "dataset.json", place / "dataset.json")
        shutil.copyfile(source / "fold_0" / "checkpoint_final.pth", place / "fold_0" / "checkpoint_final.pth")
    shutil.copyfile(source / "plans.json", folder / "plans.json")
    plans = json.loads((source / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config["spacing"] = [s / 1.25 for s in config["spacing"]]
    (folder / "members" / "finer" / "plans.json").write_text(json.dumps(plans))
    (folder / ENSEMBLE_FILE).write_text(json.dumps({"members": ["members/finer"]}))
    return folder


def test_an_ensemble_averages_its_members_each_on_its_own_grid(segmenter, ensemble_of_two_grids):
    """A member planned 1.25 times finer sees what scale 1.25 shows the folder's own model: the
    ensemble labels as scale test-time augmentation over (1.0, 1.25) does."""
    image = phantom_image("oblique", shape=(16, 40, 36), spacing=(1.3, 1.2, 3.5))
    ensemble = Segmenter(ensemble_of_two_grids, threads=1, confidence=True)
    alone = Segmenter(ensemble_of_two_grids, threads=1, ensemble=False)
    assert [m.configuration.spacing for m in ensemble.ensemble] == [
        segmenter.model.configuration.spacing, tuple(s / 1.25 for s in segmenter.model.configuration.spacing)]
    assert len(ensemble.member_networks) == 2 and alone.ensemble == (alone.model,) and alone.model.members == ()

    both = ensemble.run(image)
    scales = Segmenter(segmenter.model, threads=1, scales=(1.0, 1.25)).run(image)
    own = segmenter.run(image)

    assert both.labels.geometry == image.geometry and both.labels.array.dtype == np.uint8
    assert both.num_tiles == scales.num_tiles > own.num_tiles
    assert set(both.confidence) and all(0 < v <= 1 for v in both.confidence.values())
    # the member's grid is the scaled grid up to rounding of the spacing: the same labels almost everywhere
    assert np.mean(both.labels.array == scales.labels.array) > 0.99
    assert np.array_equal(alone.run(image).labels.array, own.labels.array)
