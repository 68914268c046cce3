"""Model folders: folds, checkpoints (safely unpickled), validation, and networks equal to nnU-Net's."""

from __future__ import annotations

import shutil

import pytest
import torch

import model_factory
from mrseg.errors import ModelError
from mrseg.model import Model, available_folds, load_model
from mrseg.model.networks import build_network
from mrseg.model.plans import parse_plans


def set_arch(plans: dict, **changes) -> dict:
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(changes)
    return plans


# --------------------------------------------------------------------------- loading


def test_load_model_reads_folds_configuration_and_mirroring(tmp_path, weights):
    folder = model_factory.build_model(tmp_path / "model", weights=weights, num_folds=2, mirror_axes=(0, 1, 2),
                                       trainer_name="nnUNetTrainer_custom")
    model = load_model(folder)
    assert isinstance(model, Model)
    assert model.folder == folder
    assert model.folds == ("0", "1")
    assert model.configuration.name == "3d_fullres"
    assert model.mirror_axes == (0, 1, 2)
    assert model.num_input_channels == 1
    assert model.dataset.num_segmentation_heads == model_factory.NUM_LABELS
    assert [c.trainer_name for c in model.checkpoints] == ["nnUNetTrainer_custom"] * 2
    assert [c.path for c in model.checkpoints] == [folder / f"fold_{k}" / "checkpoint_final.pth" for k in (0, 1)]


def test_mirror_axes_none_when_the_checkpoint_forbids_mirroring(tmp_path, weights, write_model):
    assert load_model(write_model(tmp_path / "m", weights, mirror_axes=None)).mirror_axes is None


def test_configuration_comes_from_the_checkpoint(tmp_path, weights, write_model):
    plans = model_factory.make_plans(configuration="3d_fullres_bs8")
    model = load_model(write_model(tmp_path / "m", weights, plans=plans, configuration="3d_fullres_bs8"))
    assert model.configuration.name == "3d_fullres_bs8"
    assert model.configuration.patch_size == (16, 32, 32)


@pytest.mark.parametrize("folds, expected", [([1], ("1",)), ([0, 1], ("0", "1")), (("1", 0), ("1", "0"))])
def test_requested_folds(tmp_path, weights, folds, expected, write_model):
    assert load_model(write_model(tmp_path / "m", weights), folds=folds).folds == expected


