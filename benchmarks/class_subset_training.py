"""Can a class be learned from phantoms? A small nnU-Net on a few classes, scored per class.

    python benchmarks/class_subset_training.py --work /tmp/subset --classes spleen right_kidney left_kidney liver

Issue 20's first question: the bundled demo model never learned the left kidney (Dice 0.03-0.05
on held-out phantoms of every contrast) while it learned the right one (0.8). This trains the
same kind of model (nnU-Net's trainer through ``mrseg.training``, no mirroring, 6 mm) on
``--cases`` phantoms whose truth keeps only ``--classes`` (renumbered 1 … N, so the head is small),
then segments ``--held-out`` phantoms it never saw and prints the Dice of each class and which
classes the misses went to. Same recipe as the demo model's generated subjects (MR physics and
random contrast, CT; abdomen, trunk and thorax fields of view; LPS and other orientations).

Every step keeps its result in ``--work``; a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

MR = ("t1_in", "t1_opp", "dixon_water", "dixon_fat", "t2_haste", "t2_tse")


def make_cases(folder: Path, count: int, *, first_seed: int, classes: list[str], fovs: tuple[str, ...]) -> None:
    import numpy as np

    from mrseg.classes import BASE
    from mrseg.io import read_image, write_image
    from mrseg.phantom import make_case, write_case

    if len(list(folder.glob("*_labels.nii.gz"))) >= count:
        return
    rng = np.random.default_rng(first_seed)
    for i in range(count):
        roll = rng.random()
        modality = "ct" if roll > 0.8 else "mr"
        sequence = str(rng.choice(("native", "contrast"))) if modality == "ct" else str(rng.choice(MR))
        orientation = "LPS" if rng.random() < 0.5 else str(rng.choice(("RAS", "LAS", "PIL", "ASL", "oblique")))
        case = make_case(seed=first_seed + i, modality=modality, sequence=sequence, random_contrast=roll < 0.4,
                         fov=fovs[i % len(fovs)], spacing=(6.0, 6.0, 6.0), orientation=orientation)
        written = write_case(case, folder, f"case{i:03d}")
        labels = read_image(written["labels"])
        own = np.zeros(labels.array.shape, np.uint8)
        for value, name in enumerate(classes, start=1):
            own[labels.array == BASE.index_of(name)] = value
        write_image(labels.with_array(own), written["labels"])


def train(work: Path, args: argparse.Namespace) -> Path:
    """The first stage, then ``--stages`` − 1 more, each fine-tuned from the last (a fresh schedule)."""
    model = _train_stage(work, args, 1, None)
    for stage in range(2, args.stages + 1):
        model = _train_stage(work, args, stage, model)
    return model


def _train_stage(work: Path, args: argparse.Namespace, stage: int, start: Path | None) -> Path:
    from mrseg.training import (
        NnunetFolders,
        PlanningOptions,
        TrainingOptions,
        build_dataset,
        cases_from_folder,
        plan_and_preprocess,
        train_fold,
    )

    target = work / ("model" if stage == 1 else f"model_stage{stage}")
    if (target / "fold_all" / "checkpoint_final.pth").is_file():
        return target
    folders = NnunetFolders.under(work / "nnunet")
    if start is None:
        labels = {name: value for value, name in enumerate(args.classes, start=1)}
        build_dataset(cases_from_folder(work / "train"), folders.raw, dataset_id=970, name="subset", overwrite=True,
                      labels=labels)
        plan_and_preprocess(folders, 970, PlanningOptions(spacing=(6.0, 6.0, 6.0), patch_size=(48, 48, 48),
                                                          base_features=args.base_features,
                                                          max_features=args.max_features, batch_size=2, processes=1))
    clock = time.perf_counter()
    model = train_fold(folders, 970, "all", TrainingOptions(epochs=args.epochs, iterations_per_epoch=args.iterations,
                                                            val_iterations_per_epoch=1, validate=False,
                                                            save_every=10**6, seed=stage,
                                                            init_from=str(start) if start else None,
                                                            init_fold="all"))
    print(f"training stage {stage}: {time.perf_counter() - clock:.0f} s", flush=True)
    shutil.copytree(model, target, ignore=shutil.ignore_patterns("checkpoint_latest.pth", "checkpoint_best.pth"))
    return target


def score(work: Path, model: Path, classes: list[str]) -> dict:
    import numpy as np

    from mrseg.evaluation.metrics import dice
    from mrseg.io import read_image
    from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, load, process_case

    loaded = load(ModelSpec(model, folds=("all",), precision="fp32"))
    outputs = OutputSpec(work / "predictions", output_type="nifti", overwrite=True)
    per_class: dict[str, list[float]] = {name: [] for name in classes}
    confusion = np.zeros((len(classes) + 1, len(classes) + 1), np.int64)
    for image in sorted((work / "held_out").glob("case*.nii.gz")):
        if image.name.endswith("_labels.nii.gz"):
            continue
        truth = read_image(image.with_name(image.name.replace(".nii.gz", "_labels.nii.gz"))).array
        predicted = process_case(CaseSpec.of(image), loaded, outputs, keep_labels=True).labels.array  # type: ignore[union-attr]
        np.add.at(confusion, (truth.ravel(), predicted.ravel()), 1)
        for value, name in enumerate(classes, start=1):
            if (truth == value).any():
                per_class[name].append(dice(predicted == value, truth == value))
    names = ["background", *classes]
    missed = {}
    for value, name in enumerate(classes, start=1):
        row = confusion[value].astype(float)
        total = row.sum()
        missed[name] = {names[other]: round(row[other] / total, 3) for other in range(len(names))
                        if other != value and total and row[other] / total >= 0.05}
    return {"dice": {name: round(float(np.mean(v)), 3) if v else None for name, v in per_class.items()},
            "cases": {name: len(v) for name, v in per_class.items()}, "truth_went_to": missed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--classes", nargs="+", default=["spleen", "right_kidney", "left_kidney", "liver"])
    parser.add_argument("--cases", type=int, default=48)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--stages", type=int, default=1, help="training stages, each from the last's weights")
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--max-features", type=int, default=128)
    args = parser.parse_args()
    fovs = ("abdomen", "abdomen", "trunk", "thorax")
    make_cases(args.work / "train", args.cases, first_seed=71000, classes=args.classes, fovs=fovs)
    make_cases(args.work / "held_out", args.held_out, first_seed=72000, classes=args.classes, fovs=("abdomen", "trunk"))
    model = train(args.work, args)
    shutil.rmtree(args.work / "predictions", ignore_errors=True)
    result = score(args.work, model, args.classes)
    (args.work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
