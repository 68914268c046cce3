"""``mrseg phantom``: synthesise MR/CT cases with known 40-class labels."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
                                      "ct: native, contrast (portal-venous), arterial (CT angiography) "
                                      "(default: the first)")
    p.add_argument("--fov", default="abdomen", help="thorax, abdomen (default), pelvis or trunk")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="voxel size in mm (default 2 2 2; with --from-labels: the label map's grid)")
    p.add_argument("--orientation", help="axis code like RAS or PIL, or 'oblique' (default LPS; with "
                                         "--from-labels: the label map's grid)")
    p.add_argument("--random-contrast", action="store_true", help="random intensity per tissue (training mode)")
    p.add_argument("--fat-suppression", type=float, default=0.0, metavar="SHARE",
                   help="spectral fat suppression for t1_in, t2_haste, t2_tse: the share of fat signal removed "
                        "(0.95 with --sequence t2_tse is a T2-SPIR look; default 0)")
    p.add_argument("--bile", type=float, metavar="C",
                   help="the gallbladder's bile, 0 (dilute) to 1 (concentrated) (default: the tissue catalogue's)")
    p.add_argument("--gastric-content", type=float, metavar="C",
                   help="the stomach's content, 0 (water) to 1 (a meal) (default: water)")
    p.add_argument("--liver-fat", type=float, metavar="FRACTION",
                   help="the liver's fat fraction, 0-1 (steatosis about 0.05-0.4; default 0.04)")
    p.add_argument("--pancreas-fat", type=float, metavar="FRACTION",
                   help="the pancreas's fat fraction, 0-1 (default 0.06)")
    p.add_argument("--clutter", type=float, default=0.0, metavar="FRACTION",
                   help="the share of the visceral fat filled with unlabelled soft tissue (vessels, lymph nodes), "
                        "0-1 (default 0: even fat)")
    p.add_argument("--perirenal", type=float, nargs=2, metavar=("MARGIN_MM", "RISE_MM"),
                   help="give each kidney's perirenal space (MARGIN_MM around it, RISE_MM above it) its own, "
                        "greyer fat (default: plain visceral fat)")
    p.add_argument("--perirenal-room", type=float, default=0.0, metavar="MM",
                   help="keep a generated subject's stomach, pancreas, bowel and liver out of the left kidney's "
                        "perirenal fat raised MM: a compartment of fat as wide as the kidney above its upper pole, "
                        "the spleen whole beside it (default 0: only the fat round the kidney)")
    p.add_argument("--arms", action="store_true",
                   help="give a generated subject arms lying at the trunk's sides (no class: background in the "
                        "labels); the field of view widens to hold them")
    p.add_argument("--table", action="store_true",
                   help="lay a generated subject on a scanner table: two curved shells under its back (no class); "
                        "the field of view deepens to hold it")
    p.add_argument("--air-margin", type=float, nargs="+", default=[0.0], metavar="MM",
                   help="widen a generated subject's field of view into air by MM on each side, or by four numbers: "
                        "right, left, front, back; each 0-300 (default 0: the body wall near the image's edges)")
    p.add_argument("--ectasia", type=float, default=0.0, metavar="MM",
                   help="widen the aorta by MM all round along its whole length, into fat and lung "
                        "(default 0: as drawn)")
    p.add_argument("--extraperitoneal", type=float, default=0.0, metavar="MM",
                   help="keep the liver, spleen, gallbladder, stomach and colon MM off the body wall's muscle, "
                        "with extraperitoneal fat between (default 0: they reach it)")
    p.add_argument("--scale", type=float, default=1.0, metavar="FACTOR",
                   help="the subject's size, a factor on every length, 0.5-2 (0.9: a smaller person; the grid "
                        "keeps its spacing; default 1)")
    p.add_argument("--layered-aorta", action="store_true",
                   help="give each generated subject a diseased descending aorta whose bright lumen is a cap along "
                        "one wall beside grey thrombus, as in a dissection (default: 30 %% of subjects are diseased, "
                        "half of them so)")
    p.add_argument("--deform", type=float, default=0.0, metavar="MM",
                   help="deform the anatomy (generated or --from-labels) smoothly at random, the SD of the "
                        "displacement in mm at control points 80 mm apart, 0-20 (default 0: none)")
    p.add_argument("--organ-scale", nargs=2, action="append", metavar=("ORGAN", "FACTOR"), default=[],
                   help="a generated subject's liver, spleen, right_kidney or left_kidney smaller or larger for its "
                        "body, a factor on every length of the organ, 0.5-1.5; repeatable (default: as drawn)")
    p.add_argument("--from-labels", metavar="LABELMAP", help="synthesise from this 40-class label map")


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.io.files import case_name, read_image
    from mrseg.phantom.cases import make_case, write_case

    if args.count < 1:
        log.error("--count must be at least 1, got %d", args.count)
        return 2
    try:
        organ_scales = {organ: float(factor) for organ, factor in args.organ_scale}
    except ValueError:
        log.error("--organ-scale takes an organ and a number, got %s", " ".join(map(" ".join, args.organ_scale)))
        return 2
    try:
        labels = read_image(args.from_labels) if args.from_labels else None
        for i in range(args.count):
            seed = args.seed + i
            case = make_case(
                seed=seed, modality=args.modality, sequence=args.sequence, fov=args.fov,
                spacing=tuple(args.spacing) if args.spacing else None, orientation=args.orientation,
                random_contrast=args.random_contrast, from_labels=labels, source=args.from_labels,
                fat_suppression=args.fat_suppression, bile=args.bile, gastric_content=args.gastric_content,
                liver_fat_fraction=args.liver_fat, pancreas_fat_fraction=args.pancreas_fat,
                clutter=args.clutter, perirenal=tuple(args.perirenal) if args.perirenal else None,
                perirenal_room=args.perirenal_room, arms=args.arms, table=args.table,
                air_margin=args.air_margin,
                ectasia=args.ectasia, extraperitoneal=args.extraperitoneal, scale=args.scale,
                layered_aorta=args.layered_aorta, deformation_mm=args.deform, organ_scales=organ_scales,
            )
            name = f"{case_name(args.from_labels)}_synth_{i:04d}" if labels is not None else f"phantom_{seed:04d}"
            paths = write_case(case, args.out, name)
            log.info("wrote %s", paths["image"])
    except MrsegError as err:
        log.error("%s", err)
        return 2
    return 0
