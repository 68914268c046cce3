"""Command-line interface: ``mrseg segment``, ``evaluate``, ``phantom``, ``dataset build`` and ``train``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from mrseg import __version__

log = logging.getLogger("mrseg")


def _segment_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "segment",
        help="segment images with an nnU-Net v2 model",
        description=(
            "Segment image files (NIfTI, MHA, NRRD), DICOM series folders, folders of images or "
            "glob patterns. The model is loaded once for the whole batch. Each case writes "
            "OUTDIR/<name>_<postfix>.nii.gz, a uint8 label map on the input's exact grid."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--model", metavar="MODEL", nargs="+",
                   help="nnU-Net v2 model folder, or a model name: base, body_comp (installed on first use), demo, "
                        "or one imported with 'mrseg weights import' (default: $MRSEG_WEIGHTS_PATH, else base). "
                        "Several models run one after the other, each with its own output postfix")
    p.add_argument("--combine", action="store_true",
                   help="with several models, also write OUTDIR/<name>_combined.nii.gz: the first model's labels, "
                        "then each next model's shifted past the previous ones (base 1-40, body_comp 41-50); "
                        "table in OUTDIR/combined_classes.json")
    p.add_argument("--folds", nargs="+", metavar="K", help="folds to ensemble (default: all in the model folder)")
    p.add_argument("--fast", action="store_true", help="fold 0 and step 0.8, as the published tool's --fast")
    p.add_argument("--step", type=float, metavar="S", help="sliding-window step, fraction of the patch (default 0.5)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                   help="mirroring test-time augmentation, where the checkpoint allows it (default: off)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="network precision: auto = fp16 autocast on CUDA (as nnU-Net), bf16 on CPUs with native "
                        "bfloat16 (AVX-512 BF16/AMX; about 3x faster, >= 99.5%% of voxels as fp32), fp32 elsewhere; "
                        "fp32 = exact mode (nnU-Net's labels)")
    p.add_argument("--low-memory", action="store_true",
                   help="keep no freed memory in the process between tiles: 15-40%% slower on the CPU; the "
                        "default's peak is now about as low (README, Speed and memory)")
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
    p.add_argument("--statistics", action="store_true",
                   help="also write OUTDIR/<name>_<postfix>_stats.json and .csv: per class volume (mL), voxels, "
                        "intensity mean/median/SD, bounding box, border contact")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--series", metavar="UID", help="SeriesInstanceUID when a DICOM folder holds several series")
    p.add_argument("--channel", type=int, metavar="N", help="volume to use from 4-D or multi-component images")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="checkpoint_final.pth (default) or checkpoint_best.pth")
    p.add_argument("--orientation", default="LPS",
                   help="axis orientation the network runs in; 'none' keeps the input's axes (default: LPS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="Dice and surface distances per organ against reference label maps, with a report",
        description=(
            "Compare predicted label maps with reference label maps, case by case (paired by file "
            "name), per class: Dice, Hausdorff distance (max and 95th percentile), average symmetric "
            "surface distance and normalised surface Dice, in mm. Writes metrics.csv, summary.csv, "
            "report.md, report.json and plots/*.png into REPORT_DIR. Exit code 0, or 1 when a "
            "reference has no (readable) prediction (the report is still written), 2 on bad input."
        ),
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label maps (or one file)")
    p.add_argument("--ref", required=True, metavar="DIR", help="folder of reference label maps (or one file)")
    p.add_argument("-o", "--out", required=True, metavar="REPORT_DIR", help="report folder (created if missing)")
    p.add_argument("--pred-map", default="base", metavar="MAP",
                   help="label index of the predictions: base (40 classes, default), totalseg, totalseg_mr, "
                        "amos22, chaos, or a JSON mapping file")
    p.add_argument("--ref-map", default="base", metavar="MAP", help="label index of the references (as --pred-map)")
    p.add_argument("--classes", nargs="+", metavar="CLASS",
                   help="class names or numbers to evaluate (default: every class both label maps define)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM",
                   help="normalised surface Dice tolerance in mm (default 2)")
    p.add_argument("--distance-cap", type=float, metavar="MM",
                   help="distance used in the aggregates when one mask is empty (default: leave such cases out)")
    p.add_argument("--meta", metavar="CSV", help="metadata CSV: case_id plus dataset, modality, sequence, ... columns")
    p.add_argument("--pattern", metavar="REGEX",
                   help="regular expression with named groups matched against case ids, e.g. "
                        "'(?P<dataset>[^_]+)_(?P<case>.*)'")
    p.add_argument("--by", nargs="+", metavar="KEY",
                   help="stratum keys for the grouped tables (default: dataset, site, modality, sequence if present)")
    p.add_argument("--pred-postfix", default="_seg",
                   help="ending of prediction names after the case id (default _seg; a name without it matches too)")
    p.add_argument("--resample-pred", action="store_true",
                   help="resample predictions on another grid onto the reference grid (nearest neighbour); "
                        "default: refuse them")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG box plots (no matplotlib needed)")


def _phantom_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "phantom",
        help="synthesise MR/CT cases with known 40-class labels",
        description=(
            "Synthesise cases: a generated adult subject (or a given 40-class label map) on a grid of "
            "any orientation and spacing, an MR or CT image with physics-style or random contrast, "
            "and its labels. Writes NAME.nii.gz, NAME_labels.nii.gz and NAME.json per case. "
            "Case i uses seed SEED+i, so runs are reproducible."
        ),
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("-n", "--count", type=int, default=1, metavar="N", help="number of cases (default 1)")
    p.add_argument("--modality", choices=("mr", "ct"), default="mr", help="mr (default) or ct")
    p.add_argument("--sequence", help="mr: t1_in, t1_opp, dixon_water, dixon_fat, t2_haste, t2_tse; "
                                      "ct: native, contrast (default: the first)")
    p.add_argument("--fov", default="abdomen", help="thorax, abdomen (default), pelvis or trunk")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="voxel size in mm (default 2 2 2; with --from-labels: the label map's grid)")
    p.add_argument("--orientation", help="axis code like RAS or PIL, or 'oblique' (default LPS; with "
                                         "--from-labels: the label map's grid)")
    p.add_argument("--random-contrast", action="store_true", help="random intensity per tissue (training mode)")
    p.add_argument("--from-labels", metavar="LABELMAP", help="synthesise from this 40-class label map")


def _dataset_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dataset", help="assemble training data", description="Assemble training data.")
    actions = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    b = actions.add_parser(
        "build",
        help="CSV or phantom folder -> nnU-Net v2 raw dataset with the 40 classes",
        description=(
            "Write an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json with the 40 classes, "
            "mrseg_cases.json with modality and sequence per case) from a CSV with the columns image, "
            "label, modality, sequence, dataset, label_map (image and label required; paths relative "
            "to the CSV) or from a folder written by 'mrseg phantom'. Labels in other indices are "
            "mapped with the evaluation label maps; every label file must lie on its image's grid. "
            "Nothing is left behind when a case fails."
        ),
    )
    b.add_argument("source", metavar="CSV_OR_FOLDER", help="cases CSV, or a folder of NAME.nii.gz + NAME_labels.nii.gz")
    b.add_argument("--raw", metavar="DIR", help="nnU-Net raw folder (default: $nnUNet_raw)")
    b.add_argument("--id", type=int, required=True, metavar="N", help="dataset id, 1..999")
    b.add_argument("--name", required=True, help="dataset name (letters, digits, '-')")
    b.add_argument("--label-map", default="base", metavar="MAP",
                   help="label index of label files without a label_map column: base (default), totalseg, "
                        "totalseg_mr, amos22, chaos or a JSON mapping")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id and name")
    b.add_argument("--orientation", default="LPS", metavar="CODE",
                   help="axis orientation the images and labels are stored in (default LPS, what mrseg segment gives "
                        "the network); 'none' keeps each file's axes")


def _train_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train",
        help="plan, preprocess and train with nnU-Net v2 (folds, cross-validation, transfer learning)",
        description=(
            "Plan and preprocess a raw dataset with nnU-Net's default planner (plus the overrides "
            "below), train the folds with nnU-Net's own trainer (nnUNetTrainerNoMirroring unless "
            "--mirroring) and, when every fold validated, write a per-class Dice table of all "
            "validation cases to MODEL/crossval. The result is a standard nnU-Net v2 model folder "
            "that 'mrseg segment --model' and nnU-Net's predictor load."
        ),
    )
    p.add_argument("--id", type=int, required=True, metavar="N", help="dataset id (mrseg dataset build --id)")
    p.add_argument("--root", metavar="DIR",
                   help="folder holding nnUNet_raw, nnUNet_preprocessed and nnUNet_results (default: the "
                        "$nnUNet_raw, $nnUNet_preprocessed, $nnUNet_results variables)")
    p.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"], metavar="K",
                   help="folds to train, 0-4 or 'all' (default: all five, cross-validation)")
    p.add_argument("--epochs", type=int, default=1000, help="epochs (default 1000)")
    p.add_argument("--iterations", type=int, default=250, metavar="N", help="training batches per epoch (default 250)")
    p.add_argument("--val-iterations", type=int, default=50, metavar="N",
                   help="validation batches per epoch (default 50)")
    p.add_argument("--lr", type=float, default=1e-2, help="initial learning rate (default 0.01)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--mirroring", action="store_true",
                   help="mirror augmentation (off by default: left/right structures must not swap)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="target spacing in mm")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), help="patch size")
    p.add_argument("--base-features", type=int, metavar="N", help="features of the first stage (default 32)")
    p.add_argument("--max-features", type=int, metavar="N", help="largest number of features (default 320)")
    p.add_argument("--batch-size", type=int, metavar="N", help="batch size (default: the planner's)")
    p.add_argument("--memory-target", type=float, metavar="GB", help="the planner's GPU memory target (default 8)")
    p.add_argument("--processes", type=int, default=2, metavar="N", help="preprocessing processes (default 2)")
    p.add_argument("--augmentation-processes", type=int, default=0, metavar="N",
                   help="data augmentation worker processes (default 0: in the training process)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from this nnU-Net model folder's weights (transfer learning); the plans copy its "
                        "network, patch size and spacing")
    p.add_argument("--init-fold", type=int, default=0, metavar="K", help="fold of --init-from to start from")
    p.add_argument("--no-plan", action="store_true", help="reuse the existing plans and preprocessed data")
    p.add_argument("--no-validate", action="store_true", help="skip the validation predictions and the Dice table")


def _demo_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="offline end to end: synthesise a case, segment it with the bundled demo model, score it",
        description=(
            "Synthesise an MR or CT case with known labels (or take INPUT), segment it with the demo "
            "model shipped in the package, write OUTDIR/<name>_seg.nii.gz and print the Dice of every "
            "class against the known truth. Nothing is downloaded."
        ),
    )
    p.add_argument("input", nargs="?", metavar="INPUT",
                   help="an image to segment instead (its truth: --truth, or NAME_labels.nii.gz beside it)")
    p.add_argument("-o", "--out", default="mrseg_demo", metavar="OUTDIR", help="output folder (default mrseg_demo)")
    p.add_argument("--truth", metavar="LABELS", help="40-class label map of INPUT to score against")
    p.add_argument("--modality", choices=("mr", "ct"), default="mr", help="synthesised case: mr (default) or ct")
    p.add_argument("--sequence", default="t1_in", help="synthesised case's sequence (default t1_in; ct: native, "
                                                      "contrast)")
    p.add_argument("--seed", type=int, default=7, help="synthesised case's seed (default 7)")
    p.add_argument("--model", default="demo", metavar="MODEL", help="model (default: the bundled demo model)")


def _weights_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "weights",
        help="list, install, import, verify and remove models in the weights store",
        description=(
            "The weights store ($MRSEG_HOME, default ~/.mrseg) holds models by name. 'install' downloads a "
            "published model (progress, resume, retries), checks its sha256 and installs it atomically; "
            "'import' installs a zip or model folder you already have (offline). $MRSEG_MIRROR is the base URL "
            "of a mirror serving the published archives by file name; $MRSEG_OFFLINE=1 forbids downloads."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the published, bundled and imported models and whether they are installed")
    install = actions.add_parser("install", help="download, verify and install a published model")
    install.add_argument("name", help="published model name (base, body_comp)")
    install.add_argument("--url", help="download from this URL instead (the published sha256 is still checked)")
    install.add_argument("--force", action="store_true", help="reinstall over an existing install")
    imported = actions.add_parser("import", help="install a model from a local zip archive or model folder")
    imported.add_argument("source", metavar="ZIP_OR_DIR")
    imported.add_argument("--name", help="store name (default: the published name its sha256 matches)")
    imported.add_argument("--force", action="store_true", help="replace a model of that name")
    for action, text in (("path", "print an installed model's folder"),
                         ("verify", "re-check every file of an installed model against its install record"),
                         ("remove", "delete an installed model")):
        actions.add_parser(action, help=text).add_argument("name")


def _class_name_options(p: argparse.ArgumentParser) -> None:
    names = p.add_mutually_exclusive_group()
    names.add_argument("--catalogue", default="base", choices=("base", "body_comp"),
                       help="class names of the labels (default base, the 40 classes)")
    names.add_argument("--model", metavar="MODEL", help="take the class names from this model's dataset.json")


def _preview_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "preview",
        help="PNG of axial, coronal and sagittal slices with a coloured, labelled overlay",
        description=(
            "Render LABELS over IMAGE (same grid) in three views through the centre of the segmented voxels, "
            "reoriented to LPS so every preview reads the same way, with a legend. Headless (matplotlib Agg)."
        ),
    )
    p.add_argument("labels", metavar="LABELS")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--out", metavar="PNG", help="output file (default: <name>_preview.png beside LABELS)")
    _class_name_options(p)


def _stats_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "stats",
        help="per-class volume, intensity, bounding box and border contact of an existing label map",
        description=(
            "Statistics of every class of LABELS (volume in mL, voxel count, bounding box in voxels and mm, "
            "whether the class touches the image border) and, with IMAGE on the same grid, the mean, median and "
            "SD of its intensity. Writes OUT.json and OUT.csv (default: next to LABELS, <name>_stats)."
        ),
    )
    p.add_argument("labels", metavar="LABELS")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="the intensity image the labels were made from")
    p.add_argument("-o", "--out", metavar="OUT", help="output path without extension")
    _class_name_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrseg",
        description="Segment 40 anatomical structures in MRI and CT with nnU-Net v2 models.",
    )
    parser.add_argument("--version", action="version", version=f"mrseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _segment_parser(sub)
    _evaluate_parser(sub)
    _phantom_parser(sub)
    _dataset_parser(sub)
    _train_parser(sub)
    _demo_parser(sub)
    _weights_parser(sub)
    _stats_parser(sub)
    _preview_parser(sub)
    return parser


def _orientation_option(value: str) -> str | None:
    """An ``--orientation`` value: an axis code, or None for 'none' (keep the file's axes)."""
    return None if str(value).lower() == "none" else value


def _run_segment(args: argparse.Namespace) -> int:
    from mrseg.batch import collect_cases, model_postfix

    models = args.model or [None]
    if len(models) > 1 and args.postfix is not None:
        log.error("--postfix names the output of one model; with several models each gets its own "
                  "(%s)", ", ".join(model_postfix(m) for m in models))
        return 2
    postfixes = [args.postfix or model_postfix(m) for m in models]
    if len(set(postfixes)) < len(postfixes):
        log.error("models %s would write the same output names (*_%s); run them one at a time with --postfix",
                  ", ".join(str(m) for m in models), postfixes[0])
        return 2
    if args.combine and len(models) < 2:
        log.error("--combine needs two or more models, e.g. --model base body_comp")
        return 2
    cases = collect_cases(args.inputs)
    codes, foregrounds = [], []
    for model, postfix in zip(models, postfixes):
        code, foreground = _segment_with(model, postfix, cases, args)
        if foreground is None:
            return code
        codes.append(code)
        foregrounds.append(foreground)
    if args.combine:
        codes.append(_combine_outputs(cases, postfixes, foregrounds, args))
    return max(codes)


def _segment_with(model: str | None, postfix: str, cases: list, args: argparse.Namespace,  # type: ignore[type-arg]
                  ) -> tuple[int, dict[str, int] | None]:
    """Segment every case with one model; returns the exit code and the model's classes (None: not loaded)."""
    from tqdm import tqdm

    from mrseg.batch import CaseResult, run_batch
    from mrseg.errors import MrsegError
    from mrseg.inference.segmenter import Segmenter
    from mrseg.model.loader import resolve_model_folder
    from mrseg.postprocess import resolve_classes
    from mrseg.report.run_report import run_report, write_run_report

    folds = args.folds if args.folds is not None else (["0"] if args.fast else None)
    step = args.step if args.step is not None else (0.8 if args.fast else 0.5)
    orientation = _orientation_option(args.orientation)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    try:
        segmenter = Segmenter(
            resolve_model_folder(model, install_missing=True),
            folds=folds,
            checkpoint_name=f"checkpoint_{args.checkpoint}.pth",
            device=args.device,
            step=step,
            tta=args.tta,
            threads=args.threads,
            orientation=orientation,
            precision=args.precision,
            reuse_memory=not args.low_memory,
        )
        classes = resolve_classes(args.classes, segmenter.model.dataset.foreground) if args.classes else None
    except MrsegError as err:
        log.error("%s", err)
        return 2, None
    load_seconds = time.perf_counter() - clock
    log.info(
        "model %s, folds %s, step %.2f, device %s, precision %s, %d case(s)",
        segmenter.model.folder, ",".join(segmenter.model.folds), step, segmenter.device, segmenter.precision,
        len(cases),
    )

    bar: tqdm | None = None  # type: ignore[type-arg]
    show = not args.no_progress and not args.quiet

    def start(case: object) -> None:
        nonlocal bar
        if show:
            bar = tqdm(total=None, desc=getattr(case, "name", "case"), unit="tile", leave=False)

    def tile(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(1)

    def end(result: CaseResult) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        if result.status == "ok":
            stages = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
            log.info("ok      %s -> %s (%.1f s, %d tiles: %s)", result.case.path, result.output, result.seconds,
                     result.num_tiles, stages)
        elif result.status == "skipped":
            log.warning("skipped %s", result.error)
        else:
            log.error("failed  %s", result.error)

    results = run_batch(
        segmenter, cases, args.out, postfix=postfix, overwrite=args.overwrite, statistics=args.statistics,
        classes=classes, split_classes=args.split_classes, preview=args.preview, output_type=args.output_type,
        model_name=str(model) if model is not None and not Path(str(model)).exists() else
        segmenter.model.folder.name,
        series=args.series, channel=args.channel, on_case_start=start, on_tile=tile, on_case_end=end,
    )
    report = run_report(
        results, started=started, load_seconds=load_seconds,
        model={"folder": str(segmenter.model.folder), "name": model, "folds": list(segmenter.model.folds),
               "configuration": segmenter.model.configuration.name,
               "checkpoint": f"checkpoint_{args.checkpoint}.pth"},
        settings={"device": str(segmenter.device), "precision": segmenter.precision, "step": step, "tta": args.tta,
                  "threads": args.threads, "orientation": orientation, "low_memory": args.low_memory,
                  "classes": list(classes) if classes else None, "statistics": args.statistics,
                  "split_classes": args.split_classes, "preview": args.preview, "postfix": postfix,
                  "output_type": args.output_type},
    )
    log.info("run report: %s", write_run_report(report, args.out, postfix=postfix))
    counts = report["counts"]
    total = sum(r.seconds for r in results)
    summary = (f"{len(results)} case(s): {counts['ok']} segmented, {counts['skipped']} skipped, "
               f"{counts['failed']} failed, {total:.1f} s")
    (log.error if counts["failed"] else log.warning if not args.quiet else log.info)(summary)
    return (1 if counts["failed"] else 0), dict(classes or segmenter.model.dataset.foreground)


def _combine_outputs(cases: list, postfixes: list[str], foregrounds: list[dict[str, int]],  # type: ignore[type-arg]
                     args: argparse.Namespace) -> int:
    """``OUTDIR/<name>_combined.nii.gz`` from every model's output, and the combined class table."""
    import json

    from mrseg.batch import output_path
    from mrseg.errors import MrsegError
    from mrseg.io import read_image, write_image
    from mrseg.io.files import write_bytes_atomic
    from mrseg.postprocess import combine_label_maps, combined_classes

    out = Path(args.out)
    offsets, table = combined_classes(foregrounds)
    write_bytes_atomic(out / "combined_classes.json", json.dumps({str(k): v for k, v in table.items()}, indent=2))
    failed = 0
    for case in cases:
        paths = [output_path(case, out, postfix) for postfix in postfixes]
        target = output_path(case, out, "combined")
        if not all(p.is_file() for p in paths):
            log.error("not combined %s: a model's output is missing", case.path)
            failed += 1
            continue
        try:
            write_image(combine_label_maps([read_image(p) for p in paths], offsets), target)
        except MrsegError as err:
            log.error("not combined %s: %s", case.path, err)
            failed += 1
            continue
        log.info("combined %s -> %s", case.path, target)
    return 1 if failed else 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.evaluation import CaseEvaluation, evaluate_cohort, write_report

    def done(case: CaseEvaluation) -> None:
        scored = [m.dice for m in case.metrics.values() if m.dice is not None]
        if case.failed:
            log.error("%-20s %s", case.case, case.status)
        else:
            mean = sum(scored) / len(scored) if scored else float("nan")
            log.info("%-20s %d classes, mean Dice %.3f%s", case.case, len(scored), mean,
                     " (resampled)" if case.resampled else "")

    try:
        result = evaluate_cohort(
            args.pred, args.ref, pred_map=args.pred_map, ref_map=args.ref_map, classes=args.classes,
            nsd_tolerance=args.nsd_tolerance, pred_postfix=args.pred_postfix, metadata=args.meta,
            pattern=args.pattern, resample_pred=args.resample_pred, on_case=done,
        )
        files = write_report(result, args.out, by=args.by, distance_cap=args.distance_cap, plots=not args.no_plots)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    failures = len(result.failures)
    summary = (f"{len(result.cases)} case(s): {len(result.cases) - failures} evaluated, {failures} failure(s); "
               f"report {files.markdown}")
    (log.error if failures else log.warning if not args.quiet else log.info)(summary)
    return 1 if failures else 0


def _run_phantom(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.io.files import case_name, read_image
    from mrseg.phantom.cases import make_case, write_case

    if args.count < 1:
        log.error("--count must be at least 1, got %d", args.count)
        return 2
    try:
        labels = read_image(args.from_labels) if args.from_labels else None
        for i in range(args.count):
            seed = args.seed + i
            case = make_case(
                seed=seed, modality=args.modality, sequence=args.sequence, fov=args.fov,
                spacing=tuple(args.spacing) if args.spacing else None, orientation=args.orientation,
                random_contrast=args.random_contrast, from_labels=labels, source=args.from_labels,
            )
            name = f"{case_name(args.from_labels)}_synth_{i:04d}" if labels is not None else f"phantom_{seed:04d}"
            paths = write_case(case, args.out, name)
            log.info("wrote %s", paths["image"])
    except MrsegError as err:
        log.error("%s", err)
        return 2
    return 0


def _run_dataset(args: argparse.Namespace) -> int:
    import os

    from mrseg.errors import MrsegError
    from mrseg.training.dataset import build_dataset, cases_from_csv, cases_from_folder, summarize

    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        log.error("give --raw DIR or set $nnUNet_raw")
        return 2
    try:
        source = Path(args.source)
        if source.is_dir():
            cases = cases_from_folder(source, label_map=args.label_map)
        else:
            cases = cases_from_csv(source, label_map=args.label_map)
        orientation = _orientation_option(args.orientation)
        target = build_dataset(cases, raw, dataset_id=args.id, name=args.name, overwrite=args.overwrite,
                               orientation=orientation)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    counts = summarize({"modality": c.modality, "sequence": c.sequence} for c in cases)
    log.warning("wrote %s: %d cases (%s)", target, len(cases), ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _run_train(args: argparse.Namespace) -> int:
    import os

    from mrseg.errors import MrsegError
    from mrseg.training.crossval import run_cross_validation
    from mrseg.training.nnunet import NnunetFolders, PlanningOptions, TrainingOptions

    if args.root:
        folders = NnunetFolders.under(args.root)
    else:
        names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            log.error("give --root DIR or set %s", ", ".join(f"${n}" for n in missing))
            return 2
        folders = NnunetFolders(*(Path(os.environ[n]) for n in names))
    planning = PlanningOptions(
        spacing=tuple(args.spacing) if args.spacing else None,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        base_features=args.base_features, max_features=args.max_features, batch_size=args.batch_size,
        memory_target_gb=args.memory_target, processes=args.processes,
    )
    training = TrainingOptions(
        epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=args.val_iterations,
        initial_lr=args.lr, device=args.device, seed=args.seed, mirroring=args.mirroring,
        augmentation_processes=args.augmentation_processes, init_from=args.init_from, init_fold=args.init_fold,
        validate=not args.no_validate,
    )
    folds: list[int | str] = [f if f == "all" else int(f) for f in args.folds]

    def fold_done(fold: int | str, model: Path) -> None:
        log.warning("fold %s trained: %s", fold, model)

    try:
        result = run_cross_validation(folders, args.id, folds=folds, planning=planning, training=training,
                                      plan=not args.no_plan, on_fold=fold_done)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    if result.report is not None:
        for name, value in result.mean_dice.items():
            log.warning("%-32s mean Dice %.3f", name, value)
        log.warning("validation report: %s", result.report)
    log.warning("model folder: %s", result.model_folder)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from mrseg.demo import format_scores, run_demo
    from mrseg.errors import MrsegError

    sequence = args.sequence if args.modality == "mr" or args.sequence != "t1_in" else "native"
    try:
        result = run_demo(args.out, args.input, truth=args.truth, seed=args.seed, modality=args.modality,
                          sequence=sequence, model=args.model)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    print(f"image   {result.image}\nlabels  {result.labels} ({result.seconds:.1f} s)")
    if result.truth is not None:
        print(f"truth   {result.truth}")
    print(format_scores(result))
    return 0


def _class_names(args: argparse.Namespace) -> dict[int, str]:
    """Label value → class name from ``--model``'s dataset.json, else from ``--catalogue``."""
    from mrseg.classes import catalogue
    from mrseg.model.loader import resolve_model_folder
    from mrseg.model.plans import read_dataset

    if args.model:
        dataset = read_dataset(resolve_model_folder(args.model) / "dataset.json")
        return {value: name for name, value in dataset.foreground.items()}
    return {c.index: c.name for c in catalogue(args.catalogue).classes}


def _run_preview(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.io import case_name, read_image
    from mrseg.report.preview import write_preview

    try:
        names = _class_names(args)
        out = Path(args.out) if args.out else Path(args.labels).with_name(f"{case_name(args.labels)}_preview.png")
        written = write_preview(read_image(args.labels), read_image(args.image), out, names=names,
                                title=case_name(args.image))
    except MrsegError as err:
        log.error("%s", err)
        return 2
    print(written)
    return 0


def _run_stats(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.io import case_name, read_image
    from mrseg.report.statistics import class_statistics, write_statistics

    try:
        names = _class_names(args)
        labels = read_image(args.labels)
        image = read_image(args.image) if args.image else None
        rows = class_statistics(labels, image, names=names)
        base = Path(args.out) if args.out else Path(args.labels).with_name(f"{case_name(args.labels)}_stats")
        written = write_statistics(rows, base, meta={"labels": str(args.labels), "image": args.image})
    except MrsegError as err:
        log.error("%s", err)
        return 2
    for row in rows:
        if row.voxels:
            flag = "  touches border" if row.touches_border else ""
            print(f"{row.label:>3} {row.name:<34} {row.volume_ml:>10.1f} mL{flag}")
    print("\n".join(str(p) for p in written))
    return 0


def _run_weights(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.model import weights

    try:
        if args.action == "list":
            for entry in weights.list_models():
                where = str(entry.folder) if entry.folder else ""
                print(f"{entry.name:<12} {entry.status:<14} {entry.description}  {where}".rstrip())
        elif args.action == "install":
            print(weights.install(args.name, url=args.url, force=args.force))
        elif args.action == "import":
            print(weights.import_model(args.source, name=args.name, force=args.force))
        elif args.action == "path":
            print(weights.model_path(args.name))
        elif args.action == "verify":
            problems = weights.verify(args.name)
            for problem in problems:
                log.error("%s: %s", args.name, problem)
            if problems:
                log.error("%s is damaged; reinstall it with 'mrseg weights install %s --force' (or import it again)",
                          args.name, args.name)
                return 1
            print(f"{args.name}: every file matches its install record")
        elif args.action == "remove":
            print(f"removed {weights.remove(args.name)}")
    except MrsegError as err:
        log.error("%s", err)
        return 2
    return 0


def _configure_logging(level: int) -> None:
    """Log the package's messages to stderr (once, however often main() is called)."""
    logger = logging.getLogger("mrseg")
    logger.setLevel(level)
    if not any(getattr(h, "mrseg_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.mrseg_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mrseg`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    _configure_logging(level)
    if args.command is None:
        parser.print_help()
        return 0
    runners = {"segment": _run_segment, "evaluate": _run_evaluate, "phantom": _run_phantom,
               "dataset": _run_dataset, "train": _run_train, "demo": _run_demo, "weights": _run_weights,
               "stats": _run_stats, "preview": _run_preview}
    if args.command in runners:
        return runners[args.command](args)
    parser.error(f"unknown command {args.command}")
    return 2
