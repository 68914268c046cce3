"""Train the bundled demo model with mrseg's own pipeline, on this machine's CPU.

Recipe (the experiment log, docs/demo_model_experiments.md, records each run's command and numbers):

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

Adding cases to a trained run's work folder (new seeds, other randomisation shares) and
fine-tuning on all of them; the old cases keep their nnU-Net folds, the new ones are spread
over the five folds (``mrseg.training.extend_splits``):

    python scripts/train_demo_model.py --work /tmp/demo --add-cases --cases 160 --seed 4000 \\
        --centred-crop-share 0.7 --crop-share 0.8 --removal-share 0.3 \\
        --init-from src/mrseg/models/demo --epochs 40 --out /tmp/demo_more

After a change to the phantom's anatomy, the generated-subject cases of a work folder can be drawn
again with the same seeds and recipes (the templates they were made with are needed) and the
model fine-tuned on them:

    python scripts/train_demo_model.py --work /tmp/demo --skip-synthesis --redraw-generated \\
        --template ../shared/data/labels/example_ct__ref40.nii.gz --init-from src/mrseg/models/demo ...

A run stopped (killed, out of time) continues from its last checkpoint (every --save-every
epochs) with the same command plus ``--skip-synthesis --skip-planning --resume``.

Two trainings on one set of cases (training seeds 8001 and 8002 on case seeds 8000-8249): make
and plan the cases once, then train each seed into its own model folder:

    python scripts/train_demo_model.py --work /tmp/demo --cases 250 --seed 8000 ... --skip-training
    python scripts/train_demo_model.py --work /tmp/demo --skip-synthesis --skip-planning ... \
        --training-seed 8001 --out /tmp/demo_a

A recipe kept in a file is read with ``@FILE`` (flags as on the command line, several to a line,
``#`` starts a comment; later flags override it), e.g. the 6 mm runs' cases and training from v210 on:

    python scripts/train_demo_model.py @docs/demo_model_rules/flags_v210.txt --work /tmp/demo \
        --init-from src/mrseg/models/demo --training-seed 8001 --out /tmp/demo_6mm
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mrseg.io import Image
    from mrseg.phantom.randomization import RandomizationRanges


def synthesise(folder: Path, count: int, templates: list[Path], *, seed: int, ranges: RandomizationRanges,
               names_from_seed: bool = False) -> None:
    """Write ``count`` domain-randomised training cases into ``folder`` (``mrseg phantom``'s layout).

    Cases are numbered 0, 1, ... or, with ``names_from_seed`` (cases added to a folder), by their seed.
    """
    from mrseg.io import read_image
    from mrseg.phantom.cases import write_case
    from mrseg.phantom.randomization import random_case

    labels = [read_image(p) for p in templates]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        case = random_case(seed + i, ranges=ranges, templates=labels, template_names=[str(p) for p in templates])
        recipe = case.metadata["randomization"]
        kind = "template" if recipe["template"] is not None else recipe["fov"]
        number = f"s{seed + i}" if names_from_seed else f"{i:04d}"
        write_case(case, folder, f"{recipe['modality']}_{recipe['sequence']}_{kind}_{number}")


@functools.cache
def read_templates(paths: tuple[Path, ...]) -> list[Image]:
    """The template label maps, read once per process (every redrawn case needs them)."""
    from mrseg.io import read_image

    return [read_image(p) for p in paths]


def redraw_case(sidecar: Path, templates: list[Path]) -> bool:
    """Draw a generated-subject case again from its sidecar's seed and ranges with today's phantom
    engine and write it over the old one; a case made from a template is left as it is.

    The recipe (contrast, grid, artefacts, crop size, removed organ) must come out as it was, so
    only the anatomy, and with it where a crop around a random anatomy voxel lands, follows the
    engine's changes; returns whether the case was redrawn.
    """
    from mrseg.phantom.cases import write_case
    from mrseg.phantom.randomization import RandomizationRanges, random_case

    old = json.loads(sidecar.read_text())
    if old["randomization"]["template"] is not None:
        return False
    case = random_case(old["seed"], ranges=RandomizationRanges.from_record(old["ranges"]),
                       templates=read_templates(tuple(templates)), template_names=[str(p) for p in templates])
    drawn, recorded = json.loads(json.dumps(case.metadata["randomization"], default=float)), old["randomization"]
    # a crop around any anatomy voxel lands elsewhere when the anatomy changes; keys added to the
    # recipe since the case was made are not in its sidecar
    same_crop = (drawn["crop"] is None) == (recorded["crop"] is None) and all(
        drawn["crop"].get(k) == v for k, v in (recorded["crop"] or {}).items() if k != "box_zyx")
    if not same_crop or any(drawn.get(k) != v for k, v in recorded.items() if k != "crop"):
        raise SystemExit(f"{sidecar}: its seed and ranges no longer give its recipe; pass the --template "
                         "files it was synthesised with")
    write_case(case, sidecar.parent, sidecar.name.removesuffix(".json"))
    return True


def redraw_generated_cases(folder: Path, templates: list[Path], processes: int = 2) -> int:
    """:func:`redraw_case` for every case in ``folder``, on ``processes`` processes; returns the count redrawn."""
    from concurrent.futures import ProcessPoolExecutor

    sidecars = sorted(folder.glob("*.json"))
    with ProcessPoolExecutor(processes) as pool:
        return sum(pool.map(redraw_case, sidecars, [templates] * len(sidecars), chunksize=8))


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


# the RandomizationRanges shares this script sets, each as --the-share-name
RANDOMIZATION_SHARES = {
    "template_share": "share of cases made from templates",
    "crop_share": "share of cases cropped",
    "centred_crop_share": "share of the crops centred on an organ of --crop-centre",
    "removal_share": "share of cases with an organ removed",
    "random_contrast_share": "share of MR cases with a random intensity per tissue",
    "ct_share": "share of CT cases",
    "arterial_share": "share of the contrast-enhanced CT cases in the arterial phase (CT angiography)",
    "fluid_share": "share of cases whose bile and gastric content have a random make-up",
    "fat_suppression_share": "share of the t1_in, t2_haste and t2_tse cases with spectral fat suppression",
    "fatty_organ_share": "share of cases whose liver and pancreas hold a random fat fraction (steatosis)",
    "clutter_share": "share of cases whose visceral fat holds blobs of unlabelled soft tissue (vessels, nodes)",
    "perirenal_share": "share of cases whose kidneys lie in a perirenal space of its own, greyer fat",
    "perirenal_room_share": "share of the generated subjects' cases whose organs leave a compartment of perirenal "
                            "fat above the left kidney (--perirenal-room)",
    "arms_share": "share of the generated subjects' cases with arms lying at the trunk's sides (no class)",
    "table_share": "share of the generated subjects' cases lying on a scanner table (no class)",
    "air_margin_share": "share of the generated subjects' cases whose field of view is widened into air, each side "
                        "by its own draw (--air-margin)",
    "ectasia_share": "share of cases whose aorta is widened 2-8 mm all round along its whole length (ectasia)",
    "thrombus_share": "share of the CT cases whose aortic thrombus takes a random CT number (40-140 HU)",
    "extraperitoneal_share": "share of cases whose liver, spleen, stomach and colon lie 2-10 mm off the body wall "
                             "(extraperitoneal fat)",
    "subject_scale_share": "share of cases whose subject is drawn at another size (--subject-scale)",
    "layered_aorta_share": "share of the generated subjects' cases whose descending aorta is diseased, its bright "
                           "lumen a cap along one wall beside grey thrombus (a dissection's look)",
    "deformation_share": "share of cases whose anatomy is deformed smoothly at random (--deformation-mm)",
    "organ_scale_share": "share of the generated subjects' cases whose liver, spleen and kidneys each take a size "
                         "factor of their own (--organ-scale)",
}


class _RecipeFileParser(argparse.ArgumentParser):
    """Reads ``@FILE`` as the flags written in FILE, split as a shell would, ``#`` to the line's end a comment."""

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        return shlex.split(arg_line, comments=True)


def main() -> None:
    from mrseg.errors import InputError
    from mrseg.phantom.anatomy import FOVS, SCALABLE_ORGANS
    from mrseg.phantom.randomization import RandomizationRanges
    from mrseg.training import (
        NnunetFolders,
        PlanningOptions,
        TrainingOptions,
        build_dataset,
        cases_from_folder,
        extend_splits,
        plan_and_preprocess,
        train_fold,
    )
    from mrseg.training.dataset import dataset_json
    from mrseg.training.nnunet import LOSSES, check_class_weights, class_weights_from_pairs

    defaults = RandomizationRanges()  # the randomisation options default to its values
    parser = _RecipeFileParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                               fromfile_prefix_chars="@")
    parser.add_argument("--work", type=Path, required=True, help="working folder (cases, nnU-Net folders)")
    parser.add_argument("--out", type=Path, help="where the stripped model folder goes")
    parser.add_argument("--template", type=Path, action="append", default=[], help="40-class label map template")
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--add-cases", action="store_true",
                        help="synthesise --cases more cases (seeds from --seed) beside the work folder's cases "
                             "instead of replacing them; each old case keeps its nnU-Net fold")
    for share, text in RANDOMIZATION_SHARES.items():  # each defaults to RandomizationRanges's value
        parser.add_argument(f"--{share.replace('_', '-')}", type=float, default=getattr(defaults, share), help=text)
    parser.add_argument("--ct-enhancement", type=float, nargs=2, default=defaults.ct_enhancement,
                        metavar=("LOW", "HIGH"),
                        help="range of the multiplier of the contrast agent's enhancement in CT")
    parser.add_argument("--subject-scale", type=float, nargs=2, default=defaults.subject_scale,
                        metavar=("LOW", "HIGH"),
                        help="range of the size factor on every length of a --subject-scale-share case")
    parser.add_argument("--organ-scale", type=float, nargs=2, default=defaults.organ_scale,
                        metavar=("LOW", "HIGH"),
                        help="range of each organ's size factor on every length in an --organ-scale-share case")
    parser.add_argument("--scaled-organ", action="append", choices=SCALABLE_ORGANS,
                        help="an organ that takes a size factor in an --organ-scale-share case (repeat; default: "
                             "liver, spleen and both kidneys)")
    parser.add_argument("--air-margin", type=float, nargs=2, default=defaults.air_margin_mm,
                        metavar=("LOW", "HIGH"),
                        help="range of the air (mm) an --air-margin-share case's field of view gains on each side")
    parser.add_argument("--perirenal-room", type=float, nargs=2, default=defaults.perirenal_room_mm,
                        metavar=("LOW", "HIGH"),
                        help="range of how far (mm) a --perirenal-room-share case's compartment reaches above "
                             "the left kidney")
    parser.add_argument("--deformation-mm", type=float, nargs=2, default=defaults.deformation_mm,
                        metavar=("LOW", "HIGH"),
                        help="range of the displacement's SD (mm) of a --deformation-share case")
    parser.add_argument("--fov", action="append", choices=FOVS,
                        help="a generated subject's field of view, repeatable (repeat one to draw it more often); "
                             f"default: {', '.join(defaults.fields_of_view)}")
    parser.add_argument("--crop-centre", action="append",
                        help="a class the centred crops are centred on, repeatable; "
                             f"default: {', '.join(defaults.crop_centres)}")
    parser.add_argument("--fat-suppressed-sequence", action="append", choices=defaults.fat_suppressed_sequences,
                        help="a sequence --fat-suppression-share applies to, repeatable; "
                             f"default: {', '.join(defaults.fat_suppressed_sequences)}")
    parser.add_argument("--ectasia-modality", action="append", choices=defaults.ectasia_modalities,
                        help="draw ectasia only for this modality (repeatable); "
                             f"default: {', '.join(defaults.ectasia_modalities)}")
    parser.add_argument("--layered-aorta-modality", action="append", choices=defaults.layered_aorta_modalities,
                        help="draw the layered aorta only for this modality (repeatable); "
                             f"default: {', '.join(defaults.layered_aorta_modalities)}")
    parser.add_argument("--spacing", type=float, default=6.0, help="isotropic spacing in mm")
    parser.add_argument("--seed", type=int, default=1000,
                        help="first case seed (case i: seed + i), and the training seed unless --training-seed")
    parser.add_argument("--training-seed", type=int,
                        help="nnU-Net's training seed, when it is not --seed (two trainings on one set of cases)")
    parser.add_argument("--skip-training", action="store_true",
                        help="stop after synthesis and planning; train later with --skip-synthesis --skip-planning")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--max-features", type=int, default=128)
    parser.add_argument("--patch-size", type=int, nargs=3, default=None)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2, help="initial SGD learning rate")
    parser.add_argument("--loss", choices=LOSSES, default="dice_ce",
                        help="nnU-Net's training loss (dice_topk10: cross-entropy of the hardest 10 %% of voxels)")
    parser.add_argument("--class-weight", nargs=2, action="append", metavar=("CLASS", "WEIGHT"), default=[],
                        help="weigh this class's voxels so in the cross-entropy term (others 1); repeatable")
    parser.add_argument("--scale-augmentation", type=float, nargs=3, metavar=("P", "LOW", "HIGH"),
                        help="zoom augmentation: share of patches zoomed and the factor range (default nnU-Net's "
                             "0.2 0.7 1.4)")
    parser.add_argument("--augmentation-processes", type=int, default=1,
                        help="nnU-Net augmentation workers (0: in the training process)")
    parser.add_argument("--skip-planning", action="store_true", help="reuse the planned, preprocessed dataset")
    parser.add_argument("--init-from", type=Path, help="start from this model's fold 0 (fine-tuning, same plans)")
    parser.add_argument("--skip-synthesis", action="store_true")
    parser.add_argument("--redraw-generated", action="store_true",
                        help="with --skip-synthesis: draw every generated-subject case in the work folder again "
                             "(same seed and recipe, today's phantom anatomy); template cases are kept")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run from its last checkpoint")
    parser.add_argument("--save-every", type=int, default=5, help="write the latest checkpoint every N epochs")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip nnU-Net's validation predictions at the end (about 10 min at 6 mm on 2 cores "
                             "for 208 cases, 3.4x the voxels at 4 mm)")
    args = parser.parse_args()
    if args.redraw_generated and not args.skip_synthesis:
        parser.error("--redraw-generated redraws the work folder's cases: use it with --skip-synthesis")
    if args.skip_training and (args.out or args.skip_planning):
        parser.error("--skip-training stops after synthesis and planning: drop --out and --skip-planning")
    try:  # before synthesis and planning, which take minutes
        training = TrainingOptions(
            epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=5,
            save_every=args.save_every, seed=args.seed if args.training_seed is None else args.training_seed,
            initial_lr=args.lr, resume=args.resume,
            augmentation_processes=args.augmentation_processes, validate=not args.no_validate,
            init_from=str(args.init_from) if args.init_from else None, loss=args.loss,
            class_weights=class_weights_from_pairs(args.class_weight),
            scale_augmentation=tuple(args.scale_augmentation) if args.scale_augmentation else None)
        labels = dataset_json(0, "MrsegDemo")["labels"]
        assert isinstance(labels, dict)
        check_class_weights(training.class_weights, labels, "the demo dataset")
        ranges = RandomizationRanges(**{share: getattr(args, share) for share in RANDOMIZATION_SHARES},
                                     ct_enhancement=tuple(args.ct_enhancement),
                                     subject_scale=tuple(args.subject_scale),
                                     deformation_mm=tuple(args.deformation_mm),
                                     organ_scale=tuple(args.organ_scale),
                                     scaled_organs=tuple(args.scaled_organ or defaults.scaled_organs),
                                     perirenal_room_mm=tuple(args.perirenal_room),
                                     air_margin_mm=tuple(args.air_margin),
                                     fields_of_view=tuple(args.fov or defaults.fields_of_view),
                                     crop_centres=tuple(args.crop_centre or defaults.crop_centres),
                                     fat_suppressed_sequences=tuple(args.fat_suppressed_sequence
                                                                    or defaults.fat_suppressed_sequences),
                                     ectasia_modalities=tuple(args.ectasia_modality or defaults.ectasia_modalities),
                                     layered_aorta_modalities=tuple(args.layered_aorta_modality
                                                                    or defaults.layered_aorta_modalities))
    except InputError as err:
        parser.error(str(err))

    started = time.time()
    cases_dir = args.work / "cases"
    if not args.skip_synthesis:
        if not args.add_cases:
            shutil.rmtree(cases_dir, ignore_errors=True)
        synthesise(cases_dir, args.cases, args.template, seed=args.seed, ranges=ranges, names_from_seed=args.add_cases)
    if args.redraw_generated:
        print(f"{redraw_generated_cases(cases_dir, args.template)} generated-subject cases drawn again")
    synthesis_s = time.time() - started
    folders = NnunetFolders.under(args.work / "nnunet")
    if not args.skip_planning:
        build_dataset(cases_from_folder(cases_dir), folders.raw, dataset_id=500, name="MrsegDemo", overwrite=True)
    planning = PlanningOptions(spacing=(args.spacing,) * 3, base_features=args.base_features,
                               max_features=args.max_features, batch_size=args.batch_size,
                               patch_size=tuple(args.patch_size) if args.patch_size else None, processes=2)
    if not args.skip_planning:
        plan_and_preprocess(folders, 500, planning, transfer_from=args.init_from)  # its network, so it fits
        added = extend_splits(folders, 500, seed=args.seed)  # nnU-Net reuses a split: added cases join it
        if added:
            print(f"{len(added)} added cases spread over the folds of the existing split")
    planned_s = time.time() - started
    report: dict[str, object] = {"synthesis_s": synthesis_s, "planning_s": planned_s - synthesis_s}
    if args.skip_training:
        report.update(cases=len(list(cases_dir.glob("*.json"))), preprocessed=str(folders.preprocessed))
        print(json.dumps(report, indent=2))
        return
    model = train_fold(folders, 500, 0, training)
    report.update(training_s=time.time() - started - planned_s,
                  cases=json.loads((model / "dataset.json").read_text())["numTraining"],  # what it trained on
                  templates=[str(t) for t in args.template], epochs=args.epochs,
                  iterations_per_epoch=args.iterations, model_folder=str(model))
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
