"""Built-in and user label maps into the 40-class index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.evaluation import (
    LABEL_MAP_NAMES,
    evaluate_case,
    label_map,
    load_label_map,
    resolve_label_map,
    select_classes,
    target_for_name,
)
from mrseg.io import Image, read_image


def test_builtin_maps_sizes_and_coverage():
    sizes = {name: len(label_map(name).targets) for name in LABEL_MAP_NAMES}
    assert sizes == {"base": 40, "totalseg": 117, "totalseg_mr": 50, "amos22": 15, "chaos": 4}
    defines = {name: len(label_map(name).defines) for name in LABEL_MAP_NAMES}
    assert defines == {"base": 40, "totalseg": 40, "totalseg_mr": 40, "amos22": 14, "chaos": 4}


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("kidney_right", "right_kidney"), ("adrenal_gland_left", "left_adrenal_gland"),
        ("lung_middle_lobe_right", "right_lung"), ("lung_upper_lobe_left", "left_lung"), ("lung_left", "left_lung"),
        ("vertebrae_T12", "spine"), ("vertebrae_C1", "spine"), ("vertebrae", "spine"), ("vertebrae_S1", "sacrum"),
        ("sacrum", "sacrum"), ("autochthon_left", "left_autochthonous_muscle"),
        ("iliopsoas_right", "right_iliopsoas_muscle"), ("iliac_vena_left", "left_iliac_vena"),
        ("gluteus_minimus_right", "right_gluteus_minimus"), ("hip_left", "left_hip"), ("femur_right", "right_femur"),
        ("postcava", "inferior_vena_cava"), ("bladder", "urinary_bladder"), ("liver", "liver"),
        ("kidney_cyst_left", None), ("rib_left_3", None), ("prostate", None), ("trachea", None),
        ("intervertebral_discs", None), ("prostate_uterus", None), ("spinal_cord", None),
    ],
)
def test_name_rules(name, target):
    assert target_for_name(name) == target


def test_amos_and_chaos_targets():
    amos = label_map("amos22")
    assert {amos.source_names[k]: amos.target_name(k) for k in (1, 2, 9, 14, 15)} == {
        "spleen": "spleen", "right_kidney": "right_kidney", "postcava": "inferior_vena_cava",
        "bladder": "urinary_bladder", "prostate_uterus": None,
    }
    chaos = label_map("chaos")
    assert [chaos.target_name(k) for k in (1, 2, 3, 4)] == ["liver", "right_kidney", "left_kidney", "spleen"]


@pytest.mark.parametrize(
    ("name", "key"),
    [("totalseg", "totalseg_total_117_to_mrseg40"), ("totalseg_mr", "totalseg_total_mr_50_to_mrseg40"),
     ("chaos", "chaos_qnet_to_mrseg40")],
)
def test_builtin_maps_match_the_shared_survey_mapping(shared_data, name, key):
    survey = json.loads((shared_data / "labels" / "label_maps.json").read_text())
    assert dict(label_map(name).targets) == {int(k): v for k, v in survey[key].items()}
    if name != "chaos":
        names_key = {"totalseg": "totalseg_total_117_names", "totalseg_mr": "totalseg_total_mr_50_names"}[name]
        assert dict(label_map(name).source_names) == {int(k): v for k, v in survey[names_key].items()}


@pytest.mark.parametrize(
    ("source", "mapped", "name"),
    [("example_ct_sm__totalseg117", "example_ct_sm__ref40", "totalseg"),
     ("example_mr_sm__totalseg_mr50", "example_mr_sm__ref40", "totalseg_mr")],
)
def test_mapping_reproduces_the_shared_ref40_files(shared_data, source, mapped, name):
    original = read_image(shared_data / "labels" / f"{source}.nii.gz")
    expected = read_image(shared_data / "labels" / f"{mapped}.nii.gz")
    assert np.array_equal(label_map(name).apply(original.array), expected.array)


def test_apply_maps_many_to_one_and_refuses_unknown_values():
    m = label_map("totalseg")
    source = np.array([[[0, 10, 11, 12, 13, 14, 27, 26, 25, 92]]], np.uint8)
    lung_l, lung_r = BASE.index_of("left_lung"), BASE.index_of("right_lung")
    spine, sacrum = BASE.index_of("spine"), BASE.index_of("sacrum")
    assert m.apply(source).tolist() == [[[0, lung_l, lung_l, lung_r, lung_r, lung_r, spine, sacrum, sacrum, 0]]]
    assert m.apply(source.astype(np.float32)).tolist() == m.apply(source).tolist()
    with pytest.raises(InputError, match=r"label values 118, 200 are not in the 'totalseg' label map"):
        m.apply(np.array([[[1, 118, 200]]], np.int16), source="ref.nii.gz")
    with pytest.raises(InputError, match="whole numbers"):
        m.apply(np.array([[[1.5]]]))
    with pytest.raises(InputError, match=">= 0"):
        m.apply(np.array([[[-1, 2]]], np.int8))
    with pytest.raises(InputError, match="not in the 'base' label map"):
        label_map("base").apply(np.array([[[41]]], np.uint8))
    identity = np.arange(41, dtype=np.uint8).reshape(1, 1, 41)
    assert np.array_equal(label_map("base").apply(identity), identity)


def test_user_json_mapping(tmp_path):
    path = tmp_path / "site_a.json"
    path.write_text(json.dumps({"name": "site_a", "labels": {"1": "liver", "2": 1, "3": None, "7": "left_kidney"}}))
    m = load_label_map(path)
    assert m.name == "site_a"
    assert dict(m.targets) == {1: BASE.index_of("liver"), 2: 1, 3: 0, 7: BASE.index_of("left_kidney")}
    assert resolve_label_map(str(path)) == m
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"1": "spleen"}))
    assert load_label_map(flat).name == "flat" and load_label_map(flat).defines == {1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"labels": {}}', "non-empty"),
        ('{"one": "liver"}', "not a whole number"),
        ('{"1": "livr"}', "did you mean liver"),
        ('{"1": 41}', "outside 1..40"),
        ('{"1": [5]}', "expected a class name"),
        ('{"0": "liver"}', "must be >= 1"),
    ],
)
def test_user_json_mapping_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_label_map(path)


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(InputError, match="built in: base, totalseg, totalseg_mr, amos22, chaos"):
        resolve_label_map("totalsegmentator")
    with pytest.raises(InputError, match="cannot read the label map"):
        resolve_label_map(tmp_path / "missing.json")


def test_only_classes_both_sides_define_are_evaluated(synth):
    amos, chaos, base = label_map("amos22"), label_map("chaos"), label_map("base")
    chosen, warnings = select_classes(None, base, amos)
    assert len(chosen) == 14 and BASE.index_of("left_lung") not in chosen and not warnings
    chosen, _ = select_classes(None, amos, chaos)
    assert [BASE.name_of(k) for k in chosen] == ["spleen", "right_kidney", "left_kidney", "liver"]
    chosen, warnings = select_classes(["liver", "heart", "1"], base, chaos)
    assert [BASE.name_of(k) for k in chosen] == ["spleen", "liver"]
    assert warnings == ["the reference label map 'chaos' does not define heart; not evaluated"]
    with pytest.raises(InputError, match="no class to evaluate"):
        select_classes(["heart"], base, chaos)
    with pytest.raises(InputError, match="unknown class 'hart'"):
        select_classes(["hart"], base, base)
    with pytest.raises(InputError, match=r"unknown class '41' in --classes; the model's classes: spleen, right_kidney"):
        select_classes(["41"], base, base)

    # a CHAOS reference against a 40-class prediction: only the four CHAOS organs get metrics
    ref = np.zeros((6, 20, 20), np.uint8)
    ref[1:5, 2:8, 2:8] = 1  # CHAOS liver
    ref[1:5, 12:18, 12:18] = 4  # CHAOS spleen
    pred = np.zeros_like(ref)
    pred[1:5, 2:8, 2:8] = BASE.index_of("liver")
    pred[1:5, 12:18, 12:18] = BASE.index_of("spleen")
    pred[0, :4, :4] = BASE.index_of("heart")  # not annotated in CHAOS: must not count
    result = evaluate_case(Image.from_array(pred, spacing=(1, 1, 3)), Image.from_array(ref, spacing=(1, 1, 3)),
                           ref_map="chaos")
    assert list(result.metrics) == ["spleen", "right_kidney", "left_kidney", "liver"]
    assert result.metrics["liver"].dice == 1.0 and result.metrics["spleen"].dice == 1.0
    assert str(result.metrics["right_kidney"].status) == "absent in both"


def test_label_map_validation():
    from mrseg.evaluation import LabelMap

    with pytest.raises(InputError, match="cover the same labels"):
        LabelMap("x", "", {1: "a"}, {1: 1, 2: 2})
    with pytest.raises(InputError, match="targets must be 0..40"):
        LabelMap("x", "", {1: "a"}, {1: 41})
    with pytest.raises(InputError, match="must hold integers"):
        label_map("base").apply(np.array([["a"]]))
    assert label_map("base").apply(np.zeros((0, 2, 2), np.uint8)).shape == (0, 2, 2)
