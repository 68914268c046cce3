"""Adding cases to a trained dataset: old cases keep their fold, new ones join every fold once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrseg.errors import InputError
from mrseg.training import NnunetFolders, extend_splits


def preprocessed(root: Path, cases: list[str], splits: list[dict] | None) -> NnunetFolders:
    folders = NnunetFolders.under(root)
    dataset = folders.preprocessed / "Dataset500_Demo"
    (dataset / "gt_segmentations").mkdir(parents=True)
    (dataset / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    for case in cases:
        (dataset / "gt_segmentations" / f"{case}.nii.gz").write_bytes(b"")
    if splits is not None:
        (dataset / "splits_final.json").write_text(json.dumps(splits))
    return folders


def five_folds(cases: list[str]) -> list[dict]:
    val = [cases[k::5] for k in range(5)]
    return [{"train": sorted(c for other, v in enumerate(val) if other != k for c in v), "val": sorted(val[k])}
            for k in range(5)]


def test_old_cases_keep_their_fold_new_ones_are_dealt_out_and_gone_ones_leave(tmp_path):
    old = [f"old_{i:02d}" for i in range(10)]
    new = [f"new_{i:02d}" for i in range(7)]
    before = five_folds(old)
    folders = preprocessed(tmp_path, [c for c in old if c != "old_03"] + new, before)
    assert sorted(extend_splits(folders, 500, seed=1)) == new
    after = json.loads((folders.preprocessed / "Dataset500_Demo" / "splits_final.json").read_text())
    assert len(after) == 5
    everyone = set(old + new) - {"old_03"}
    for fold_before, fold in zip(before, after):
        assert set(fold_before["val"]) - {"old_03"} <= set(fold["val"])  # no old case changes its fold
        assert set(fold["train"]) | set(fold["val"]) == everyone and not set(fold["train"]) & set(fold["val"])
    assert sorted(c for fold in after for c in fold["val"]) == sorted(everyone)  # each case validated once
    assert sorted(len([c for c in fold["val"] if c.startswith("new")]) for fold in after) == [1, 1, 1, 2, 2]
    assert extend_splits(folders, 500, seed=1) == []  # a second call adds nothing


def test_without_a_split_nothing_is_written_nnunet_draws_one(tmp_path):
    folders = preprocessed(tmp_path, ["a", "b"], None)
    assert extend_splits(folders, 500) == []
    assert not (folders.preprocessed / "Dataset500_Demo" / "splits_final.json").exists()
    with pytest.raises(InputError, match="no preprocessed dataset 501"):
        extend_splits(folders, 501)