def test_fold_all_is_found(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    (folder / "fold_0").rename(folder / "fold_all")
    assert available_folds(folder) == ["all"]
    assert load_model(folder).folds == ("all",)
    assert load_model(folder, folds=["all"]).folds == ("all",)


def test_available_folds_are_sorted_numerically_then_by_name(tmp_path):
    for name in ("fold_10", "fold_2", "fold_all", "fold_0", "fold_x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint_final.pth").touch()
    (tmp_path / "fold_3").mkdir()  # no checkpoint: not a fold
    (tmp_path / "fold_4").mkdir()
    (tmp_path / "fold_4" / "checkpoint_best.pth").touch()
    assert available_folds(tmp_path) == ["0", "2", "10", "all", "x"]
    assert available_folds(tmp_path, "checkpoint_best.pth") == ["4"]


def test_checkpoint_best(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, checkpoint_name="checkpoint_best.pth")
    model = load_model(folder, checkpoint_name="checkpoint_best.pth")
    assert model.folds == ("0", "1")
    assert all(c.path.name == "checkpoint_best.pth" for c in model.checkpoints)
    with pytest.raises(ModelError, match=r"no fold_\*/checkpoint_final\.pth"):
        load_model(folder)


def test_checkpoint_best_missing_is_a_clear_error(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights)
    with pytest.raises(ModelError, match=r"no fold_\*/checkpoint_best\.pth"):
        load_model(folder, checkpoint_name="checkpoint_best.pth")
    with pytest.raises(ModelError, match=r"lacks fold\(s\) 0 \(checkpoint_best\.pth\); available folds: none"):
        load_model(folder, folds=[0], checkpoint_name="checkpoint_best.pth")


def test_folder_may_be_a_string(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    assert load_model(str(folder)).folder == folder


# --------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match=rf"model folder {tmp_path / 'nope'} does not exist; pass a model folder.*"
                                         r"mrseg\.model\.store\.resolve_model_folder"):
        load_model(tmp_path / "nope")


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.zip").write_bytes(b"PK")
    with pytest.raises(ModelError, match=r"model\.zip is a file, not a folder; pass a model folder"):
        load_model(tmp_path / "model.zip")


def test_missing_plans(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    (folder / "plans.json").unlink()
    with pytest.raises(ModelError, match=r"plans\.json is missing"):
        load_model(folder)


def test_missing_dataset(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    (folder / "dataset.json").unlink()
    with pytest.raises(ModelError, match=r"dataset\.json is missing"):
        load_model(folder)


def test_missing_requested_fold_lists_the_available_ones(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=2)
    with pytest.raises(ModelError, match=r"lacks fold\(s\) 3, 4 \(checkpoint_final\.pth\); available folds: 0, 1"):
        load_model(folder, folds=[0, 3, 4])


def test_no_folds_at_all(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    shutil.rmtree(folder / "fold_0")
    with pytest.raises(ModelError, match=r"has no fold_\*/checkpoint_final\.pth; is this a trained nnU-Net v2 model"):
        load_model(folder)


def test_label_count_mismatch(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1, dataset=model_factory.make_dataset(num_labels=7))
    with pytest.raises(ModelError, match=r"label-count mismatch: .* predicts 5 classes but .*dataset\.json lists 7"):
        load_model(folder)


def test_unknown_architecture(tmp_path, weights, write_model):
    plans = model_factory.make_plans()
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "monai.networks.nets.SwinUNETR"
    model = load_model(write_model(tmp_path / "m", weights, num_folds=1, plans=plans))
    with pytest.raises(ModelError, match=r"'monai\.networks\.nets\.SwinUNETR'; supported: PlainConvUNet, "
                                         r"ResidualEncoderUNet"):
        model.build_networks()


def test_unknown_building_block(tmp_path, weights, write_model):
    plans = set_arch(model_factory.make_plans(), norm_op="torch.nn.FooNorm3d")
    model = load_model(write_model(tmp_path / "m", weights, num_folds=1, plans=plans))
    with pytest.raises(ModelError, match=r"norm_op='torch\.nn\.FooNorm3d'.*not a supported building block; "
                                         r"supported: .*InstanceNorm3d"):
        model.build_networks()


def test_unknown_architecture_argument(tmp_path, weights, write_model):
    plans = set_arch(model_factory.make_plans(), squeeze_excitation=True)
    model = load_model(write_model(tmp_path / "m", weights, num_folds=1, plans=plans))
    with pytest.raises(ModelError, match=r"cannot build PlainConvUNet from plans\.json: .*squeeze_excitation"):
        model.build_networks()


def test_weights_that_do_not_fit_the_network(tmp_path, weights, write_model):
    plans = set_arch(model_factory.make_plans(), features_per_stage=[4, 8, 32])
    model = load_model(write_model(tmp_path / "m", weights, num_folds=1, plans=plans))
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: weights do not fit the network in .*plans\.json"):
        model.build_networks()


def test_2d_configuration_is_refused(tmp_path, weights, write_model):
    plans = model_factory.make_plans(patch_size=(32, 32), spacing=(1.5, 1.5))
    set_arch(plans, conv_op="torch.nn.modules.conv.Conv2d", kernel_sizes=[[3, 3]] * 3,
             strides=[[1, 1], [2, 2], [2, 2]], norm_op="torch.nn.modules.instancenorm.InstanceNorm2d")
    with pytest.raises(ModelError, match=r"configuration '3d_fullres' is 2-D; only 3-D models are supported"):
        load_model(write_model(tmp_path / "m", weights, num_folds=1, plans=plans))


def test_cascade_stage_is_refused(tmp_path, weights, write_model):
    plans = model_factory.make_plans()
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    folder = write_model(tmp_path / "m", weights, num_folds=1, plans=plans, configuration="3d_cascade_fullres")
    with pytest.raises(ModelError, match="cascade stage '3d_cascade_fullres' needs a previous stage"):
        load_model(folder)


def test_checkpoint_configuration_not_in_plans(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1, configuration="3d_lowres")
    with pytest.raises(ModelError, match=r"configuration '3d_lowres' is not in plans"):
        load_model(folder)


def test_folds_of_different_configurations_are_refused(tmp_path, weights, write_model):
    plans = model_factory.make_plans(configuration="3d_fullres_bs8")
    folder = write_model(tmp_path / "m", weights, plans=plans)
    other = write_model(tmp_path / "other", weights, plans=plans, configuration="3d_fullres_bs8")
    shutil.copy(other / "fold_1" / "checkpoint_final.pth", folder / "fold_1" / "checkpoint_final.pth")
    with pytest.raises(ModelError, match="trained with configuration '3d_fullres_bs8'.*folds of one ensemble must"):
        load_model(folder)


# --------------------------------------------------------------------------- safe unpickling


# --------------------------------------------------------------------------- networks


def _other_fold(weights: dict) -> dict:
    """Perturbed weights as a real checkpoint holds them: aliased keys (``conv.weight`` and
    ``all_modules.0.weight``, ``decoder.encoder.*``) share one tensor, so they are perturbed together."""
    arch = parse_plans(model_factory.make_plans()).configuration("3d_fullres").architecture
    network = build_network(arch, num_input_channels=1, num_output_channels=model_factory.NUM_LABELS)
    network.load_state_dict(model_factory.perturbed(weights, seed=1))
    return {k: v.clone() for k, v in network.state_dict().items()}


def test_build_networks_one_per_fold_in_eval_mode(tmp_path, weights):
    folder = model_factory.write_model_folder(tmp_path / "m", model_factory.make_plans(),
                                              model_factory.make_dataset(), [weights, _other_fold(weights)])
    model = load_model(folder)
    networks = model.build_networks("cpu")
    assert len(networks) == 2
    for network, checkpoint in zip(networks, model.checkpoints):
        assert not network.training
        assert not network.decoder.deep_supervision
        state, stored = network.state_dict(), checkpoint.read_weights()
        assert state.keys() == stored.keys()
        assert all(torch.equal(state[k], stored[k]) for k in state)
        assert all(p.device.type == "cpu" for p in network.parameters())
    assert not torch.equal(networks[0].state_dict()["decoder.seg_layers.1.weight"],
                           networks[1].state_dict()["decoder.seg_layers.1.weight"])


def test_build_networks_can_store_convolutions_in_bfloat16(tmp_path, weights):
    folder = model_factory.write_model_folder(tmp_path / "m", model_factory.make_plans(),
                                              model_factory.make_dataset(), [weights])
    network = load_model(folder).build_networks("cpu", conv_dtype=torch.bfloat16)[0]
    convs = [m for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)]
    assert convs and norms
    assert all(p.dtype == torch.bfloat16 for m in convs for p in m.parameters())
    assert all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    key = "decoder.seg_layers.1.weight"
    assert torch.equal(network.state_dict()[key], weights[key].to(torch.bfloat16))


