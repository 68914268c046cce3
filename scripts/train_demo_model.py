"""Train the bundled demo model with mrseg's own pipeline, on this machine's CPU.

Recipe (the model card, src/mrseg/models/demo/MODEL_CARD.md, records each run's numbers):

1. Synthetic training cases from the phantom engine at 6 mm (--spacing): generated subjects (thorax,
   abdomen, pelvis and trunk fields of view, random orientations including oblique ones) and
   syntheses from real 40-class label maps used as anatomy templates (--template, repeatable).
   Contrasts: MR with random intensity per tissue (half the MR cases), MR physics sequences
   (T1 in/opposed phase, Dixon water/fat, T2 HASTE/TSE) and CT (native, contrast).
2. ``mrseg.training.build_dataset`` into an nnU-Net raw dataset.
3. nnU-Net's default planner at that isotropic spacing with small features, then nnU-Net's trainer
   (nnUNetTrainerNoMirroring, spatial augmentation on, mirroring off) on fold 0; the 20 %
   validation split gives nnU-Net's validation Dice.
4. The checkpoint is stripped to what inference needs (no optimizer state) and copied with
   plans.json and dataset.json into OUT.

    python scripts/train_demo_model.py --work /tmp/demo --out src/mrseg/models/demo \\
        --template ../shared/data/labels/example_ct__ref40.nii.gz --cases 120 --epochs 60

Fine-tuning a trained model on the same cases and plans (a fresh poly schedule from its weights):

    python scripts/train_demo_model.py --work /tmp/demo --skip-synthesis --skip-planning \\
        --init-from src/mrseg/models/demo --epochs 40 --seed 1001 --out /tmp/demo_finetuned
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

MR_PHYSICS = ("t1_in", "t1_opp", "dixon_water", "dixon_fat", "t2_haste", "t2_tse")
CT_PHASES = ("native", "contrast")
ORIENTATIONS = ("LPS", "RAS", "LAS", "PIL", "ASL", "oblique")


def case_recipe(index: int, rng: np.random.Generator) -> dict:
    """Modality, sequence, contrast mode, field of view and orientation of training case ``index``."""
    roll = rng.random()
    if roll < 0.4:
        modality, sequence, random_contrast = "mr", str(rng.choice(MR_PHYSICS)), True
    elif roll < 0.8:
        modality, sequence, random_contrast = "mr", str(rng.choice(MR_PHYSICS)), False
    else:
        modality, sequence, random_contrast = "ct", str(rng.choice(CT_PHASES)), False
    orientation = "LPS" if rng.random() < 0.5 else str(rng.choice(ORIENTATIONS))
    fov = str(rng.choice(("thorax", "abdomen", "abdomen", "pelvis", "trunk")))
    return {"modality": modality, "sequence": sequence, "random_contrast": random_contrast, "fov": fov,
            "orientation": orientation}


def synthesise(folder: Path, count: int, templates: list[Path], *, seed: int, template_share: float,
               spacing: tuple[float, float, float]) -> None:
    """Write ``count`` training cases into ``folder`` (``mrseg phantom``'s layout)."""
    from mrseg.io import read_image
    from mrseg.phantom.cases import make_case, write_case

    rng = np.random.default_rng(seed)
    labels = [(p, read_image(p)) for p in templates]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        recipe = case_recipe(i, rng)
        use_template = labels and rng.random() < template_share
        if use_template:
            path, template = labels[int(rng.integers(len(labels)))]
            case = make_case(seed=seed + i, modality=recipe["modality"], sequence=recipe["sequence"],
                             random_contrast=recipe["random_contrast"], from_labels=template, source=str(path),
                             spacing=spacing, orientation=recipe["orientation"])
        else:
            case = make_case(seed=seed + i, modality=recipe["modality"], sequence=recipe["sequence"],
                             random_contrast=recipe["random_contrast"], fov=recipe["fov"], spacing=spacing,
                             orientation=recipe["orientation"])
        kind = "template" if use_template else recipe["fov"]
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
    parser.add_argument("--cases", type=int, default=120)
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
    args = parser.parse_args()

    started = time.time()
    cases_dir = args.work / "cases"
    if not args.skip_synthesis:
        shutil.rmtree(cases_dir, ignore_errors=True)
        synthesise(cases_dir, args.cases, args.template, seed=args.seed, template_share=args.template_share,
                   spacing=(args.spacing,) * 3)
    synthesis_s = time.time() - started
    folders = NnunetFolders.under(args.work / "nnunet")
    if not args.skip_planning:
        build_dataset(cases_from_folder(cases_dir), folders.raw, dataset_id=500, name="MrsegDemo", overwrite=True)
    planning = PlanningOptions(spacing=(args.spacing,) * 3, base_features=args.base_features,
                               max_features=args.max_features, batch_size=args.batch_size,
                               patch_size=tuple(args.patch_size) if args.patch_size else None, processes=2)
    if not args.skip_planning:
        plan_and_preprocess(folders, 500, planning)
    planned_s = time.time() - started
    training = TrainingOptions(epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=5,
                               save_every=10, seed=args.seed, initial_lr=args.lr,
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
