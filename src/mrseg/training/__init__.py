"""Training on nnU-Net v2: dataset assembly, planning and training, transfer learning, cross-validation.

- :mod:`mrseg.training.dataset`: CSV or phantom folder → nnU-Net raw dataset with the 40 classes.
- :mod:`mrseg.training.nnunet`: planning, preprocessing and training one fold with nnunetv2's
  own planner and trainer, each step in its own process.
- :mod:`mrseg.training.crossval`: all five folds and one validation Dice table.
- :mod:`mrseg.training.averaging`: weight-space averages of a model and its fine-tunes.
"""

from mrseg.training.averaging import average_models
from mrseg.training.crossval import CrossValidation, run_cross_validation, validation_report
from mrseg.training.dataset import DatasetCase, build_dataset, cases_from_csv, cases_from_folder
from mrseg.training.nnunet import (
    NnunetFolders,
    PlanningOptions,
    TrainingOptions,
    check_transfer_compatible,
    extend_splits,
    plan_and_preprocess,
    train_fold,
)

__all__ = [
    "CrossValidation", "DatasetCase", "NnunetFolders", "PlanningOptions", "TrainingOptions", "average_models",
    "build_dataset", "cases_from_csv", "cases_from_folder", "check_transfer_compatible", "extend_splits",
    "plan_and_preprocess",
    "run_cross_validation", "train_fold", "validation_report",
]
