"""The annotation loop measured: a CT model transferred to MR, corrected round by round by an oracle.

    python benchmarks/annotation_simulation.py --work /tmp/annotation_sim

1. Synthetic CT cases (native and contrast) and a pool of MR cases of six sequences from
   ``mrseg.phantom`` at 6 mm, each with its truth kept to eight large structures (``--classes``):
   a small network learns them within this machine's time, where all 40 took the bundled demo
   model 80 minutes. The truth is renumbered 1 … 8 and the models predict these eight classes only.
2. A small nnU-Net trained on the CT cases only (``mrseg.training``, fold ``all``): the starting
   model, as MRSegmentator started from a CT model.
3. Two projects on the same MR pool and starting model, one drafting in random order, one most
   uncertain first, each run for ``--rounds`` rounds by ``mrseg.annotation.simulate`` (the
   oracle's correction is the phantom truth; the model is fine-tuned on every accepted case after
   each round).
4. Per round and order: mean draft Dice against the correction, voxels changed, the accepted
   cases the drafting model was trained on; a Markdown table (``results.md``) and one learning
   curve with both orders (``learning_curves.png``).
5. Every model version of both projects scored on the same held-out MR phantoms (``--held-out``
   cases, seeds never drafted): mean Dice over the structures present, the fair comparison of the
   two orders at the same number of accepted cases (``held_out.md``).

Every step keeps its result in ``--work``: a rerun continues (a trained starting model, finished
rounds are kept; ``mrseg annotate`` resumes killed steps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

MR_SEQUENCES = ("t1_in", "t1_opp", "dixon_water", "dixon_fat", "t2_haste", "t2_tse")
CLASSES = ("liver", "spleen", "right_kidney", "left_kidney", "left_lung", "right_lung", "heart", "urinary_bladder")
"""The structures annotated: large ones a small network learns within this machine's time."""


def make_cases(folder: Path, count: int, *, modality: str, first_seed: int, classes: list[str]) -> None:
    """``count`` phantom cases with their truth, kept to ``classes`` (the others become background)."""
    import numpy as np

    from mrseg.classes import BASE
    from mrseg.io import read_image, write_image
    from mrseg.phantom import make_case, write_case

    if (folder / "truth").is_dir() and len(list((folder / "truth").glob("*_labels.nii.gz"))) >= count:
        return
    numbering = own_labels(classes)
    sequences = MR_SEQUENCES if modality == "mr" else ("native", "contrast")
    for i in range(count):
        case = make_case(seed=first_seed + i, modality=modality, sequence=sequences[i % len(sequences)],
                         fov=("abdomen", "trunk", "thorax", "pelvis")[i % 4], spacing=(6.0, 6.0, 6.0))
        written = write_case(case, folder / "truth", f"{modality}{i:03d}")
        (folder / "images").mkdir(parents=True, exist_ok=True)
        shutil.move(written["image"], folder / "images" / written["image"].name)
        labels = read_image(written["labels"])
        own = np.zeros(labels.array.shape, np.uint8)
        for name, value in numbering.items():
            own[labels.array == BASE.index_of(name)] = value
        write_image(labels.with_array(own), written["labels"])


def own_labels(classes: list[str]) -> dict[str, int]:
    """The models' own classes: ``classes`` numbered 1 … N (a small head learns them far sooner
    than 40 outputs of which 32 never occur)."""
    return {name: value for value, name in enumerate(classes, start=1)}


def train_start_model(work: Path, ct: Path, args: argparse.Namespace) -> Path:
    """The CT-only starting model (kept in ``work/ct_model``)."""
    from mrseg.training import (
        NnunetFolders,
        PlanningOptions,
        TrainingOptions,
        build_dataset,
        cases_from_folder,
        plan_and_preprocess,
        train_fold,
    )

    target = work / "ct_model"
    if (target / "fold_all" / "checkpoint_final.pth").is_file():
        return target
    folders = NnunetFolders.under(work / "ct_training")
    staged = work / "ct_pairs"
    staged.mkdir(parents=True, exist_ok=True)
    for image in sorted((ct / "images").glob("*.nii.gz")):
        shutil.copy(image, staged / image.name)
        shutil.copy(ct / "truth" / image.name.replace(".nii.gz", "_labels.nii.gz"), staged)
    build_dataset(cases_from_folder(staged), folders.raw, dataset_id=980, name="ct-start", overwrite=True,
                  labels=own_labels(args.classes))
    planning = PlanningOptions(spacing=(6.0, 6.0, 6.0), patch_size=(48, 48, 48), base_features=args.base_features,
                               max_features=args.max_features, batch_size=2, processes=1)
    plan_and_preprocess(folders, 980, planning)
    clock = time.perf_counter()
    model = train_fold(folders, 980, "all", TrainingOptions(epochs=args.ct_epochs, iterations_per_epoch=args.iterations,
                                                            val_iterations_per_epoch=1, validate=False,
                                                            save_every=10**6, seed=0))
    print(f"CT starting model: {time.perf_counter() - clock:.0f} s of training")
    shutil.copytree(model, target, ignore=shutil.ignore_patterns("checkpoint_latest.pth", "checkpoint_best.pth"))
    return target


