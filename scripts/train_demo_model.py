"""Train the bundled demo model with mrseg's own pipeline, on this machine's CPU.

Recipe (the model card, src/mrseg/models/demo/MODEL_CARD.md, records each run's numbers):

1. Domain-randomised synthetic training cases (``mrseg.phantom.randomization.random_case``):
   MR with a random intensity per tissue, MR physics sequences at 1.5 or 3 T and CT; random
   acquisition grids (in-plane 1.5-4 mm, slices 2.5-8 mm, axial, sagittal, coronal or oblique),
   bias field, noise and gamma; random crops and thin slabs; generated subjects (thorax, abdomen,
   pelvis, trunk) and syntheses from real 40-class label maps used as anatomy templates
   (--template, repeatable). Keep the labels of the scans the model card scores on out of the
   templates.
2. ``mrseg.training.build_dataset`` into an nnU-Net raw dataset (every case stored in LPS).
3. nnU-Net's default planner at an isotropic spacing (--spacing) with small features; nnU-Net
   resamples each case from its own grid, as it does a real scan. Then nnU-Net's trainer
   (nnUNetTrainerNoMirroring, spatial augmentation on, mirroring off) on fold 0; the 20 %
   validation split gives nnU-Net's validation Dice.
4. The checkpoint is stripped to what inference needs (no optimizer state) and copied with
   plans.json and dataset.json into OUT.

    python scripts/train_demo_model.py --work /tmp/demo --out src/mrseg/models/demo \\
        --template ../shared/data/labels/example_ct__ref40.nii.gz --cases 240 --epochs 60

Fine-tuning a trained model on the cases and plans (a fresh poly schedule from its weights):

    python scripts/train_demo_model.py --work /tmp/demo --skip-synthesis --skip-planning \\
        --init-from src/mrseg/models/demo --epochs 40 --seed 1001 --out /tmp/demo_finetuned

A run stopped (killed, out of time) continues from its last checkpoint (every --save-every
epochs) with the same command plus ``--skip-synthesis --skip-planning --resume``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def synthesise(folder: Path, count: int, templates: list[Path], *, seed: int, template_share: float) -> None:
    """Write ``count`` domain-randomised training cases into ``folder`` (``mrseg phantom``'s layout)."""
    from mrseg.io import read_image
    from mrseg.phantom.cases import write_case
    from mrseg.phantom.randomization import RandomizationRanges, random_case

    ranges = RandomizationRanges(template_share=template_share)
    labels = [read_image(p) for p in templates]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        case = random_case(seed + i, ranges=ranges, templates=labels, template_names=[str(p) for p in templates])
        recipe = case.metadata["randomization"]
        kind = "template" if recipe["template"] is not None else recipe["fov"]
        write_case(case, folder, f"{recipe['modality']}_{recipe['sequence']}_{kind}_{i:04d}")


def strip_checkpoint(source: Path, target: Path) -> None:
    """Keep what inference needs (weights, trainer name, mirroring axes, init args); float32 weights."""
    import torch

    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    kept = {k: checkpoint[k] for k in ("network_weights", "trainer_name", "inference_allowed_mirroring_axes",
                                       "init_args", "current_epoch") if k in checkpoint}
    losses = checkpoint.get("logging", {})
    kept["logging"] = {k: losses.get(k, []) for k in ("train_losses", "val_losses", "mean_fg_dice")}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(kept, target)


def main() -> None:
    from mrseg.training import (
        NnunetFolders,
        PlanningOptions,
        TrainingOptions,
        build_dataset,
        cases_from_folder,
        plan_and_preprocess,
        train_fold,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (cases, nnU-Net folders)")
    parser.add_argument("--out", type=Path, help="where the stripped model folder goes")
    parser.add_argument("--template", type=Path, action="append", default=[], help="40-class label map template")
    parser.add_argument("--template-share", type=float, default=0.3, help="share of cases made from templates")
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--spacing", type=float, default=6.0, help="isotropic spacing in mm")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--max-features", type=int, default=128)
    parser.add_argument("--patch-size", type=int, nargs=3, default=None)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2, help="initial SGD learning rate")
    parser.add_argument("--augmentation-processes", type=int, default=1,
                        help="nnU-Net augmentation workers (0: in the training process)")
    parser.add_argument("--skip-planning", action="store_true", help="reuse the planned, preprocessed dataset")
    parser.add_argument("--init-from", type=Path, help="start from this model's fold 0 (fine-tuning, same plans)")
    parser.add_argument("--skip-synthesis", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run from its last checkpoint")
    parser.add_argument("--save-every", type=int, default=5, help="write the latest checkpoint every N epochs")
    args = parser.parse_args()

    started = time.time()
    cases_dir = args.work / "cases"
    if not args.skip_synthesis:
        shutil.rmtree(cases_dir, ignore_errors=True)
        synthesise(cases_dir, args.cases, args.template, seed=args.seed, template_share=args.template_share)
    synthesis_s = time.time() - started
    folders = NnunetFolders.under(args.work / "nnunet")
    if not args.skip_planning:
        build_dataset(cases_from_folder(cases_dir), folders.raw, dataset_id=500, name="MrsegDemo", overwrite=True)
    planning = PlanningOptions(spacing=(args.spacing,) * 3, base_features=args.base_features,
                               max_features=args.max_features, batch_size=args.batch_size,
                               patch_size=tuple(args.patch_size) if args.patch_size else None, processes=2)
    if not args.skip_planning:
        plan_and_preprocess(folders, 500, planning, transfer_from=args.init_from)  # its network, so it fits
    planned_s = time.time() - started
    training = TrainingOptions(epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=5,
                               save_every=args.save_every, seed=args.seed, initial_lr=args.lr, resume=args.resume,
                               augmentation_processes=args.augmentation_processes,
                               init_from=str(args.init_from) if args.init_from else None)
    model = train_fold(folders, 500, 0, training)
    trained_s = time.time() - started
    report = {"synthesis_s": synthesis_s, "planning_s": planned_s - synthesis_s, "training_s": trained_s - planned_s,
              "cases": args.cases, "templates": [str(t) for t in args.template], "epochs": args.epochs,
              "iterations_per_epoch": args.iterations, "model_folder": str(model)}
    summary = model / "fold_0" / "validation" / "summary.json"
    if summary.is_file():
        report["validation_mean_dice"] = json.loads(summary.read_text())["foreground_mean"]["Dice"]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("plans.json", "dataset.json"):
            shutil.copyfile(model / name, args.out / name)
        strip_checkpoint(model / "fold_0" / "checkpoint_final.pth", args.out / "fold_0" / "checkpoint_final.pth")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
