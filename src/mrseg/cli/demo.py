"""``mrseg demo``: offline end to end with the bundled demo model."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


def run(args: argparse.Namespace) -> int:
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
