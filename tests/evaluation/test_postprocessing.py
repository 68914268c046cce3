"""Deciding postprocessing: the steps nnU-Net's own determine_postprocessing keeps, on the same files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrseg.evaluation.postprocessing import case_dice, determine_postprocessing
from mrseg.io import Geometry, Image, write_image
from mrseg.model.postprocessing import KeepLargestComponent

DEMO = Path(__file__).resolve().parents[2] / "src" / "mrseg" / "models" / "demo"


def blob(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def scenario(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) of 3 labels on a 24 x 32 x 32 grid.

    ``strays``: every label is one blob in the reference; the prediction adds small far islands
    of labels 1 and 3 (so the all-foreground step pays). ``split``: label 2 is truly two blobs far
    apart (so no step on it pays, and the all-foreground step would cost it), label 1 gets a stray
    island, label 3 is predicted as it is.
    """
    rng = np.random.default_rng(seed)
    shape = (24, 32, 32)
    reference = np.zeros(shape, np.uint8)
    shift = rng.integers(-1, 2, size=3)
    reference[blob(shape, (12, 10, 10) + shift, 5)] = 1
    reference[blob(shape, (12, 10, 19) + shift, 4) & (reference == 0)] = 2
    reference[blob(shape, (12, 19, 12) + shift, 4) & (reference == 0)] = 3
    if kind == "split":
        reference[blob(shape, (12, 27, 27), 3)] = 2
    prediction = reference.copy()
    edge = rng.random(shape) < 0.15
    prediction[edge & (np.roll(reference, 1, axis=2) != reference)] = 0  # ragged borders: Dice below 1
    prediction[tuple(rng.integers(2, 5, size=3))] = 1  # a stray voxel island of label 1, far from its blob
    if kind == "strays":
        prediction[20:22, 28:30, 2:4] = 3
    return prediction, reference


@pytest.mark.parametrize("kind", ["strays", "split"])
def test_the_steps_kept_are_nnunets(tmp_path, kind, monkeypatch):
    """nnU-Net's determine_postprocessing on NIfTI files of the same cases keeps the same steps."""
    nnunet = pytest.importorskip("nnunetv2.postprocessing.remove_connected_components")
    from parity import nnunet_pools_as_threads

    nnunet_pools_as_threads(monkeypatch)
    cases = [scenario(kind, seed) for seed in range(4)]
    ours = determine_postprocessing(cases, [1, 2, 3])

    geometry = Geometry((24, 32, 32), (1.5, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    predicted, reference = tmp_path / "pred", tmp_path / "ref"
    for number, (pred, ref) in enumerate(cases):
        write_image(Image(pred, geometry), predicted / f"case_{number}.nii.gz")
        write_image(Image(ref, geometry), reference / f"case_{number}.nii.gz")
    dataset = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
               "numTraining": 4, "file_ending": ".nii.gz"}
    plans = json.loads((DEMO / "plans.json").read_text())
    _, kwargs = nnunet.determine_postprocessing(str(predicted), str(reference), plans, dataset, num_processes=1,
                                                keep_postprocessed_files=False)

    theirs = tuple(KeepLargestComponent(tuple(k["labels_or_regions"]) if isinstance(k["labels_or_regions"], list)
                                        else (k["labels_or_regions"],)) for k in kwargs)
    assert ours.steps == theirs
    assert ours.steps  # the scenarios are built so that some step pays
    if kind == "strays":
        assert ours.steps[0] == KeepLargestComponent((1, 2, 3))
    else:  # the all-foreground step would cut label 2's second blob; label 2 keeps its parts
        assert KeepLargestComponent((1, 2, 3)) not in ours.steps and KeepLargestComponent((2,)) not in ours.steps
    summary = json.loads((predicted / "postprocessing.json").read_text())
    assert ours.summary()["postprocessed"]["foreground_mean"]["Dice"] == pytest.approx(
        summary["postprocessed"]["foreground_mean"]["Dice"])


def test_dice_is_undefined_where_a_label_is_in_neither_map():
    truth = np.array([[[1, 1, 0, 0]]], np.uint8)
    scores = case_dice(np.array([[[1, 0, 0, 2]]], np.uint8), truth, [1, 2, 3])
    assert scores[1] == pytest.approx(2 / 3) and scores[2] == 0.0 and np.isnan(scores[3])
    with pytest.raises(ValueError, match="shape"):
        case_dice(truth, truth[..., :2], [1])


def test_nothing_to_decide_on_is_refused():
    with pytest.raises(ValueError, match="at least one case and one label"):
        determine_postprocessing([], [1])
