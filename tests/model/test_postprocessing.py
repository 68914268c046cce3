"""nnU-Net's postprocessing.json: read, written, found in a model folder, checked against its labels."""

from __future__ import annotations

import json

import pytest

import model_factory
from mrseg.errors import ModelError
from mrseg.model import load_model
from mrseg.model.postprocessing import (
    LARGEST_COMPONENT,
    KeepLargestComponent,
    find_postprocessing,
    parse_postprocessing,
    read_postprocessing,
    write_postprocessing,
)


def nnunet_record(*labels_or_regions) -> dict:
    """What nnU-Net's determine_postprocessing writes (the Dice blocks left out)."""
    return {"postprocessing_fns": [LARGEST_COMPONENT] * len(labels_or_regions),
            "postprocessing_kwargs": [{"labels_or_regions": v} for v in labels_or_regions]}


def test_nnunets_steps_are_read_in_order():
    steps = parse_postprocessing(nnunet_record([1, 2, 3], 2, 3), where="pp.json")
    assert steps == (KeepLargestComponent((1, 2, 3)), KeepLargestComponent((2,)), KeepLargestComponent((3,)))
    assert parse_postprocessing(nnunet_record(), where="pp.json") == ()


@pytest.mark.parametrize(("record", "match"), [
    ({"postprocessing_fns": [LARGEST_COMPONENT]}, "two lists of equal length"),
    ([], "two lists of equal length"),
    ({"postprocessing_fns": ["fill_holes"], "postprocessing_kwargs": [{"labels_or_regions": 1}]},
     "'fill_holes' is not supported"),
    (nnunet_record([[1, 2], [2]]), "names regions"),
    (nnunet_record(0), "foreground label values"),
    (nnunet_record("liver"), "foreground label values"),
    (nnunet_record(True), "foreground label values"),
])
def test_what_is_not_nnunets_largest_component_step_is_refused(record, match):
    with pytest.raises(ModelError, match=match):
        parse_postprocessing(record, where="pp.json")


def test_written_steps_read_back_and_keep_the_extra_keys(tmp_path):
    steps = (KeepLargestComponent((1, 2)), KeepLargestComponent((5,)))
    path = write_postprocessing(steps, tmp_path / "postprocessing.json", note="decided on 3 cases")
    assert read_postprocessing(path) == steps
    record = json.loads(path.read_text())
    assert record["note"] == "decided on 3 cases"
    assert record["postprocessing_kwargs"] == [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 5}]
    assert [p.name for p in tmp_path.iterdir()] == ["postprocessing.json"]  # no staging file left


def test_a_broken_file_is_a_model_error_naming_it(tmp_path):
    path = tmp_path / "postprocessing.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match="postprocessing.json is not readable JSON"):
        read_postprocessing(path)


def test_the_file_is_found_beside_the_folds_or_in_nnunets_crossval_folder(tmp_path):
    assert find_postprocessing(tmp_path, ["0", "1"]) is None
    crossval = tmp_path / "crossval_results_folds_0_1" / "postprocessing.json"
    crossval.parent.mkdir()
    crossval.write_text("{}")
    assert find_postprocessing(tmp_path, ["0"]) is None  # decided for other folds
    assert find_postprocessing(tmp_path, ["0", "1"]) == crossval
    (tmp_path / "postprocessing.json").write_text("{}")
    assert find_postprocessing(tmp_path, ["0", "1"]) == tmp_path / "postprocessing.json"


def test_a_model_folder_loads_its_steps(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "model", weights)
    assert load_model(folder).postprocessing == ()
    write_postprocessing((KeepLargestComponent((1, 2)), KeepLargestComponent((3,))), folder / "postprocessing.json")
    assert load_model(folder).postprocessing == (KeepLargestComponent((1, 2)), KeepLargestComponent((3,)))


def test_steps_for_labels_the_model_lacks_are_refused(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "model", weights)
    write_postprocessing((KeepLargestComponent((model_factory.NUM_LABELS + 5,)),), folder / "postprocessing.json")
    with pytest.raises(ModelError, match=r"postprocessing.json: label\(s\) .* are not among the labels"):
        load_model(folder)
