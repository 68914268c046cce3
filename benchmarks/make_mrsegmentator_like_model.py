"""Make an MRSegmentator-like nnU-Net v2 model folder with nnU-Net's own default planner.

The published plans.json ships only inside the 1.15 GB weights zip, which cannot be
downloaded here. What is known (../shared/BASELINE.md): default planner, PlainConvUNet,
configuration 3d_fullres_bs8, trainer nnUNetTrainerNoMirroring, one MR channel with z-score
normalisation, 41 labels. This script gives nnU-Net's ExperimentPlanner an MRSegmentator-like
fingerprint (spacing 3×1.5×1.5 mm, median shape 80×256×256), which yields patch 56×192×160 and
6 stages of 32–320 features, and writes checkpoints for the requested folds.

Random weights cost exactly what trained ones cost, but their logits are nearly uniform, so
they exaggerate how often a lower precision flips a label. ``--train-steps N`` trains the
network briefly on phantoms (mrseg.phantom, 40 classes, the plans' spacing) so that label
agreement is measured on logits with the structure of a trained model: fold 0 for N steps,
then every other fold from fold 0 for N/10 further steps with its own seed.

    python benchmarks/make_mrsegmentator_like_model.py OUT_DIR [--folds 0 1 2 3 4] [--train-steps 300]
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


def phantom_batches(seed: int, patch: tuple[int, int, int], *, cases: int = 6):
    """Endless random crops ``(image, labels)`` from MR phantoms on the plans' grid, z-scored."""
    import torch

    from mrseg.phantom.cases import make_case

    sequences = ["t1_in", "t1_opp", "t2_haste", "dixon_water", "t1_in", "dixon_fat"]
    volumes = []
    for i in range(cases):
        case = make_case(seed=seed * 100 + i, modality="mr", sequence=sequences[i % len(sequences)], fov="trunk",
                         spacing=(1.5, 1.5, 3.0), random_contrast=i % 3 == 2)
        image = case.image.array.astype(np.float32)
        image = (image - image.mean()) / max(float(image.std()), 1e-8)
        volumes.append((image, case.labels.array.astype(np.int64)))
    rng = np.random.default_rng(seed)
    while True:
        image, labels = volumes[rng.integers(len(volumes))]
        start = [int(rng.integers(0, max(s - p, 0) + 1)) for s, p in zip(image.shape, patch)]
        region = tuple(slice(s, s + p) for s, p in zip(start, patch))
        yield torch.from_numpy(image[region].copy())[None, None], torch.from_numpy(labels[region].copy())[None]


def train_on_phantoms(network, steps: int, *, seed: int, patch: tuple[int, int, int] = (24, 96, 96)) -> None:
    """A few Adam steps of cross-entropy + soft Dice on phantom crops (bf16 autocast)."""
    import torch

    torch.manual_seed(seed)
    network.train()
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    batches = phantom_batches(seed, patch)
    for step in range(steps):
        image, labels = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = network(image)
        logits = logits.float()
        probabilities = logits.softmax(1)
        one_hot = torch.nn.functional.one_hot(labels, logits.shape[1]).permute(0, 4, 1, 2, 3).float()
        overlap = (probabilities * one_hot).sum((0, 2, 3, 4))
        present = one_hot.sum((0, 2, 3, 4)) > 0
        dice = (2 * overlap + 1) / (probabilities.sum((0, 2, 3, 4)) + one_hot.sum((0, 2, 3, 4)) + 1)
        loss = torch.nn.functional.cross_entropy(logits, labels) + (1 - dice[present]).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {loss.item():.3f}", flush=True)
    network.eval()


def write_model(out: Path, plans: dict, folds: list[int], seed: int = 0, train_steps: int = 0) -> Path:
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
    trained = None
    for fold in folds:
        torch.manual_seed(seed + fold)
        network = build_network(config.architecture, num_input_channels=1, num_output_channels=41)
        if train_steps:
            if trained is not None:
                network.load_state_dict(trained)
            print(f"training fold {fold}", flush=True)
            train_on_phantoms(network, train_steps if trained is None else max(train_steps // 10, 1),
                              seed=seed + fold)
            if trained is None:
                trained = {k: v.clone() for k, v in network.state_dict().items()}
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
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train on phantoms for this many steps (0: random weights)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        plans = plan_with_nnunet(Path(work))
    config = plans["configurations"]["3d_fullres"]
    write_model(args.out, plans, args.folds, train_steps=args.train_steps)
    print(f"wrote {args.out}: patch {config['patch_size']}, spacing {config['spacing']}, "
          f"features {config['architecture']['arch_kwargs']['features_per_stage']}, folds {args.folds}")


if __name__ == "__main__":
    main()
