"""Weight-space averages of model folders: the arithmetic, the refusals, the folder they make."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import model_factory
from mrseg.errors import ModelError
from mrseg.model import load_model
from mrseg.training.averaging import RECORD_NAME, average_models


def _weights(folder, fold="0"):
    return torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)["network_weights"]


@pytest.fixture()
def base_weights(trained_weights):
    return trained_weights["PlainConvUNet"]


@pytest.fixture()
def two_models(tmp_path, base_weights):
    """A model (two folds) and a 'fine-tune' of it: the same plans, every weight moved a little."""
    plans, dataset = model_factory.make_plans(), model_factory.make_dataset()
    base = model_factory.write_model_folder(tmp_path / "base", plans, dataset,
                                            [base_weights, model_factory.perturbed(base_weights, seed=7)])
    tuned = model_factory.write_model_folder(
        tmp_path / "tuned", plans, dataset,
        [model_factory.perturbed(base_weights, seed=1, scale=0.2), model_factory.perturbed(base_weights, seed=2)])
    return base, tuned


def test_average_is_the_share_weighted_mean_of_every_weight_of_every_fold(tmp_path, two_models):
    base, tuned = two_models
    out = average_models([base, tuned], out=tmp_path / "avg", shares=[1.0, 3.0])

    for fold in ("0", "1"):
        a, b, mean = _weights(base, fold), _weights(tuned, fold), _weights(out, fold)
        assert list(mean) == list(a)
        for key in a:
            expected = 0.25 * a[key].double() + 0.75 * b[key].double()
            assert mean[key].dtype == a[key].dtype
            torch.testing.assert_close(mean[key].double(), expected, rtol=0, atol=1e-6)
        # a fine-tune moved the weights: the mean is a new network, not a copy of either
        assert any(not torch.equal(mean[k], a[k]) and not torch.equal(mean[k], b[k]) for k in a)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["shares"] == [0.25, 0.75]
    assert record["sources"] == [str(base.resolve()), str(tuned.resolve())]
    assert record["folds"] == ["0", "1"]
    assert (out / "plans.json").read_bytes() == (base / "plans.json").read_bytes()
    assert (out / "dataset.json").read_bytes() == (base / "dataset.json").read_bytes()


def test_names_that_alias_one_parameter_stay_one_tensor(tmp_path, two_models):
    base, tuned = two_models
    out = average_models([base, tuned], out=tmp_path / "avg")

    source, mean = _weights(base), _weights(out)
    assert len({v.data_ptr() for v in mean.values()}) == len({v.data_ptr() for v in source.values()})
    assert len({v.data_ptr() for v in source.values()}) < len(source)  # the test means something
    size = (out / "fold_0" / "checkpoint_final.pth").stat().st_size
    assert size < 1.2 * (base / "fold_0" / "checkpoint_final.pth").stat().st_size


def test_the_averaged_folder_loads_and_a_share_of_one_predicts_as_its_source(tmp_path, two_models):
    base, tuned = two_models
    only_base = average_models([base, tuned], out=tmp_path / "only_base", shares=[1.0, 0.0])
    halfway = average_models([base, tuned], out=tmp_path / "halfway")

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 16, 32, 32)).astype(np.float32))
    with torch.no_grad():
        expected = load_model(base, folds=["0"]).build_networks()[0](x)
        same = load_model(only_base, folds=["0"]).build_networks()[0](x)
        between = load_model(halfway, folds=["0"]).build_networks()[0](x)
    torch.testing.assert_close(same, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(between, expected, atol=1e-3)
    assert load_model(halfway).folds == ("0", "1")


def test_nnunets_own_predictor_loads_the_averaged_folder_and_agrees(tmp_path, two_models, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as predict_module
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from mrseg.inference import Segmenter
    from parity import nnunet_labels, nnunet_predictor, phantom_image

    # nnU-Net's lookup by name imports trainers that need a torchvision CPU torch cannot load here
    monkeypatch.setattr(predict_module, "recursive_find_trainer_class_by_name",
                        lambda name: {"nnUNetTrainer": nnUNetTrainer}[name])
    averaged = average_models(list(two_models), out=tmp_path / "avg")
    image = phantom_image("LPS")
    theirs = nnunet_labels(nnunet_predictor(averaged, folds=(0, 1)), image, reorient_to_lps=False)
    ours = Segmenter(averaged, folds=[0, 1], precision="fp32", orientation=None).segment(image).array
    assert (ours == theirs).mean() > 0.999 and len(np.unique(ours)) > 2


@pytest.mark.parametrize("shares, match", [
    ([1.0], "got 1 shares for 2 model folders"),
    ([1.0, -0.5], "non-negative numbers with a positive sum"),
    ([0.0, 0.0], "non-negative numbers with a positive sum"),
    ([float("nan"), 1.0], "non-negative numbers with a positive sum"),
])
def test_bad_shares_are_refused_before_anything_is_read(tmp_path, two_models, shares, match):
    with pytest.raises(ModelError, match=match):
        average_models(list(two_models), out=tmp_path / "avg", shares=shares)
    assert not (tmp_path / "avg").exists()


def test_one_folder_and_an_existing_target_are_refused(tmp_path, two_models):
    base, tuned = two_models
    with pytest.raises(ModelError, match="at least two model folders, got 1"):
        average_models([base], out=tmp_path / "avg")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelError, match="taken exists; choose a new folder"):
        average_models([base, tuned], out=tmp_path / "taken")


def _variant(tmp_path, weights, name, *, plans=None, dataset=None, folds=2):
    return model_factory.write_model_folder(
        tmp_path / name, plans or model_factory.make_plans(), dataset or model_factory.make_dataset(),
        [weights] * folds)


def test_folders_that_differ_in_labels_folds_or_inference_settings_are_refused(tmp_path, two_models, base_weights):
    base, _ = two_models
    renamed = model_factory.make_dataset()
    renamed["labels"]["liver"] = renamed["labels"].pop("class_4")
    cases = [
        (_variant(tmp_path, base_weights, "labels", dataset=renamed), "predict different labels"),
        (_variant(tmp_path, base_weights, "ct_channel", dataset=model_factory.make_dataset(channel="CT")),
         "take different input channels"),
        (_variant(tmp_path, base_weights, "one_fold", folds=1),
         r"one_fold has folds 0 but .*base has 0, 1; average folders with the same folds"),
        (_variant(tmp_path, base_weights, "patch", plans=model_factory.make_plans(patch_size=(16, 32, 48))),
         "differ in configuration '3d_fullres'"),
        (_variant(tmp_path, base_weights, "transposed", plans=model_factory.make_plans(transpose=(0, 2, 1))),
         "transpose the image differently"),
    ]
    for other, match in cases:
        target = tmp_path / f"avg_{other.name}"
        with pytest.raises(ModelError, match=match):
            average_models([other, base], out=target)
        assert not target.exists()


def test_ct_models_must_share_their_intensity_statistics(tmp_path, base_weights):
    ct_plans = model_factory.make_plans(normalization="CTNormalization")
    dataset = model_factory.make_dataset(channel="CT")
    shifted = model_factory.make_plans(normalization="CTNormalization")
    shifted["foreground_intensity_properties_per_channel"]["0"]["mean"] = 80.0
    first = model_factory.write_model_folder(tmp_path / "ct_a", ct_plans, dataset, [base_weights])
    second = model_factory.write_model_folder(tmp_path / "ct_b", shifted, dataset, [base_weights])
    with pytest.raises(ModelError, match="normalise CT with different intensity statistics"):
        average_models([first, second], out=tmp_path / "avg")
    # z-scored MR ignores the statistics (planning on new cases changes them): those average
    mr_shifted = model_factory.make_plans()
    mr_shifted["foreground_intensity_properties_per_channel"]["0"]["mean"] = 80.0
    mr_a = _variant(tmp_path, base_weights, "mr_a", folds=1)
    mr_b = _variant(tmp_path, base_weights, "mr_b", plans=mr_shifted, folds=1)
    assert average_models([mr_a, mr_b], out=tmp_path / "mr_avg").is_dir()


def test_weights_of_another_shape_are_refused_and_nothing_is_left_behind(tmp_path, two_models, base_weights):
    base, _ = two_models
    key = next(k for k, v in base_weights.items() if v.ndim == 5)
    misshapen = dict(base_weights)
    misshapen[key] = torch.zeros((base_weights[key].shape[0] + 1, *base_weights[key].shape[1:]))
    other = _variant(tmp_path, misshapen, "misshapen")
    with pytest.raises(ModelError, match=f"weight {key} has shape"):
        average_models([base, other], out=tmp_path / "avg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "misshapen", "tuned"]


def test_command_writes_the_folder_and_refuses_in_one_line(tmp_path, two_models):
    base, tuned = two_models
    ok = subprocess.run([sys.executable, "-m", "mrseg", "weights", "average", str(base), str(tuned),
                         "--out", str(tmp_path / "avg"), "--shares", "1", "1"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(tmp_path / "avg")
    assert load_model(tmp_path / "avg").folds == ("0", "1")

    bad = subprocess.run([sys.executable, "-m", "mrseg", "weights", "average", str(base), str(tuned),
                          "--out", str(tmp_path / "bad"), "--shares", "1"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["ERROR got 1 shares for 2 model folders; give one share per folder"]
    assert not (tmp_path / "bad").exists()