def run_order(work: Path, mr: Path, start: Path, order: str, args: argparse.Namespace) -> list[dict]:
    from mrseg.annotation import Project, Settings, init_project, simulate, write_status
    from mrseg.cohort import ClusterSpec
    from mrseg.training import PlanningOptions, TrainingOptions

    folder = work / f"project_{order}"
    project = Project(folder)
    if not project.exists():
        init_project(folder, [mr / "images"], start, settings=Settings(batch=args.batch, order=order, seed=args.seed))
    clock = time.perf_counter()
    training = TrainingOptions(epochs=args.mr_epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=1,
                               save_every=10**6, seed=0)
    rows = simulate(project, mr / "truth", rounds=args.rounds, training=training,
                    planning=PlanningOptions(processes=1), cluster=ClusterSpec(workers=1),
                    on_round=lambda row: print(f"{order} round {row['round']}: draft Dice {row['draft_dice_mean']}, "
                                               f"changed {row['effort_fraction_mean']}", flush=True))
    write_status(project)
    print(f"{order}: {time.perf_counter() - clock:.0f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--ct-cases", type=int, default=24)
    parser.add_argument("--mr-cases", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ct-epochs", type=int, default=50)
    parser.add_argument("--mr-epochs", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--base-features", type=int, default=8)
    parser.add_argument("--max-features", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", nargs="+", default=["random", "uncertain"])
    parser.add_argument("--held-out", type=int, default=12, help="held-out MR cases scored by every version")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES),
                        help="classes the truth keeps (the others become background)")
    args = parser.parse_args()
    work = args.work
    make_cases(work / "ct", args.ct_cases, modality="ct", first_seed=96000, classes=args.classes)
    make_cases(work / "mr", args.mr_cases, modality="mr", first_seed=97000, classes=args.classes)
    start = train_start_model(work, work / "ct", args)
    results = {order: run_order(work, work / "mr", start, order, args) for order in args.orders}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| order | round | drafted by (trained on accepted MR cases) | draft Dice | voxels changed (%) |",
             "|---|---|---|---|---|"]
    for order, rows in results.items():
        for row in rows:
            changed = 100 * row["effort_fraction_mean"] if row["effort_fraction_mean"] is not None else float("nan")
            lines.append(f"| {order} | {row['round']} | {row['model']} ({row['model_trained_on']}) | "
                         f"{row['draft_dice_mean']} | {changed:.2f} |")
    (work / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    held_out: dict[str, list[tuple[int, float]]] = {}
    if args.held_out:
        make_cases(work / "held_out", args.held_out, modality="mr", first_seed=98000, classes=args.classes)
        held_out = held_out_scores(work, args.orders)
    plot(results, held_out, work / "learning_curves.png")


def held_out_scores(work: Path, orders: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Mean Dice of every model version of each project on the held-out MR cases (order → (accepted
    cases the version was trained on, Dice)); also written as ``held_out.md``."""
    import numpy as np

    from mrseg.annotation import Project
    from mrseg.evaluation.metrics import dice
    from mrseg.io import read_image
    from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, load, process_case

    images = sorted((work / "held_out" / "images").glob("*.nii.gz"))
    lines = ["| order | model | trained on accepted MR cases | held-out mean Dice |", "|---|---|---|---|"]
    found: dict[str, list[tuple[int, float]]] = {}
    for order in orders:
        project = Project(work / f"project_{order}")
        for version in project.read().models:
            model = load(ModelSpec(Path(version.folder), folds=(version.fold,), precision="fp32"))
            scores = []
            outputs = OutputSpec(work / "held_out" / order / f"v{version.version}", output_type="nifti",
                                 overwrite=True)
            for image in images:
                outcome = process_case(CaseSpec.of(image), model, outputs, keep_labels=True)
                truth = read_image(work / "held_out" / "truth" / image.name.replace(".nii.gz", "_labels.nii.gz")).array
                predicted = outcome.labels.array if outcome.labels is not None else np.zeros_like(truth)
                present = [v for v in np.unique(truth) if v]
                scores.append(np.mean([dice(predicted == v, truth == v) for v in present]) if present else np.nan)
            lines.append(f"| {order} | v{version.version} | {version.accepted_cases} | {np.nanmean(scores):.4f} |")
            found.setdefault(order, []).append((version.accepted_cases, float(np.nanmean(scores))))
    text = "\n".join(lines) + "\n"
    (work / "held_out.md").write_text(text)
    print(text)
    return found


def plot(results: dict[str, list[dict]], held_out: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (dice_axis, effort_axis, held_axis) = plt.subplots(1, 3, figsize=(13.5, 3.6))
    for order, rows in results.items():
        done = [r for r in rows if r["draft_dice_mean"] is not None]
        x = [r["model_trained_on"] for r in done]
        dice_axis.plot(x, [r["draft_dice_mean"] for r in done], "o-", label=order)
        effort_axis.plot(x, [100 * r["effort_fraction_mean"] for r in done], "o-", label=order)
        if order in held_out:
            held_axis.plot(*zip(*held_out[order]), "o-", label=order)
    held_axis.set(xlabel="accepted MR cases the model was trained on", ylabel="mean Dice, held-out MR phantoms",
                  title="Each model version on one fixed set")
    held_axis.set_ylim(0, 1)
    dice_axis.set(xlabel="accepted MR cases the drafting model was trained on", ylabel="mean draft Dice",
                  title="Draft quality (CT model → MR)")
    effort_axis.set(xlabel="accepted MR cases the drafting model was trained on", ylabel="voxels changed (%)",
                    title="Correction effort")
    dice_axis.set_ylim(0, 1)  # the whole scale: noise on a tiny range must not look like a trend
    effort_axis.set_ylim(bottom=0)
    for axis in (dice_axis, effort_axis, held_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
