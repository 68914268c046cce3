"""Measure the demo model for its model card: per-class Dice on held-out phantoms and real scans.

Held-out phantoms: generated subjects with seeds the training never used (training seeds start
at 1000), at 3 mm, one set per contrast: CT native, portal-venous and arterial, T1 in phase, T1
opposed phase, T2 HASTE, T2 TSE, Dixon water, Dixon fat. Real scans (../shared/data):
mr/example_mr_sm and ct/example_ct against their 40-class references (TotalSegmentator's
predictions, remapped), and the aorta and heart of ct/thorax_cta against their binary masks (the
heart mask lies on another grid and is resampled onto the CTA's); then ct/example_ct_sm (30
slices of example_ct) against its own 40-class reference, and the DICOM series
dicom/example_ct_series (an upper-abdominal CT, arms at the sides, another patient) against
TotalSegmentator's 117-class labels mapped to the 40 classes by mrseg's ``totalseg`` label map.
Every real scan with a reference is scored; the MR prostate scan has none.

Fat-suppressed T2: the same held-out phantoms in T2 TSE with 95 % of the fat signal suppressed
(the look of a T2-SPIR scan).

Deformed phantoms (reported under "deformed phantoms", judged by nothing yet): the same held-out
subjects in four contrasts with their anatomy deformed smoothly at random (``make_case``'s
``deformation_mm``, 8 mm), so that organs lie off the places the phantom always gives them. The
undeformed phantoms reward a model that labels by place as much as one that sees; real scans
punish it, and these phantoms measure which of the two a change bought.

Small-kidney phantoms (reported under "small-kidney phantoms"; session 44, criteria_v280): the
first held-out subjects in Dixon fat and T2 HASTE with both kidneys made smaller for the same body
(``make_case``'s ``organ_scales``, every length times 0.8 and 0.65): each kidney's Dice and
predicted-to-true volume. A model that draws a kidney at the size it always saw over-draws them
(0.18: the left kidney 1.24-1.55 times its volume), as it over-draws the real MR's (1.62 times).
``--small-kidneys-only`` scores just these (about a minute for one network).

Field-of-view versions of the real MR: the Dice of the goal organs (liver, spleen, kidneys) on the
scan as acquired and on 7 crops of it (one voxel off each of the 6 faces of its signal, two off
every in-plane face). The faces are those of the box of non-zero voxels, which nnU-Net crops to
before it predicts: a crop of an empty border column changes nothing (the scan's first x column
is empty, and the earlier definition, from the scan's own faces, scored the scan twice). At 3 mm
such a crop moves the scan against the model's 6 mm grid, which alone moves one organ's Dice by
up to 0.2 on a 20-slice scan; the mean over the 8 versions is the steadier number.

Air round the DICOM series: its mean Dice and its liver's on the scan cropped in-plane to the
body (the box of the largest connected part above -500 HU, the trunk) with 40 mm and 80 mm of
air round it, beside the scan as acquired (a 500 mm field of view, the body in its middle with
some 150 mm of air in front). The 0.18 networks found that liver only in the tight crop: the
phantom's default grid had kept the body wall near its edges.

Where each organ was over-drawn: what the voxels predicted as it are in the reference.

Where each reference organ went: for the goal organs, the gallbladder and the stomach of the real
scans (and the CTA's aorta), the predicted-to-reference volume ratio and the classes its reference
voxels were labelled.

Removed organs: the same held-out T2 HASTE phantoms with the liver, the spleen or one kidney
left out of the anatomy (its place holds fat, its label is 0); a model that sees organs labels
little there, one that labels by place labels about the organ's usual volume.

    python scripts/evaluate_demo_model.py [--model demo] [--cases 3] [--data ../shared/data] [--json out.json]

A quick look at one network of an ensemble on the real scans only (their field-of-view versions
and where each organ went included; about 15 s, against 7-11 minutes for the whole evaluation):

    python scripts/evaluate_demo_model.py --model MODEL_DIR --real-only --no-ensemble

A quick look at the held-out phantoms of one or more contrasts (named as in the evaluation, e.g.
"mr t2_tse fat-suppressed"; about 20 s a case for an ensemble):

    python scripts/evaluate_demo_model.py --model MODEL_DIR --contrast "mr t2_tse fat-suppressed"

``compare_demo_models.py`` judges only a whole evaluation and refuses a ``--real-only``,
``--small-kidneys-only`` or ``--contrast`` file.

The model card's per-class table from an evaluation already written (no model is run):

    python scripts/evaluate_demo_model.py --table-from evaluation.json [--markdown table.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

CONTRASTS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("ct", "native", {}), ("ct", "contrast", {}), ("ct", "arterial", {}), ("mr", "t1_in", {}), ("mr", "t1_opp", {}),
    ("mr", "t2_haste", {}), ("mr", "t2_tse", {}), ("mr", "dixon_water", {}), ("mr", "dixon_fat", {}),
    ("mr", "t2_tse", {"fat_suppression": 0.95}))
GOAL_ORGANS = ("liver", "spleen", "right_kidney", "left_kidney")
TRACED = (*GOAL_ORGANS, "gallbladder", "stomach")  # where their reference voxels went
HELD_OUT_SEEDS = 90_000
REMOVED = ("liver", "spleen", "right_kidney", "left_kidney")
DEFORMED_CONTRASTS = (("ct", "arterial"), ("mr", "t1_in"), ("mr", "t2_haste"), ("mr", "dixon_water"))
DEFORMED_MM = 8.0  # the SD of the deformed phantoms' displacement (see mrseg.phantom.tissues.smoothly_deformed)
SMALL_KIDNEY_SEQUENCES = ("dixon_fat", "t2_haste")
SMALL_KIDNEY_SCALES = (0.8, 0.65)  # on every length of both kidneys (make_case's organ_scales)
# what --json writes beside the per-class sets (the phantoms of each contrast, the real scans)
NOT_PER_CLASS = ("removed organ", "real MR field-of-view versions", "DICOM series air margins",
                 "where the reference went", "deformed phantoms", "small-kidney phantoms")


def phantom_set_name(modality: str, sequence: str, options: dict[str, float]) -> str:
    """The name a contrast's held-out phantoms are reported under (and ``--contrast`` takes)."""
    suffix = " fat-suppressed" if options.get("fat_suppression") else ""
    return f"phantom {modality} {sequence}{suffix}"


