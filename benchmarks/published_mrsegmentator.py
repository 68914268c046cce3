"""Run the published MRSegmentator CLI (mrsegmentator 2.0.0) on a CPU-only machine.

Why this launcher exists: nnU-Net finds a checkpoint's trainer class by importing every
module under ``nnunetv2/training/nnUNetTrainer`` in turn. Its ``primus`` subpackage imports
timm, which imports torchvision, and PyPI's torchvision is a CUDA build whose compiled
operators cannot load beside a CPU-only torch ("operator torchvision::nms does not exist").
The published weights name ``nnUNetTrainerNoMirroring``, which lives under ``variants``,
searched after ``primus``, so the published CLI cannot start here as it is.

This launcher changes only that lookup: it searches the same trainer tree with nnU-Net's
own ``recursive_find_python_class``, skipping the ``primus`` subpackage, then runs the
unmodified ``mrsegmentator`` command line. Prediction, preprocessing and export are
MRSegmentator's and nnU-Net's own code.

Usage (same arguments as the ``mrsegmentator`` command)::

    MRSEG_WEIGHTS_PATH=path/to/model python benchmarks/published_mrsegmentator.py \\
        -i scan.nii.gz -o out/ --cpu_only --fold 0
"""

from __future__ import annotations

import os
import pkgutil
import sys


def find_trainer_without_primus(trainer_name: str) -> type:
    """nnU-Net's trainer lookup over its own trainer tree, minus the Primus subpackage."""
    import importlib

    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    package = "nnunetv2.training.nnUNetTrainer"
    folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
    for _, name, is_package in pkgutil.iter_modules([folder]):
        if not is_package:
            module = importlib.import_module(f"{package}.{name}")
            if hasattr(module, trainer_name):
                return getattr(module, trainer_name)
    for _, name, is_package in pkgutil.iter_modules([folder]):
        if is_package and name != "primus":
            found = recursive_find_python_class(
                os.path.join(folder, name), trainer_name, f"{package}.{name}", nnunetv2.__path__[0]
            )
            if found is not None:
                return found
    raise RuntimeError(f"trainer {trainer_name} not found in {folder} (primus skipped)")


def main(argv: list[str] | None = None) -> None:
    import nnunetv2.inference.predict_from_raw_data as predict_module

    predict_module.recursive_find_trainer_class_by_name = find_trainer_without_primus
    from mrsegmentator import main as mrsegmentator_main

    sys.argv = ["mrsegmentator", *(sys.argv[1:] if argv is None else argv)]
    mrsegmentator_main.main()


if __name__ == "__main__":
    main()
