"""Five-fold cross-validation: train the folds, then one Dice table over every validation case,
and nnU-Net's postprocessing decided on those cases.

nnU-Net's trainer predicts its fold's validation cases at the end of training
(``fold_k/validation/CASE.nii.gz``) and keeps the references in the preprocessed dataset
(``gt_segmentations``). The table is made by :mod:`mrseg.evaluation` over all folds together,
broken down by the modality and sequence recorded by ``mrseg dataset build``. The postprocessing
(:mod:`mrseg.evaluation.postprocessing`) is decided on the same predictions, as
``nnUNetv2_find_best_configuration`` decides it, and written where nnU-Net writes it
(``crossval_results_folds_<folds>/postprocessing.json``), where the model folder's loader finds it.
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mrseg.errors import InputError
from mrseg.training.dataset import read_cases_file
from mrseg.training.nnunet import (
    NnunetFolders,
    PlanningOptions,
    TrainingOptions,
    check_training,
    plan_and_preprocess,
    train_fold,
)


@dataclass(frozen=True)
class CrossValidation:
    """What a cross-validation run produced."""

    model_folder: Path
    report: Path | None
    mean_dice: dict[str, float]
    postprocessing: Path | None = None
    """The ``postprocessing.json`` decided on the validation cases (None without validation, or
    with fold ``all`` alone)."""


def run_cross_validation(
    folders: NnunetFolders,
    dataset_id: int,
    *,
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    planning: PlanningOptions = PlanningOptions(),
    training: TrainingOptions = TrainingOptions(),
    plan: bool = True,
    on_fold: Callable[[int | str, Path], None] | None = None,
) -> CrossValidation:
    """Plan (unless ``plan`` is False), train every fold in ``folds`` and write the Dice table.

    The report is written when the folds trained validated their cases (``training.validate``).
    """
    check_training(folders, dataset_id, folds, training)  # before planning, which takes a while
    if plan:
        plan_and_preprocess(folders, dataset_id, planning, transfer_from=training.init_from)
    model = None
    for fold in folds:
        model = train_fold(folders, dataset_id, fold, training)
        if on_fold is not None:
            on_fold(fold, model)
    if model is None:
        raise InputError("no folds to train")
    if not training.validate:
        return CrossValidation(model, None, {})
    report, means = validation_report(folders, model, dataset_id)
    return CrossValidation(model, report, means, decide_postprocessing(folders, model))


def decide_postprocessing(folders: NnunetFolders, model_folder: Path) -> Path | None:
    """nnU-Net's postprocessing decided on the validation predictions of the numbered folds, written
    to ``model_folder/crossval_results_folds_<folds>/postprocessing.json``; returns that path, or
    None when no numbered fold has validation predictions (fold ``all`` validates on its own
    training cases, so nothing is decided on it)."""
    from mrseg.evaluation.postprocessing import determine_postprocessing
    from mrseg.io import read_image
    from mrseg.model.plans import read_dataset
    from mrseg.model.postprocessing import POSTPROCESSING_FILE, write_postprocessing

    references = folders.preprocessed / model_folder.parent.name / "gt_segmentations"
    folds = sorted((p.name.removeprefix("fold_") for p in model_folder.glob("fold_*")
                    if p.name.removeprefix("fold_").isdigit() and any((p / "validation").glob("*.nii.gz"))), key=int)
    predictions = [path for fold in folds for path in sorted((model_folder / f"fold_{fold}" / "validation")
                                                             .glob("*.nii.gz"))]
    if not predictions:
        return None
    pairs = ((read_image(path).array, read_image(references / path.name).array) for path in predictions)
    labels = sorted(read_dataset(model_folder / "dataset.json").foreground.values())
    decision = determine_postprocessing(pairs, labels)
    out = model_folder / f"crossval_results_folds_{'_'.join(folds)}" / POSTPROCESSING_FILE
    return write_postprocessing(decision.steps, out, **decision.summary(),
                                determined_on={"validation cases": len(predictions), "folds": folds})


def validation_report(folders: NnunetFolders, model_folder: Path, dataset_id: int) -> tuple[Path, dict[str, float]]:
    """Per-class Dice (and surface distances) of every fold's validation predictions; returns
    the report folder (``model_folder/crossval``) and the mean Dice per class."""
    from mrseg.evaluation import evaluate_cohort, write_report

    dataset = model_folder.parent.name
    references = folders.preprocessed / dataset / "gt_segmentations"
    predictions = sorted(model_folder.glob("fold_*/validation/*.nii.gz"))
    if not predictions:
        raise InputError(f"{model_folder}: no fold has validation predictions; train with validation on")
    out = model_folder / "crossval"
    with tempfile.TemporaryDirectory(prefix="mrseg-crossval-") as tmp:
        pred_dir = Path(tmp) / "pred"
        pred_dir.mkdir()
        for path in predictions:
            os.symlink(path, pred_dir / path.name)
        ref_dir = Path(tmp) / "ref"
        ref_dir.mkdir()
        for path in predictions:
            os.symlink(references / path.name, ref_dir / path.name)
        meta = _metadata_csv(folders.raw / dataset, Path(tmp) / "meta.csv")
        result = evaluate_cohort(str(pred_dir), str(ref_dir), pred_postfix="", metadata=meta)
        write_report(result, out, plots=False)
    means: dict[str, list[float]] = {}
    for case in result.cases:
        for name, metrics in case.metrics.items():
            if metrics.dice is not None:
                means.setdefault(str(name), []).append(metrics.dice)
    return out, {k: sum(v) / len(v) for k, v in sorted(means.items())}


def _metadata_csv(raw_dataset: Path, path: Path) -> str | None:
    records = read_cases_file(raw_dataset)
    if not records:
        return None
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "dataset", "modality", "sequence"])
        for record in records:
            writer.writerow([record["case"], record.get("dataset") or "-", record.get("modality") or "-",
                             record.get("sequence") or "-"])
    return str(path)