def main() -> None:
    from mrseg.classes import BASE
    from mrseg.demo import per_class_dice
    from mrseg.evaluation.label_maps import label_map
    from mrseg.evaluation.metrics import dice
    from mrseg.inference.segmenter import Segmenter
    from mrseg.io import read_image
    from mrseg.io.resample import resample_labels
    from mrseg.model.store import resolve_model_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--cases", type=int, default=3, help="held-out phantoms per contrast")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--markdown", type=Path, help="write the per-class table (model card) here")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="scale test-time augmentation factors (default 1.0: the model's own grid)")
    quick = parser.add_mutually_exclusive_group()  # one quick look at a time, or the table of a written one
    quick.add_argument("--real-only", action="store_true",
                       help="score the real scans only (no phantoms, no removed organs): a quick look at a network")
    quick.add_argument("--small-kidneys-only", action="store_true",
                       help="score the small-kidney phantoms only (a quick look at how a network sizes kidneys)")
    parser.add_argument("--no-postprocessing", dest="postprocessing", action="store_false",
                        help="score the labels before the model folder's postprocessing.json steps")
    parser.add_argument("--no-ensemble", dest="ensemble", action="store_false",
                        help="run the model folder's own network alone, without the members its "
                             "mrseg_ensemble.json names")
    quick.add_argument("--contrast", action="append", metavar="NAME",
                       choices=[phantom_set_name(*contrast).removeprefix("phantom ") for contrast in CONTRASTS],
                       help="score the held-out phantoms of this contrast only (repeatable), e.g. "
                            "'mr t2_tse fat-suppressed'")
    quick.add_argument("--table-from", type=Path, metavar="JSON",
                       help="print (or write to --markdown) the per-class table of an evaluation's --json file; "
                            "no model is run")
    args = parser.parse_args()
    if args.table_from:
        try:
            table = markdown_table(per_class_sets(args.table_from))
        except ValueError as error:
            parser.exit(2, f"error: {args.table_from}: {error}; make one with scripts/evaluate_demo_model.py "
                           "--json FILE\n")
        if args.markdown:
            args.markdown.write_text(table)
        else:
            print(table, end="")
        return

    # a name (demo) or a folder
    segmenter = Segmenter(resolve_model_folder(args.model), precision="fp32", scales=args.scales,
                          ensemble=args.ensemble)
    if args.postprocessing and segmenter.model.postprocessing:
        segmenter = Postprocessed(segmenter)
        print(f"postprocessing: {len(segmenter.steps)} steps of the model folder's postprocessing.json")
    results: dict[str, dict[str, float]] = {}
    deformed: dict[str, dict[str, float]] = {}
    if args.contrast:
        results = phantom_contrast_dice(segmenter, args.cases, only=args.contrast)
        report_per_class(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if args.markdown:
            args.markdown.write_text(markdown_table(results))
        return
    small_kidneys = {} if args.real_only else small_kidney_dice(segmenter, args.cases)
    if args.small_kidneys_only:
        report_small_kidneys(small_kidneys)
        if args.json:
            args.json.write_text(json.dumps({"small-kidney phantoms": small_kidneys}, indent=2))
        return
    if not args.real_only:
        results = phantom_contrast_dice(segmenter, args.cases)
        deformed = {f"{modality} {sequence}": held_out_phantom_dice(segmenter, args.cases, modality=modality,
                                                                    sequence=sequence, deformation_mm=DEFORMED_MM)
                    for modality, sequence in DEFORMED_CONTRASTS}

    # image: [(reference labels, the one class a binary mask holds or None, the reference's label map)]
    real = {"mr/example_mr_sm.nii.gz": [("labels/example_mr_sm__ref40.nii.gz", None, "base")],
            "ct/example_ct.nii.gz": [("labels/example_ct__ref40.nii.gz", None, "base")],
            "ct/thorax_cta.nii.gz": [("labels/thorax_cta__aorta_binary.nii.gz", "aorta", "base"),
                                     ("labels/thorax_cta__heart_binary_othergrid.nii.gz", "heart", "base")],
            "ct/example_ct_sm.nii.gz": [("labels/example_ct_sm__ref40.nii.gz", None, "base")],
            "dicom/example_ct_series": [("labels/example_ct_series__totalseg117.nii.gz", None, "totalseg")]}
    traced: dict[str, dict[str, dict]] = {}
    versions: dict[str, dict[str, float]] = {}
    air_versions: dict[str, dict[str, float]] = {}
    for image, references in real.items():
        if not (args.data / image).exists():
            print(f"skipped {image}: {args.data} is absent")
            continue
        scan = read_image(args.data / image)
        predicted = segmenter.run(scan).labels.array
        scores = {}
        for labels, only, source_index in references:
            read = read_image(args.data / labels)
            read = dataclasses.replace(read, array=label_map(source_index).apply(read.array, source=labels))
            reference = resample_labels(read, scan.geometry)  # same grid: unchanged
            truth = reference.array
            if only is None:
                scores.update(per_class_dice(predicted, truth))
                traced[image] = where_the_reference_went(predicted, truth, TRACED)
                if image.startswith("mr/"):
                    versions = field_of_view_versions(segmenter, scan, reference, predicted)
                if image.startswith("dicom/"):
                    air_versions = air_margin_versions(segmenter, scan, reference, predicted)
            else:  # a binary mask of one class: score that class alone
                scores[only] = float(dice(predicted == BASE.index_of(only), truth > 0))
                if only == "aorta":
                    binary = np.where(truth > 0, BASE.index_of(only), 0)
                    traced[f"{image} {only}"] = where_the_reference_went(predicted, binary, (only,))
        results[f"real {image}"] = scores

    removal = {} if args.real_only else removed_organ_volumes(segmenter, args.cases)

    report_per_class(results)
    for name, scores in deformed.items():
        print(f"\ndeformed phantom {name} ({DEFORMED_MM:g} mm): mean Dice {np.mean(list(scores.values())):.3f} "
              f"over {len(scores)} classes")
    if versions:
        print(f"\nreal MR, goal organs over {len(versions)} field-of-view versions: mean "
              f"{np.mean([v['goal mean'] for v in versions.values()]):.4f}")
        for organ in (*GOAL_ORGANS, "goal mean"):
            values = [v[organ] for v in versions.values()]
            print(f"  {organ:14s} mean {np.mean(values):.3f}  min {np.min(values):.3f}  max {np.max(values):.3f}")
    if air_versions:
        print("\nthe DICOM series cropped in-plane to the body with air round it:")
        for name, row in air_versions.items():
            print(f"  {name:22s} mean {row['mean']:.3f} over {row['classes']:.0f} classes, liver {row['liver']:.3f}")
    for image, organs in traced.items():
        print(f"\nwhere the reference went, {image}:")
        for organ, where in organs.items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in where["labelled"].items())
            holds = ", ".join(f"{k} {v:.0%}" for k, v in where["prediction holds"].items())
            print(f"  {organ:14s} {where['reference_voxels']:6d} voxels, predicted/reference volume "
                  f"{where['volume_ratio']:.2f}; labelled {shares}; the prediction holds {holds}")
    report_small_kidneys(small_kidneys)
    if removal:
        print("\nremoved organ (T2 HASTE phantoms): labelled as that organ, mL (the organ's volume when present)")
        print("  " + ", ".join(f"{k} {v['labelled_ml']:.0f} ({v['organ_ml']:.0f})" for k, v in removal.items()))
    if args.json:
        extra = dict(zip(NOT_PER_CLASS, (removal, versions, air_versions, traced, deformed, small_kidneys),
                         strict=True))
        if args.real_only:  # without the parts compare_demo_models.py reads to know a whole evaluation
            extra = {key: value for key, value in extra.items() if key not in ("removed organ", "deformed phantoms")}
        args.json.write_text(json.dumps({**results, **extra}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown_table(results))


class Postprocessed:
    """A segmenter whose labels get the model folder's postprocessing steps, as ``mrseg segment``
    gives them (:class:`mrseg.pipeline.LoadedModel` does the same)."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.steps = segmenter.model.postprocessing

    def run(self, image):
        from mrseg.postprocess import apply_postprocessing

        segmentation = self.segmenter.run(image)
        return dataclasses.replace(segmentation, labels=apply_postprocessing(segmentation.labels, self.steps))


def report_per_class(results: dict[str, dict[str, float]]) -> None:
    for name, scores in results.items():
        mean = float(np.mean(list(scores.values()))) if scores else float("nan")
        print(f"\n{name}: mean Dice {mean:.3f} over {len(scores)} classes")
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))


def per_class_sets(evaluation_json: Path) -> dict[str, dict[str, float]]:
    """The per-class Dice sets (phantoms per contrast, real scans) of an evaluation's ``--json`` file,
    in its order; ``ValueError`` naming what is wrong when the file is not one."""
    from mrseg.classes import BASE

    try:
        evaluation = json.loads(evaluation_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read it as JSON ({error.__class__.__name__})") from None
    if not isinstance(evaluation, dict):
        raise ValueError("not an evaluation of the demo model (not a JSON object)")
    sets = {key: value for key, value in evaluation.items() if key not in NOT_PER_CLASS}
    known = {c.name for c in BASE.classes}
    for key, scores in sets.items():
        if not (isinstance(scores, dict) and set(scores) <= known
                and all(isinstance(v, (int, float)) for v in scores.values())):
            raise ValueError(f"not an evaluation of the demo model ({key!r} is not class names and Dice values)")
    if not sets:
        raise ValueError("not an evaluation of the demo model (no per-class Dice in it)")
    return sets


def small_kidney_dice(segmenter, cases: int) -> dict[str, dict[str, float]]:
    """Per contrast and kidney scale: each kidney's Dice and predicted / true volume, means over the
    first ``cases`` held-out subjects; and ``mean kidney Dice`` over all of them."""
    from mrseg.classes import BASE
    from mrseg.demo import per_class_dice
    from mrseg.phantom.cases import make_case

    out: dict[str, dict[str, float]] = {}
    for sequence in SMALL_KIDNEY_SEQUENCES:
        for scale in SMALL_KIDNEY_SCALES:
            rows: dict[str, list[float]] = {}
            for i in range(cases):
                case = make_case(seed=HELD_OUT_SEEDS + i, modality="mr", sequence=sequence, fov="trunk",
                                 spacing=(3.0, 3.0, 3.0), organ_scales={"right_kidney": scale, "left_kidney": scale})
                predicted, truth = segmenter.run(case.image).labels.array, case.labels.array
                dice = per_class_dice(predicted, truth)
                for name in ("right_kidney", "left_kidney"):
                    value = BASE.index_of(name)
                    rows.setdefault(name, []).append(dice.get(name, 0.0))
                    rows.setdefault(f"{name} volume ratio", []).append(
                        float((predicted == value).sum() / max(1, (truth == value).sum())))
            out[f"mr {sequence} kidneys x{scale:g}"] = {k: float(np.mean(v)) for k, v in rows.items()}
    out["mean kidney Dice"] = {"mean": float(np.mean([row[k] for row in out.values()
                                                       for k in ("right_kidney", "left_kidney")]))}
    return out


def report_small_kidneys(small_kidneys: dict[str, dict[str, float]]) -> None:
    if not small_kidneys:
        return
    print("\nsmall-kidney phantoms: Dice (predicted / true volume)")
    for name, row in small_kidneys.items():
        if name != "mean kidney Dice":
            print(f"  {name:28s} right {row['right_kidney']:.3f} ({row['right_kidney volume ratio']:.2f}x), "
                  f"left {row['left_kidney']:.3f} ({row['left_kidney volume ratio']:.2f}x)")
    print(f"  mean kidney Dice {small_kidneys['mean kidney Dice']['mean']:.4f}")


def phantom_contrast_dice(segmenter, cases: int, only: list[str] | None = None) -> dict[str, dict[str, float]]:
    """:func:`held_out_phantom_dice` per contrast of :data:`CONTRASTS` (those named in ``only``, without
    the "phantom " of their set name, when given), under each contrast's set name."""
    results = {}
    for modality, sequence, options in CONTRASTS:
        name = phantom_set_name(modality, sequence, options)
        if only is None or name.removeprefix("phantom ") in only:
            results[name] = held_out_phantom_dice(segmenter, cases, modality=modality, sequence=sequence, **options)
    return results


def held_out_phantom_dice(segmenter, cases: int, **case_options) -> dict[str, float]:
    """Per-class Dice averaged over the first ``cases`` held-out subjects (trunk, 3 mm), each made
    by ``make_case`` with ``case_options`` (modality, sequence, and any anatomy or contrast option)."""
    from mrseg.demo import per_class_dice
    from mrseg.phantom.cases import make_case

    scores: dict[str, list[float]] = {}
    for i in range(cases):
        case = make_case(seed=HELD_OUT_SEEDS + i, fov="trunk", spacing=(3.0, 3.0, 3.0), **case_options)
        for name, value in per_class_dice(segmenter.run(case.image).labels.array, case.labels.array).items():
            scores.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in scores.items()}


