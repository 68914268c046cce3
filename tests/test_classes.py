"""The class catalogue (:mod:`mrseg.classes`): indices, names, lookups and their errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from mrseg.classes import BASE, BODY_COMP, CATALOGUES, catalogue, resolve_classes
from mrseg.errors import InputError
from mrseg.model.plans import parse_dataset


def test_base_catalogue():
    assert BASE.num_classes == 40
    assert [c.index for c in BASE.classes] == list(range(1, 41))
    spot = {1: "spleen", 2: "right_kidney", 5: "liver", 10: "left_lung", 13: "aorta", 25: "spine",
            26: "sacrum", 39: "left_gluteus_minimus", 40: "right_gluteus_minimus"}
    for index, name in spot.items():
        assert BASE.name_of(index) == name
        assert BASE.index_of(name) == index
    assert catalogue("base") is BASE


def test_body_composition_catalogue():
    assert BODY_COMP.num_classes == 10
    assert [c.index for c in BODY_COMP.classes] == list(range(1, 11))
    assert BODY_COMP.name_of(1) == "subcutaneous_fat"
    assert BODY_COMP.name_of(10) == "gluteofemoral_fat"
    assert catalogue("body_comp") is BODY_COMP


@pytest.mark.parametrize("cat", list(CATALOGUES.values()), ids=list(CATALOGUES))
def test_names_are_unique_snake_case(cat):
    assert len(set(cat.names)) == len(cat.names)
    assert all(name == name.lower() and " " not in name for name in cat.names)


def test_catalogue_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.classes[0].name = "milz"  # type: ignore[misc]


def test_unknown_class_name_suggests_the_closest():
    with pytest.raises(InputError, match=r"unknown class 'livr' for the 'base' model; did you mean liver\?"):
        BASE.index_of("livr")
    with pytest.raises(InputError, match=r"'xyzzy' for the 'base' model$"):
        BASE.index_of("xyzzy")


def test_unknown_index_raises():
    with pytest.raises(KeyError, match=r"label 41 is not in the 'base' catalogue \(1..40\)"):
        BASE.name_of(41)
    with pytest.raises(KeyError):
        BASE.name_of(0)


def test_unknown_catalogue_lists_the_valid_ones():
    with pytest.raises(InputError, match="unknown catalogue 'x'; valid: base, body_comp"):
        catalogue("x")


def test_base_names_equal_the_shared_label_map(shared_data):
    label_maps = json.loads((shared_data / "labels" / "label_maps.json").read_text())
    reference = label_maps["mrseg40_index_to_name"]
    assert len(reference) == 40
    assert {int(k): v for k, v in reference.items()} == {c.index: c.name for c in BASE.classes}


def test_dataset_labels_match_the_catalogue_order():
    """A dataset.json written from the catalogue parses back to the same indices."""
    labels = {"background": 0, **{c.name: c.index for c in BASE.classes}}
    info = parse_dataset({"channel_names": {"0": "MR"}, "labels": labels})
    assert info.num_segmentation_heads == 41
    assert tuple(info.foreground) == BASE.names


# --------------------------------------------------------------------------- resolve_classes

FOREGROUND = BASE.foreground


def test_catalogue_foreground_is_name_to_value_in_label_order():
    assert list(BODY_COMP.foreground.items())[:2] == [("subcutaneous_fat", 1), ("visceral_fat", 2)]
    assert list(FOREGROUND.values()) == list(range(1, 41))
    assert list(FOREGROUND) == list(BASE.names)


def test_names_and_numbers_resolve_in_label_order():
    chosen = resolve_classes(["liver", "spleen", "13", "liver", "5"], FOREGROUND)
    assert chosen == {"spleen": 1, "liver": 5, "aorta": 13}
    assert list(resolve_classes(["aorta", "1"], FOREGROUND)) == ["spleen", "aorta"]
    assert resolve_classes([], FOREGROUND) == {}


def test_a_model_of_its_own_resolves_by_its_dataset_labels():
    foreground = {"tumour": 3, "kidney": 1, "cyst": 7}  # unordered, with gaps: dataset.json order is not label order
    assert resolve_classes(["cyst", "1"], foreground) == {"kidney": 1, "cyst": 7}
    assert list(resolve_classes(["7", "3", "1"], foreground)) == ["kidney", "tumour", "cyst"]


def test_unknown_class_names_the_option_and_the_closest_names():
    with pytest.raises(InputError, match=r"^unknown class 'livr' in --classes; did you mean liver\?$"):
        resolve_classes(["liver", "livr"], FOREGROUND)
    with pytest.raises(InputError, match=r"^unknown class 'femur_left' in --classes; did you mean left_femur\?$"):
        resolve_classes(["femur_left"], FOREGROUND)
    with pytest.raises(InputError, match=r"^unknown class 'livr' in classes=; did you mean liver\?$"):
        resolve_classes(["livr"], FOREGROUND, option="classes=")


@pytest.mark.parametrize("item", ["99", "0", "-1", "xyzzy", "²", "5.0", " 5", ""])
def test_unknown_number_or_far_name_lists_the_model_classes(item):
    expected = rf"^unknown class '{re.escape(item)}' in --classes; the model's classes: spleen, right_kidney, .*, "
    with pytest.raises(InputError, match=expected + "right_gluteus_minimus$"):
        resolve_classes([item], FOREGROUND)
