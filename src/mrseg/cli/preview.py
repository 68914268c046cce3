"""``mrseg preview``: a PNG of three views with a labelled overlay."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mrseg.cli._options import add_class_name_options, class_names

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    add_class_name_options(p)


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.io import case_name, read_image
    from mrseg.report.preview import write_preview

    try:
        names = class_names(args)
        out = Path(args.out) if args.out else Path(args.labels).with_name(f"{case_name(args.labels)}_preview.png")
        written = write_preview(read_image(args.labels), read_image(args.image), out, names=names,
                                title=case_name(args.image))
    except MrsegError as err:
        log.error("%s", err)
        return 2
    print(written)
    return 0