def removed_organ_volumes(segmenter, cases: int) -> dict[str, dict[str, float]]:
    """Per removed organ: the volume (mL) still labelled as it on the first ``cases`` held-out T2
    HASTE subjects made without it, and its volume when present; means over the subjects."""
    from mrseg.classes import BASE
    from mrseg.phantom.cases import make_case

    held_out = [{"seed": HELD_OUT_SEEDS + i, "modality": "mr", "sequence": "t2_haste", "fov": "trunk",
                 "spacing": (3.0, 3.0, 3.0)} for i in range(cases)]
    intact_labels = [make_case(**common).labels for common in held_out]
    removal = {}
    for organ in REMOVED:
        labelled, present = [], []
        for common, intact in zip(held_out, intact_labels):
            voxel_ml = float(np.prod(intact.geometry.spacing)) / 1000.0
            predicted = segmenter.run(make_case(remove=[organ], **common).image).labels.array
            labelled.append(float((predicted == BASE.index_of(organ)).sum()) * voxel_ml)
            present.append(float((intact.array == BASE.index_of(organ)).sum()) * voxel_ml)
        removal[organ] = {"labelled_ml": float(np.mean(labelled)), "organ_ml": float(np.mean(present))}
    return removal


def field_of_view_versions(segmenter, scan, reference, predicted: np.ndarray) -> dict[str, dict[str, float]]:
    """The goal organs' Dice on the scan as acquired (``predicted``, the segmenter's labels of
    ``scan``) and on 7 crops of its signal (see the module's text)."""
    from mrseg.evaluation.metrics import bounding_box
    from mrseg.phantom.randomization import crop

    signal = bounding_box(scan.array != 0)  # (z, y, x): the box nnU-Net crops to
    assert signal is not None, "an empty scan has no signal to crop"
    out = {"as acquired": _goal_dice(predicted, reference.array)}
    cuts = {}
    for axis, name in enumerate("zyx"):
        for end, side in ((0, "low"), (1, "high")):
            cut = [0] * 6
            cut[2 * axis + end] = 1
            cuts[f"1 voxel off {name} {side}"] = tuple(cut)
    cuts["2 voxels off every in-plane face"] = (0, 0, 2, 2, 2, 2)
    for name, cut in cuts.items():
        box = tuple(slice(signal[a].start + cut[2 * a], signal[a].stop - cut[2 * a + 1]) for a in range(3))
        out[name] = _goal_dice(segmenter.run(crop(scan, box)).labels.array, crop(reference, box).array)
    return out


