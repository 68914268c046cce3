"""Make an MRSegmentator-like nnU-Net v2 model folder with nnU-Net's own default planner.

The published plans.json ships only inside the 1.15 GB weights zip, which cannot be
downloaded here. What is known (../shared/BASELINE.md): default planner, PlainConvUNet,
configuration 3d_fullres_bs8, trainer nnUNetTrainerNoMirroring, one MR channel with z-score
normalisation, 41 labels. This script gives nnU-Net's ExperimentPlanner an MRSegmentator-like
fingerprint (spacing 3×1.5×1.5 mm, median shape 80×256×256), which yields patch 56×192×160 and
6 stages of 32–320 features, and writes random-weight checkpoints for the requested folds.
Random weights cost exactly what trained ones cost.

    python benchmarks/make_mrsegmentator_like_model.py OUT_DIR [--folds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

DATASET = "Dataset901_MRSegLike"


def plan_with_nnunet(work: Path) -> dict:
    """Run nnU-Net's default ExperimentPlanner on an MRSegmentator-like fingerprint."""
    import SimpleITK as sitk

    os.environ["nnUNet_raw"] = str(work / "raw")
    os.environ["nnUNet_preprocessed"] = str(work / "preprocessed")
    os.environ["nnUNet_results"] = str(work / "results")
    raw, pre = work / "raw" / DATASET, work / "preprocessed" / DATASET
    pre.mkdir(parents=True)
    for sub, name in (("imagesTr", "case_000_0000.nii.gz"), ("labelsTr", "case_000.nii.gz")):
        (raw / sub).mkdir(parents=True)  # the planner picks its image reader from one training file
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)), str(raw / sub / name))
    (raw / "dataset.json").write_text(json.dumps(dataset_json()))
    fingerprint = {
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1000.0, "mean": 300.0, "median": 280.0, "min": 0.0,
            "percentile_00_5": 10.0, "percentile_99_5": 900.0, "std": 150.0}},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [[80, 256, 256]] * 100,
        "spacings": [[3.0, 1.5, 1.5]] * 100,
    }
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    return ExperimentPlanner(DATASET).plan_experiment()


def dataset_json() -> dict:
    from mrseg.classes import BASE

    labels = {"background": 0, **{c.name: c.index for c in BASE.classes}}
    return {"channel_names": {"0": "MR"}, "labels": labels, "numTraining": 100, "file_ending": ".nii.gz"}


def write_model(out: Path, plans: dict, folds: list[int], seed: int = 0) -> Path:
    import torch

    from mrseg.model.networks import build_network
    from mrseg.model.plans import parse_plans

    plans = json.loads(json.dumps(plans))
    plans["configurations"]["3d_fullres_bs8"] = {"inherits_from": "3d_fullres", "batch_size": 8}
    dataset = dataset_json()
    out.mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    config = parse_plans(plans).configuration("3d_fullres_bs8")
    for fold in folds:
        torch.manual_seed(seed + fold)
        network = build_network(config.architecture, num_input_channels=1, num_output_channels=41)
        (out / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({
            "network_weights": network.state_dict(),
            "init_args": {"configuration": "3d_fullres_bs8", "fold": fold},
            "trainer_name": "nnUNetTrainerNoMirroring",
            "inference_allowed_mirroring_axes": None,
            "current_epoch": 1000,
            "_best_ema": np.float64(0.0),
        }, out / f"fold_{fold}" / "checkpoint_final.pth")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        plans = plan_with_nnunet(Path(work))
    config = plans["configurations"]["3d_fullres"]
    write_model(args.out, plans, args.folds)
    print(f"wrote {args.out}: patch {config['patch_size']}, spacing {config['spacing']}, "
          f"features {config['architecture']['arch_kwargs']['features_per_stage']}, folds {args.folds}")


if __name__ == "__main__":
    main()
