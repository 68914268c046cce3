"""``mrseg dataset build``: assemble an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mrseg.cli._options import orientation_option

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


def run(args: argparse.Namespace) -> int:
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
        orientation = orientation_option(args.orientation)
        target = build_dataset(cases, raw, dataset_id=args.id, name=args.name, overwrite=args.overwrite,
                               orientation=orientation)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    counts = summarize({"modality": c.modality, "sequence": c.sequence} for c in cases)
    log.warning("wrote %s: %d cases (%s)", target, len(cases), ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