def air_margin_versions(segmenter, scan, reference, predicted: np.ndarray,
                        margins_mm: tuple[float, ...] = (40.0, 80.0)) -> dict[str, dict[str, float]]:
    """The mean Dice (over the reference's classes) and the liver's on the CT ``scan`` as acquired
    (``predicted``) and cropped in-plane to the body's box (its largest connected part above -500
    HU) grown by each margin (see the module's text)."""
    from scipy import ndimage

    from mrseg.evaluation.metrics import bounding_box
    from mrseg.phantom.randomization import crop

    parts, _ = ndimage.label(scan.array > -500)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0  # the air
    body = bounding_box(parts == int(np.argmax(sizes)))  # (z, y, x)
    assert body is not None, "a scan without a body has no box to crop to"
    spacing_zyx = np.asarray(scan.geometry.spacing[::-1])
    out = {"as acquired": _mean_and_liver(predicted, reference.array)}
    for margin in margins_mm:
        grow = np.ceil(margin / spacing_zyx).astype(int)
        box = (slice(None), *(slice(max(body[a].start - int(grow[a]), 0), body[a].stop + int(grow[a])) for a in (1, 2)))
        out[f"body + {margin:g} mm of air"] = _mean_and_liver(segmenter.run(crop(scan, box)).labels.array,
                                                           crop(reference, box).array)
    return out


