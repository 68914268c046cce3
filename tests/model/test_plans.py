"""plans.json / dataset.json parsing, checked against nnU-Net v2's own PlansManager where it has one."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings

import pytest

import model_factory
from mrseg.errors import ModelError
from mrseg.model.plans import (
    Architecture,
    Configuration,
    DatasetInfo,
    Plans,
    parse_dataset,
    parse_plans,
    read_dataset,
    read_plans,
)


def _config(plans: dict, name: str = "3d_fullres") -> dict:
    return plans["configurations"][name]


def _nnunet_configuration(plans: dict, name: str = "3d_fullres"):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old-format conversion warns
        return PlansManager(copy.deepcopy(plans)).get_configuration(name)


# --------------------------------------------------------------------------- plans fields


def test_fields_are_parsed_into_typed_values():
    raw = model_factory.make_plans(
        normalization="CTNormalization", use_mask_for_norm=True, transpose=(2, 0, 1),
        patch_size=(16, 32, 24), spacing=(3.0, 1.5, 1.25),
    )
    plans = parse_plans(raw)
    assert isinstance(plans, Plans)
    assert plans.dataset_name == "Dataset999_Blobs"
    assert plans.plans_name == "nnUNetPlans"
    assert plans.transpose_forward == (2, 0, 1)
    assert plans.transpose_backward == (1, 2, 0)

    config = plans.configuration("3d_fullres")
    assert isinstance(config, Configuration)
    assert config.name == "3d_fullres"
    assert config.patch_size == (16, 32, 24)
    assert config.spacing == (3.0, 1.5, 1.25)
    assert all(isinstance(s, float) for s in config.spacing)
    assert config.normalization_schemes == ("CTNormalization",)
    assert config.use_mask_for_norm == (True,)
    assert config.is_3d
    assert config.previous_stage is None

    assert config.resampling_data.function == "resample_data_or_seg_to_shape"
    assert (config.resampling_data.order, config.resampling_data.order_z) == (3, 0)
    assert config.resampling_data.force_separate_z is None
    assert not config.resampling_data.is_seg
    assert (config.resampling_probabilities.order, config.resampling_probabilities.order_z) == (1, 0)

    arch = config.architecture
    assert arch.class_name == "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    assert arch.short_name == "PlainConvUNet"
    assert arch.requires_import == ("conv_op", "norm_op", "dropout_op", "nonlin")
    assert arch.kwargs == raw["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]

    ct = plans.intensity_properties[0]
    props = model_factory.CT_INTENSITY
    assert (ct.mean, ct.std, ct.percentile_00_5, ct.percentile_99_5) == (
        props["mean"], props["std"], props["percentile_00_5"], props["percentile_99_5"])


def test_parsed_values_agree_with_nnunet_configuration_manager():
    raw = model_factory.make_plans(transpose=(1, 2, 0), spacing=(0.8, 2.5, 1.0), use_mask_for_norm=True)
    ours = parse_plans(raw).configuration("3d_fullres")
    theirs = _nnunet_configuration(raw)
    assert list(ours.patch_size) == list(theirs.patch_size)
    assert list(ours.spacing) == list(theirs.spacing)
    assert list(ours.normalization_schemes) == list(theirs.normalization_schemes)
    assert list(ours.use_mask_for_norm) == list(theirs.use_mask_for_norm)
    assert ours.architecture.class_name == theirs.network_arch_class_name
    assert ours.architecture.kwargs == theirs.network_arch_init_kwargs
    assert list(ours.architecture.requires_import) == list(theirs.network_arch_init_kwargs_req_import)


def test_values_are_frozen():
    plans = parse_plans(model_factory.make_plans())
    with pytest.raises(dataclasses.FrozenInstanceError):
        plans.plans_name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plans.configuration("3d_fullres").patch_size = (1, 1, 1)  # type: ignore[misc]


def test_parse_does_not_modify_the_input_dict():
    raw = model_factory.make_plans(configuration="3d_fullres_bs8", old_format=True)
    before = copy.deepcopy(raw)
    parse_plans(raw)
    assert raw == before


def test_unknown_configuration_lists_the_available_ones():
    plans = parse_plans(model_factory.make_plans())
    with pytest.raises(ModelError, match=r"'2d' is not in plans 'nnUNetPlans'; available: 3d_fullres"):
        plans.configuration("2d")


def test_older_intensity_key_is_accepted():
    raw = model_factory.make_plans()
    raw["foreground_intensity_properties_by_modality"] = raw.pop("foreground_intensity_properties_per_channel")
    assert parse_plans(raw).intensity_properties[0].std == model_factory.CT_INTENSITY["std"]


def test_default_transpose_is_identity():
    raw = model_factory.make_plans()
    del raw["transpose_forward"], raw["transpose_backward"]
    plans = parse_plans(raw)
    assert plans.transpose_forward == plans.transpose_backward == (0, 1, 2)


@pytest.mark.parametrize("forward", [[0, 1], [0, 1, 1], [1, 2, 3]])
def test_transpose_must_be_a_permutation(forward):
    raw = model_factory.make_plans()
    raw["transpose_forward"] = forward
    with pytest.raises(ModelError, match="permutations of 0, 1, 2"):
        parse_plans(raw)


# --------------------------------------------------------------------------- inheritance


def test_inherited_configuration_takes_its_parents_values():
    raw = model_factory.make_plans(configuration="3d_fullres_bs8", patch_size=(16, 24, 40), spacing=(2.5, 1.0, 0.9))
    plans = parse_plans(raw)
    parent, child = plans.configuration("3d_fullres"), plans.configuration("3d_fullres_bs8")
    assert child.name == "3d_fullres_bs8"
    assert child.patch_size == parent.patch_size == (16, 24, 40)
    assert child.spacing == parent.spacing == (2.5, 1.0, 0.9)
    assert child.architecture == parent.architecture
    assert child.resampling_data == parent.resampling_data
    assert child.normalization_schemes == parent.normalization_schemes
    theirs = _nnunet_configuration(raw, "3d_fullres_bs8")
    assert list(child.patch_size) == list(theirs.patch_size)
    assert theirs.batch_size == 8


def test_child_values_override_the_parent():
    raw = model_factory.make_plans(configuration="3d_fullres_bs8")
    _config(raw, "3d_fullres_bs8")["patch_size"] = [8, 16, 16]
    plans = parse_plans(raw)
    assert plans.configuration("3d_fullres_bs8").patch_size == (8, 16, 16)
    assert plans.configuration("3d_fullres").patch_size == (16, 32, 32)


def test_multi_level_inheritance():
    raw = model_factory.make_plans(configuration="3d_fullres_bs8")
    raw["configurations"]["3d_fullres_bs8_b"] = {"inherits_from": "3d_fullres_bs8", "spacing": [1.0, 1.0, 1.0]}
    config = parse_plans(raw).configuration("3d_fullres_bs8_b")
    assert config.spacing == (1.0, 1.0, 1.0)
    assert config.patch_size == (16, 32, 32)


@pytest.mark.parametrize("cycle", [["a", "b"], ["a", "b", "c"], ["a"]])
def test_circular_inheritance_raises(cycle):
    raw = model_factory.make_plans()
    for name, parent in zip(cycle, cycle[1:] + cycle[:1]):
        raw["configurations"][name] = {"inherits_from": parent}
    with pytest.raises(ModelError, match="loops"):
        parse_plans(raw)


def test_inheriting_from_an_unknown_configuration_raises():
    raw = model_factory.make_plans()
    raw["configurations"]["3d_fullres_bs8"] = {"inherits_from": "3d_nowhere"}
    with pytest.raises(ModelError, match="inherits from unknown '3d_nowhere'"):
        parse_plans(raw)


# --------------------------------------------------------------------------- old plans format


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_old_format_is_converted_as_nnunet_converts_it(kind):
    raw = model_factory.make_plans(kind=kind, old_format=True)
    assert "architecture" not in _config(raw)
    ours = parse_plans(raw).configuration("3d_fullres").architecture
    theirs = _nnunet_configuration(raw)
    assert isinstance(ours, Architecture)
    assert ours.class_name == theirs.network_arch_class_name
    assert list(ours.requires_import) == list(theirs.network_arch_init_kwargs_req_import)
    expected = theirs.network_arch_init_kwargs
    assert set(ours.kwargs) == set(expected)
    for key in ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage_decoder",
                "conv_op", "norm_op", "norm_op_kwargs", "nonlin", "nonlin_kwargs", "dropout_op", "conv_bias"):
        assert ours.kwargs[key] == expected[key], key
    blocks = "n_conv_per_stage" if kind == "PlainConvUNet" else "n_blocks_per_stage"
    assert ours.kwargs[blocks] == expected[blocks]
    assert ours.kwargs == expected


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_old_format_gives_the_same_network_arguments_as_the_new(kind):
    old = parse_plans(model_factory.make_plans(kind=kind, old_format=True)).configuration("3d_fullres")
    new = parse_plans(model_factory.make_plans(kind=kind)).configuration("3d_fullres")
    assert old.architecture.kwargs == new.architecture.kwargs
    assert old.architecture.short_name == new.architecture.short_name == kind


def test_old_format_caps_features_at_the_maximum():
    raw = model_factory.make_plans(old_format=True)
    _config(raw).update({"UNet_base_num_features": 8, "unet_max_num_features": 20})
    kwargs = parse_plans(raw).configuration("3d_fullres").architecture.kwargs
    assert kwargs["features_per_stage"] == [8, 16, 20]
    assert kwargs == _nnunet_configuration(raw).network_arch_init_kwargs


def test_unknown_old_architecture_name_raises():
    raw = model_factory.make_plans(old_format=True)
    _config(raw)["UNet_class_name"] = "SwinUNETR"
    with pytest.raises(ModelError, match=r"'SwinUNETR' is not supported; known: PlainConvUNet, ResidualEncoderUNet"):
        parse_plans(raw)


def test_old_format_without_class_name_raises():
    raw = model_factory.make_plans(old_format=True)
    del _config(raw)["UNet_class_name"]
    with pytest.raises(ModelError, match="'UNet_class_name'"):
        parse_plans(raw)


@pytest.mark.parametrize("key", ["UNet_base_num_features", "n_conv_per_stage_encoder", "conv_kernel_sizes"])
def test_old_format_missing_keys_raise_model_error(key):
    raw = model_factory.make_plans(old_format=True)
    del _config(raw)[key]
    with pytest.raises(ModelError, match=repr(key)):
        parse_plans(raw)


# --------------------------------------------------------------------------- missing keys


@pytest.mark.parametrize(
    "key",
    ["patch_size", "spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
     "resampling_fn_probabilities"],
)
def test_missing_configuration_key_is_named(key):
    raw = model_factory.make_plans()
    del _config(raw)[key]
    with pytest.raises(ModelError, match=rf"configuration '3d_fullres' lacks the key '{key}'"):
        parse_plans(raw)


@pytest.mark.parametrize("key", ["network_class_name", "arch_kwargs"])
def test_missing_architecture_key_is_named(key):
    raw = model_factory.make_plans()
    del _config(raw)["architecture"][key]
    with pytest.raises(ModelError, match=f"'{key}'"):
        parse_plans(raw)


def test_missing_configurations_is_named():
    raw = model_factory.make_plans()
    del raw["configurations"]
    with pytest.raises(ModelError, match="lacks the key 'configurations'"):
        parse_plans(raw, where="my_plans.json")


def test_error_names_the_file(tmp_path):
    raw = model_factory.make_plans()
    del _config(raw)["spacing"]
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=rf"{path}.*'spacing'"):
        read_plans(path)


# --------------------------------------------------------------------------- dataset.json


def test_dataset_fields():
    info = parse_dataset(model_factory.make_dataset(channel="CT"))
    assert isinstance(info, DatasetInfo)
    assert info.channel_names == ("CT",)
    assert info.labels == {"background": 0, "class_1": 1, "class_2": 2, "class_3": 3, "class_4": 4}
    assert info.num_segmentation_heads == model_factory.NUM_LABELS
    assert info.foreground == {"class_1": 1, "class_2": 2, "class_3": 3, "class_4": 4}
    assert info.file_ending == ".nii.gz"


def test_channels_are_ordered_numerically_and_labels_by_value():
    raw = {"channel_names": {str(i): f"c{i}" for i in (10, 2, 0, 1)},
           "labels": {"b": 2, "background": 0, "a": 1}, "file_ending": ".mha"}
    info = parse_dataset(raw)
    assert info.channel_names == ("c0", "c1", "c2", "c10")
    assert list(info.labels) == ["background", "a", "b"]
    assert info.file_ending == ".mha"


def test_old_modality_key_is_accepted():
    raw = {"modality": {"0": "T1"}, "labels": {"background": 0, "liver": 1}}
    assert parse_dataset(raw).channel_names == ("T1",)


def test_missing_channel_names_raises():
    raw = model_factory.make_dataset()
    del raw["channel_names"]
    with pytest.raises(ModelError, match="channel_names"):
        parse_dataset(raw)


def test_missing_labels_raises():
    raw = model_factory.make_dataset()
    del raw["labels"]
    with pytest.raises(ModelError, match="lacks the key 'labels'"):
        parse_dataset(raw)


def test_region_label_raises():
    raw = model_factory.make_dataset()
    raw["labels"] = {"background": 0, "whole_tumor": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    with pytest.raises(ModelError, match="'whole_tumor' is a region"):
        parse_dataset(raw)


@pytest.mark.parametrize("labels", [
    {"background": 0, "a": 1, "b": 3},
    {"a": 1, "b": 2},
    {"background": 0, "a": 1, "b": 1},
])
def test_non_consecutive_labels_raise(labels):
    with pytest.raises(ModelError, match="consecutive integers from 0"):
        parse_dataset({"channel_names": {"0": "MR"}, "labels": labels})


def test_ignore_label_is_not_a_segmentation_head():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "liver": 1, "spleen": 2, "ignore": 3}}
    info = parse_dataset(raw)
    assert info.num_segmentation_heads == 3
    assert info.foreground == {"liver": 1, "spleen": 2}
    manager = PlansManager(model_factory.make_plans()).get_label_manager(raw)
    assert manager.has_ignore_label
    assert info.num_segmentation_heads == manager.num_segmentation_heads


def test_num_heads_agrees_with_nnunet_label_manager():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw = model_factory.make_dataset(num_labels=7)
    manager = PlansManager(model_factory.make_plans()).get_label_manager(raw)
    assert parse_dataset(raw).num_segmentation_heads == manager.num_segmentation_heads == 7


def test_ignore_label_must_be_highest():
    raw = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "ignore": 1, "liver": 2}}
    with pytest.raises(ModelError, match="'ignore' label must have the highest value"):
        parse_dataset(raw)


# --------------------------------------------------------------------------- files


def test_read_round_trip(tmp_path):
    (tmp_path / "plans.json").write_text(json.dumps(model_factory.make_plans()))
    (tmp_path / "dataset.json").write_text(json.dumps(model_factory.make_dataset()))
    assert read_plans(tmp_path / "plans.json").configuration("3d_fullres").patch_size == (16, 32, 32)
    assert read_dataset(str(tmp_path / "dataset.json")).num_segmentation_heads == model_factory.NUM_LABELS


@pytest.mark.parametrize("reader", [read_plans, read_dataset])
def test_invalid_json_raises(tmp_path, reader):
    path = tmp_path / "broken.json"
    path.write_text('{"configurations": {')
    with pytest.raises(ModelError, match=r"broken\.json is not valid JSON") as info:
        reader(path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize("reader", [read_plans, read_dataset])
def test_missing_file_raises(tmp_path, reader):
    with pytest.raises(ModelError, match=r"nothere\.json is missing"):
        reader(tmp_path / "nothere.json")


@pytest.mark.parametrize("reader", [read_plans, read_dataset])
def test_json_that_is_not_an_object_raises(tmp_path, reader):
    path = tmp_path / "list.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ModelError, match="must hold a JSON object"):
        reader(path)


def test_incomplete_intensity_properties_raise_model_error():
    raw = model_factory.make_plans()
    # make_plans shares the module-level CT_INTENSITY dict: replace it, never mutate it
    raw["foreground_intensity_properties_per_channel"]["0"] = {
        k: v for k, v in model_factory.CT_INTENSITY.items() if k != "percentile_99_5"}
    with pytest.raises(ModelError, match="percentile_99_5"):
        parse_plans(raw)
