"""Options several commands share, parsed the same way everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def orientation_option(value: str) -> str | None:
    """An ``--orientation`` value: an axis code, or None for 'none' (keep the file's axes)."""
    return None if str(value).lower() == "none" else value


def add_class_name_options(p: argparse.ArgumentParser) -> None:
    """``--catalogue`` or ``--model``: where the class names of a label map come from."""
    names = p.add_mutually_exclusive_group()
    names.add_argument("--catalogue", default="base", choices=("base", "body_comp"),
                       help="class names of the labels (default base, the 40 classes)")
    names.add_argument("--model", metavar="MODEL", help="take the class names from this model's dataset.json")


def class_names(args: argparse.Namespace) -> dict[int, str]:
    """Label value → class name from ``--model``'s dataset.json, else from ``--catalogue``."""
    from mrseg.classes import catalogue
    from mrseg.model.plans import read_dataset
    from mrseg.model.store import resolve_model_folder

    if args.model:
        dataset = read_dataset(resolve_model_folder(args.model) / "dataset.json")
        return {value: name for name, value in dataset.foreground.items()}
    return {c.index: c.name for c in catalogue(args.catalogue).classes}


def add_run_options(p: argparse.ArgumentParser) -> None:
    """How a model runs: folds, step, mirroring, device, precision, checkpoint, orientation."""
    p.add_argument("--folds", nargs="+", metavar="K", help="folds to ensemble (default: all in the model folder)")
    p.add_argument("--fast", action="store_true", help="fold 0 and step 0.8, as the published tool's --fast")
    p.add_argument("--step", type=float, metavar="S", help="sliding-window step, fraction of the patch (default 0.5)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                   help="mirroring test-time augmentation, where the checkpoint allows it (default: off)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="network precision: auto (default) = what nnU-Net runs: fp32 on every CPU (the same "
                        "labels on every machine), fp16 autocast on CUDA; bf16 = about 2x faster on CPUs with "
                        "native bfloat16 (AVX-512 BF16/AMX) at 99.6-99.9%% of voxels equal (README, Speed and memory)")
    p.add_argument("--low-memory", action="store_true",
                   help="keep no freed memory in the process between tiles: 15-40%% slower on the CPU; the "
                        "default's peak is now about as low (README, Speed and memory)")
    p.add_argument("--ensemble", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the members a model folder's mrseg_ensemble.json names, as the bundled demo "
                        "does (default: on); --no-ensemble runs the folder's own model alone: faster, other labels")
    p.add_argument("--postprocessing", action=argparse.BooleanOptionalAction, default=True,
                   help="apply the model folder's nnU-Net postprocessing.json (keep the largest connected component "
                        "of the classes it names), where it has one (default: on); --no-postprocessing gives the "
                        "labels as nnU-Net's predictor exports them")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="checkpoint_final.pth (default) or checkpoint_best.pth")
    p.add_argument("--orientation", default="LPS",
                   help="axis orientation the network runs in; 'none' keeps the input's axes (default: LPS)")


def add_output_options(p: argparse.ArgumentParser, *, statistics: bool = True) -> None:
    """Which outputs each case writes and under which names (``statistics``: offer --statistics)."""
    p.add_argument("--postfix", help="output name postfix (default: seg; <name>_seg for published models other "
                                      "than base, e.g. body_comp_seg)")
    p.add_argument("--output-type", choices=("auto", "nifti", "dicom-seg", "both"), default="auto",
                   help="nifti: <name>_<postfix>.nii.gz; dicom-seg: <name>_<postfix>.dcm referencing the source series "
                        "(DICOM input only); both; auto (default): both for a DICOM series, nifti otherwise")
    p.add_argument("--classes", nargs="+", metavar="CLASS",
                   help="keep only these classes (names such as liver spleen, or label numbers); the others become "
                        "background. Unknown names are refused with the closest matches")
    p.add_argument("--split-classes", action="store_true",
                   help="also write one binary mask per class: OUTDIR/<name>_<postfix>/<class>.nii.gz")
    p.add_argument("--preview", action="store_true",
                   help="also write OUTDIR/<name>_<postfix>_preview.png: axial, coronal and sagittal slices with a "
                        "coloured, labelled overlay (needs matplotlib)")
    if statistics:
        p.add_argument("--statistics", action="store_true",
                       help="also write OUTDIR/<name>_<postfix>_stats.json and .csv: per class volume (mL), voxels, "
                            "intensity mean/median/SD, bounding box, centroid, border contact")


def model_spec(folder: Path, name: str, args: argparse.Namespace, *, threads: int | None) -> Any:
    """The :class:`~mrseg.pipeline.ModelSpec` the run options ask for (``--fast``: fold 0, step 0.8)."""
    from mrseg.pipeline import ModelSpec

    folds = args.folds if args.folds is not None else (["0"] if args.fast else None)
    step = args.step if args.step is not None else (0.8 if args.fast else 0.5)
    return ModelSpec(folder, name=name, folds=tuple(str(f) for f in folds) if folds else None,
                     checkpoint=args.checkpoint, step=step, tta=args.tta, device=args.device, threads=threads,
                     precision=args.precision, orientation=orientation_option(args.orientation),
                     low_memory=args.low_memory, ensemble=args.ensemble, postprocessing=args.postprocessing)