def _mean_and_liver(labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    from mrseg.demo import per_class_dice

    scores = per_class_dice(labels, reference)
    return {"mean": float(np.mean(list(scores.values()))), "classes": float(len(scores)),
            "liver": float(scores.get("liver", 0.0))}


def _goal_dice(labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    from mrseg.demo import per_class_dice

    scores = per_class_dice(labels, reference)
    row = {organ: float(scores.get(organ, 0.0)) for organ in GOAL_ORGANS}
    row["goal mean"] = float(np.mean([row[organ] for organ in GOAL_ORGANS]))
    return row


def where_the_reference_went(predicted: np.ndarray, truth: np.ndarray, organs: tuple[str, ...]) -> dict[str, dict]:
    """For each organ present in ``truth``: its voxel count, the predicted-to-reference volume ratio,
    the share of its reference voxels labelled as each class, and what the voxels predicted as it
    are in the reference (both 2 % or more: where it was missed, and where it was over-drawn)."""
    from mrseg.classes import BASE
    from mrseg.evaluation import labelled_as

    out = {}
    for organ in organs:
        index = BASE.index_of(organ)
        reference = truth == index
        count = int(reference.sum())
        if count:
            out[organ] = {"reference_voxels": count, "volume_ratio": float((predicted == index).sum() / count),
                          "labelled": _named(labelled_as(predicted, reference)),
                          "prediction holds": _named(labelled_as(truth, predicted == index))}
    return out


def _named(shares: dict[int, float]) -> dict[str, float]:
    """Label value → share, as class name → share, for the shares of 2 % or more."""
    from mrseg.classes import BASE

    return {BASE.name_of(k) if k else "background": v for k, v in shares.items() if v >= 0.02}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per class, one column per test set; mean row last; '–' where a class is absent."""
    from mrseg.classes import BASE

    sets = list(results)
    lines = ["| class | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for c in BASE.classes:
        cells = [f"{results[s][c.name]:.2f}" if c.name in results[s] else "–" for s in sets]
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    means = [f"**{np.mean(list(results[s].values())):.2f}** ({len(results[s])})" if results[s] else "–" for s in sets]
    lines.append("| mean (classes scored) | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
