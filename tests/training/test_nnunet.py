"""mrseg.training.nnunet without nnU-Net processes: transfer learning's plans, the training options."""

from __future__ import annotations

import pytest

from model_factory import make_plans
from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.training.nnunet import (
    CONFIGURATION,
    LOSSES,
    NNUNET_SCALE_AUGMENTATION,
    PlanningOptions,
    TrainingOptions,
    check_class_weights,
    check_scale_augmentation,
    source_plans,
    transfer_plans,
    transferred_plans,
)


def configuration(plans: dict) -> dict:
    return plans["configurations"][CONFIGURATION]


def test_transfer_copies_the_source_network_patch_and_spacing():
    source = make_plans(kind="ResidualEncoderUNet", patch_size=(32, 48, 48), spacing=(6.0, 6.0, 6.0))
    target = make_plans(kind="PlainConvUNet", patch_size=(16, 32, 32), spacing=(3.0, 1.5, 1.5))
    plans = transfer_plans(source, target)
    for key in ("architecture", "patch_size", "spacing", "batch_size"):
        assert configuration(plans)[key] == configuration(source)[key]
    assert configuration(target)["spacing"] == [3.0, 1.5, 1.5]  # the target's own plans are left as they were


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1)])
def test_a_spacing_asked_for_is_kept_with_the_source_network(transpose):
    """Spacing is given in the images' axis order and stored in the plans after nnU-Net's transpose."""
    source = make_plans(patch_size=(32, 48, 48), spacing=(6.0, 6.0, 6.0), transpose=transpose)
    target = make_plans(patch_size=(16, 32, 32), spacing=(3.0, 1.5, 1.5))
    plans = transfer_plans(source, target, spacing=(5.0, 4.0, 3.0))
    assert configuration(plans)["spacing"] == [[5.0, 4.0, 3.0][axis] for axis in transpose]
    assert configuration(plans)["architecture"] == configuration(source)["architecture"]
    assert configuration(plans)["patch_size"] == [32, 48, 48]  # in voxels: it now covers less of the body
    assert plans["transpose_forward"] == list(transpose)


def test_a_patch_and_batch_asked_for_apply_on_the_source_network():
    """Starting from a model, its network comes along; a patch size, a batch size or a spacing
    asked for still apply (a wider patch at a finer spacing keeps the body in view)."""
    source = make_plans(patch_size=(32, 48, 48), spacing=(6.0, 6.0, 6.0))
    target = make_plans(patch_size=(16, 32, 32), spacing=(3.0, 1.5, 1.5))
    plans = transferred_plans(source, target, PlanningOptions(spacing=(5.0, 5.0, 5.0), patch_size=(32, 64, 64),
                                                              batch_size=4, base_features=4, max_features=16))
    assert configuration(plans)["architecture"] == configuration(source)["architecture"]
    assert configuration(plans)["patch_size"] == [32, 64, 64] and configuration(plans)["batch_size"] == 4
    assert configuration(plans)["spacing"] == [5.0, 5.0, 5.0]
    assert configuration(transferred_plans(source, target, PlanningOptions()))["patch_size"] == [32, 48, 48]


@pytest.mark.parametrize(("options", "refusal"), [
    (PlanningOptions(patch_size=(33, 64, 64)), r"patch size \[33, 64, 64\] does not fit the network"),
    (PlanningOptions(base_features=8), r"base features 8 differ from the network training starts from \(4-8-16\)"),
    (PlanningOptions(max_features=320), r"max features 320 differ .* give 16"),
])
def test_what_the_source_network_cannot_take_is_refused(options, refusal):
    source = make_plans(patch_size=(32, 48, 48), spacing=(6.0, 6.0, 6.0))
    with pytest.raises(InputError, match=refusal):
        transferred_plans(source, make_plans(), options)


def test_the_source_plans_are_read_or_refused_in_one_line(tmp_path):
    import json

    with pytest.raises(InputError, match="cannot read the plans of the model to start from"):
        source_plans(tmp_path)
    no_fullres = make_plans()
    no_fullres["configurations"] = {"2d": no_fullres["configurations"]["3d_fullres"]}
    (tmp_path / "plans.json").write_text(json.dumps(no_fullres))
    with pytest.raises(InputError, match="its plans.json has no 3d_fullres configuration"):
        source_plans(tmp_path)
    (tmp_path / "plans.json").write_text(json.dumps(make_plans()))
    assert configuration(source_plans(tmp_path))["patch_size"] == [16, 32, 32]


def test_an_unknown_loss_is_refused_with_the_choices():
    with pytest.raises(InputError, match="unknown training loss 'focal': choose one of dice_ce, dice_topk10"):
        TrainingOptions(loss="focal")
    assert TrainingOptions().loss == "dice_ce"  # nnU-Net's default


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_a_class_weight_must_be_positive(weight):
    with pytest.raises(InputError, match=f"class weight {weight} for liver: give a positive number"):
        TrainingOptions(class_weights={"liver": weight})


