"""``mrseg stats``: per-class statistics of an existing label map."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mrseg.cli._options import add_class_name_options, class_names

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    add_class_name_options(p)


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.io import case_name, read_image
    from mrseg.report.statistics import class_statistics, write_statistics

    try:
        names = class_names(args)
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