def test_a_class_weight_must_name_one_of_the_datasets_classes():
    labels = {"background": 0, "liver": 1, "spleen": 2}
    refusal = r"class weight for livr: Dataset021_Tiny has no such class \(its classes: liver, spleen\)"
    with pytest.raises(InputError, match=refusal):
        check_class_weights({"livr": 5.0, "spleen": 2.0}, labels, "Dataset021_Tiny")
    check_class_weights({"liver": 5.0}, labels, "Dataset021_Tiny")


def test_class_weight_pairs_become_numbers_and_a_bad_one_is_named():
    """``--class-weight CLASS WEIGHT`` of the CLI and of the demo script are parsed by one function."""
    from mrseg.training.nnunet import class_weights_from_pairs

    assert class_weights_from_pairs([("liver", "2.5"), ("spleen", "1e1"), ("liver", "3")]) == {"liver": 3.0,
                                                                                             "spleen": 10.0}
    assert class_weights_from_pairs([]) == {}
    with pytest.raises(InputError, match="the weight must be a number, got lots, x$"):
        class_weights_from_pairs([("liver", "lots"), ("spleen", "4"), ("aorta", "x")])


def test_class_weights_are_refused_for_region_based_labels():
    labels = {"background": 0, "liver": 1, "liver_and_vessels": [1, 2]}
    with pytest.raises(InputError, match="Dataset031_Regions has region-based labels"):
        check_class_weights({"liver": 5.0}, labels, "Dataset031_Regions")
    check_class_weights({}, labels, "Dataset031_Regions")  # no weights, nothing to refuse


def test_mrseg_train_explains_a_class_weight_that_is_not_a_number(tmp_path, caplog):
    assert main(["train", "--id", "1", "--root", str(tmp_path), "--class-weight", "liver", "lots"]) == 2
    assert "--class-weight CLASS WEIGHT: the weight must be a number, got lots" in caplog.text
    assert main(["train", "--id", "1", "--root", str(tmp_path), "--class-weight", "liver", "0"]) == 2
    assert "class weight 0.0 for liver: give a positive number" in caplog.text
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_mrseg_train_offers_exactly_the_losses_training_knows(capsys):
    from mrseg.cli.train import LOSSES as offered

    assert offered == LOSSES
    with pytest.raises(SystemExit) as refused:
        main(["train", "--id", "1", "--loss", "focal"])
    assert refused.value.code == 2 and "invalid choice: 'focal'" in capsys.readouterr().err


def test_mrseg_train_refuses_features_the_model_it_starts_from_lacks_before_planning(tmp_path, phantom_folder,
                                                                                      caplog):
    import json

    from mrseg.training.dataset import build_dataset, cases_from_folder
    from mrseg.training.nnunet import NnunetFolders

    folders = NnunetFolders.under(tmp_path / "root")
    build_dataset(cases_from_folder(phantom_folder)[:2], folders.raw, dataset_id=23, name="Refused")
    source = tmp_path / "source_model"
    source.mkdir()
    (source / "plans.json").write_text(json.dumps(make_plans()))  # features 4-8-16
    assert main(["train", "--id", "23", "--root", str(tmp_path / "root"), "--folds", "all", "--init-from", str(source),
                 "--base-features", "32"]) == 2
    assert "base features 32 differ from the network training starts from (4-8-16): leave them out or give 4" \
        in caplog.text
    assert not folders.preprocessed.exists() or not any(folders.preprocessed.iterdir())  # no fingerprint, no plans


@pytest.mark.parametrize(("setting", "refusal"), [
    ((1.2, 0.7, 1.4), r"the probability must lie in \[0, 1\], got 1.2"),
    ((0.5, 1.4, 1.1), r"0.5 <= low <= high <= 2, got 1.4 and 1.1"),
    ((0.5, 0.4, 1.4), r"got 0.4 and 1.4"),
    ((0.5, 0.7, 2.5), r"got 0.7 and 2.5"),
    ((0.5, 0.7), r"give a probability and a factor range \(3 numbers\), got 2"),
])
def test_a_scale_augmentation_nnunet_cannot_draw_from_is_refused(setting, refusal):
    with pytest.raises(InputError, match=refusal):
        check_scale_augmentation(setting)
    with pytest.raises(InputError, match=refusal):
        TrainingOptions(scale_augmentation=setting)


def test_nnunets_own_scale_augmentation_passes_its_own_check():
    check_scale_augmentation(NNUNET_SCALE_AUGMENTATION)
    assert TrainingOptions().scale_augmentation is None  # nnU-Net's own unless asked


def test_mrseg_train_refuses_a_bad_scale_augmentation_before_writing(tmp_path, caplog):
    assert main(["train", "--id", "1", "--root", str(tmp_path), "--scale-augmentation", "0.5", "1.4", "1.2"]) == 2
    assert "scale augmentation: the factors must satisfy" in caplog.text
    assert not any(tmp_path.iterdir())
