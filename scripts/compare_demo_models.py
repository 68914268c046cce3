"""Compare demo-model candidates with the bundled weights by the adoption criteria of issue 20.

Reads the ``--json`` files of ``scripts/evaluate_demo_model.py``: the first is the reference
(the bundled weights' evaluation), the others are candidates, each given as ``NAME=FILE``.
Prints a Markdown table of what the model card reports (phantom means and classes found per
contrast, the adrenals, the deformed phantoms' range of means where every run has them (reported
only), the real MR's goal organs over its field-of-view versions, example_ct, the CTA's aorta
and heart, the removed liver) and, per candidate, the four criteria every
candidate since v30 was judged by, written down before each run:

1. every phantom contrast's mean Dice at least the reference's minus ``--phantom-tolerance``
   (0.005), with no fewer classes found (Dice > 0) than the reference finds there;
2. the CTA's aorta at least ``--cta-aorta`` (0.45) and heart at least ``--cta-heart`` (0.80);
3. the real MR's goal mean (liver, spleen, kidneys over the field-of-view versions) at least the
   reference's minus ``--goal-tolerance`` (0: as written), and no goal organ more than
   ``--organ-drop`` (0.05) below the reference's;
4. example_ct's mean at least ``--example-ct`` (0.668) and a removed liver labelled less than
   ``--removed-liver-ml`` (1,500 mL).

``--goal-tolerance`` exists for a bar set from measured seed scatter (see the "Seed scatter"
section of docs/demo_model_experiments.md); set it in writing before a candidate is judged, not after.

``--seed-pair A,B`` (repeatable; names of runs given, ``reference`` included) names two runs of
one recipe that differ only in the training seed. With two or more pairs it prints the per-run
scatter s = sqrt(mean over pairs of d² / 2) of the real MR's goal mean and of each goal organ
(d: the difference within a pair), and judges every later pair's recipe against the first pair's
by criterion 3 read by seeds: the two-run goal mean at least the first pair's minus 2 s, and no
goal organ's two-run mean more than 2 s of that organ below the first pair's (the difference of
two two-run means has SD s).

    python scripts/compare_demo_models.py /work/eval_v011.json v39=/work/eval_v39.json v40=/work/eval_v40.json
    python scripts/compare_demo_models.py /work/eval_v011.json v45=... v39=... v46=... v40=... v43=... \
        --seed-pair reference,v45 --seed-pair v39,v46 --seed-pair v40,v43

Exit status 0 when every candidate was read and judged (adopted or not), 2 on an unreadable file
or a --seed-pair that names runs not given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

GOAL_ORGANS = ("liver", "spleen", "right_kidney", "left_kidney")
ADRENALS = ("right_adrenal_gland", "left_adrenal_gland")
FAT_SUPPRESSED = "phantom mr t2_tse fat-suppressed"
REAL_MR_VERSIONS = "real MR field-of-view versions"
EXAMPLE_CT = "real ct/example_ct.nii.gz"
CTA = "real ct/thorax_cta.nii.gz"
REMOVED = "removed organ"
DEFORMED = "deformed phantoms"

Evaluation = dict[str, Any]


@dataclass(frozen=True)
class Thresholds:
    phantom_tolerance: float = 0.005
    cta_aorta: float = 0.45
    cta_heart: float = 0.80
    goal_tolerance: float = 0.0
    organ_drop: float = 0.05
    example_ct: float = 0.668
    removed_liver_ml: float = 1500.0


@dataclass(frozen=True)
class Criterion:
    number: int
    passed: bool
    detail: str


def phantom_contrasts(evaluation: Evaluation) -> list[str]:
    """The held-out phantom sets the criteria read (fat-suppressed T2 is reported, not judged)."""
    return [key for key in evaluation if key.startswith("phantom ") and key != FAT_SUPPRESSED]


def phantom_mean(evaluation: Evaluation, contrast: str) -> float:
    return mean(evaluation[contrast].values())


def classes_found(evaluation: Evaluation, contrast: str) -> int:
    return sum(dice > 0 for dice in evaluation[contrast].values())


def goal_organs(evaluation: Evaluation) -> dict[str, float]:
    """Each goal organ's Dice on the real MR, averaged over its field-of-view versions."""
    versions = evaluation[REAL_MR_VERSIONS].values()
    return {organ: mean(version[organ] for version in versions) for organ in GOAL_ORGANS}


def goal_mean(evaluation: Evaluation) -> float:
    return mean(goal_organs(evaluation).values())


def example_ct_mean(evaluation: Evaluation) -> float:
    return mean(evaluation[EXAMPLE_CT].values())


def judge(reference: Evaluation, candidate: Evaluation, limits: Thresholds) -> list[Criterion]:
    """The four adoption criteria, each with the numbers it was decided on."""
    falls = []
    for contrast in phantom_contrasts(reference):
        short = contrast.removeprefix("phantom ")
        if phantom_mean(candidate, contrast) < phantom_mean(reference, contrast) - limits.phantom_tolerance:
            falls.append(f"{short} {phantom_mean(candidate, contrast):.3f} < {phantom_mean(reference, contrast):.3f}")
        if classes_found(candidate, contrast) < classes_found(reference, contrast):
            falls.append(f"{short} {classes_found(candidate, contrast)} classes < {classes_found(reference, contrast)}")
    found = sorted({classes_found(candidate, c) for c in phantom_contrasts(reference)})
    span = str(found[0]) if len(found) == 1 else f"{found[0]}–{found[-1]}"
    kept = f"every contrast kept, {span} classes found"
    first = Criterion(1, not falls, "; ".join(falls) if falls else kept)

    aorta, heart = candidate[CTA]["aorta"], candidate[CTA]["heart"]
    second = Criterion(2, aorta >= limits.cta_aorta and heart >= limits.cta_heart,
                       f"aorta {aorta:.3f} (≥ {limits.cta_aorta}), heart {heart:.4f} (≥ {limits.cta_heart})")

    bar = goal_mean(reference) - limits.goal_tolerance
    ours, theirs = goal_organs(candidate), goal_organs(reference)
    dropped = [f"{organ} {ours[organ] - theirs[organ]:+.3f}" for organ in GOAL_ORGANS
               if ours[organ] < theirs[organ] - limits.organ_drop]
    third = Criterion(3, goal_mean(candidate) >= bar and not dropped,
                      f"goal mean {goal_mean(candidate):.4f} (≥ {bar:.4f})"
                      + (f"; down more than {limits.organ_drop}: {', '.join(dropped)}" if dropped else ""))

    ct, removed = example_ct_mean(candidate), candidate[REMOVED]["liver"]["labelled_ml"]
    fourth = Criterion(4, ct >= limits.example_ct and removed < limits.removed_liver_ml,
                       f"example_ct {ct:.3f} (≥ {limits.example_ct}), removed liver {removed:.0f} mL "
                       f"(< {limits.removed_liver_ml:.0f})")
    return [first, second, third, fourth]


def table(runs: list[tuple[str, Evaluation]]) -> list[str]:
    """The model card's comparison table, one column per run."""
    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(evaluation) for _, evaluation in runs) + " |"

    lines = ["| | " + " | ".join(name for name, _ in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    reference = runs[0][1]
    reported = [*phantom_contrasts(reference)] + ([FAT_SUPPRESSED] if all(FAT_SUPPRESSED in e for _, e in runs) else [])
    for contrast in reported:
        lines.append(row(contrast.removeprefix("phantom "),
                         lambda e, c=contrast: f"{phantom_mean(e, c):.3f} ({classes_found(e, c)})"))
    for adrenal in ADRENALS:
        lines.append(row(f"{adrenal.replace('_', ' ')}, range over contrasts", lambda e, a=adrenal: (
            f"{min(e[c][a] for c in phantom_contrasts(reference)):.2f}–"
            f"{max(e[c][a] for c in phantom_contrasts(reference)):.2f}")))
    if all(e.get(DEFORMED) for _, e in runs):  # reported, judged by no criterion
        lines.append(row(f"deformed phantoms ({len(reference[DEFORMED])} contrasts), range of means",
                         lambda e: "–".join(f"{f(mean(s.values()) for s in e[DEFORMED].values()):.3f}"
                                            for f in (min, max))))
    lines.append(row("real MR goal mean", lambda e: f"{goal_mean(e):.4f}"))
    lines.append(row("liver / spleen / R kidney / L kidney",
                     lambda e: " / ".join(f"{dice:.3f}" for dice in goal_organs(e).values())))
    lines.append(row("example_ct", lambda e: f"{example_ct_mean(e):.3f}"))
    lines.append(row("CTA aorta / heart", lambda e: f"{e[CTA]['aorta']:.3f} / {e[CTA]['heart']:.4f}"))
    lines.append(row("removed liver labelled", lambda e: f"{e[REMOVED]['liver']['labelled_ml']:.0f} mL"))
    return lines


def goal_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The real MR's goal mean and each goal organ: what seed scatter is measured on."""
    return {"goal mean": goal_mean(evaluation), **goal_organs(evaluation)}


def seed_scatter(pairs: list[tuple[Evaluation, Evaluation]]) -> dict[str, float]:
    """Per-run scatter of each goal metric from pairs of runs that differ only in the seed."""
    metrics = [(goal_metrics(a), goal_metrics(b)) for a, b in pairs]
    return {key: mean((a[key] - b[key]) ** 2 / 2 for a, b in metrics) ** 0.5 for key in metrics[0][0]}


def two_run_mean(pair: tuple[Evaluation, Evaluation]) -> dict[str, float]:
    """Each goal metric averaged over the two runs of a seed pair."""
    a, b = (goal_metrics(run) for run in pair)
    return {key: (a[key] + b[key]) / 2 for key in a}


def judge_by_seeds(reference: tuple[Evaluation, Evaluation], candidate: tuple[Evaluation, Evaluation],
                   scatter: dict[str, float]) -> Criterion:
    """Criterion 3 on two-run means, with the bars 2 s from ``seed_scatter``."""
    ours, theirs = two_run_mean(candidate), two_run_mean(reference)
    bar = theirs["goal mean"] - 2 * scatter["goal mean"]
    dropped = [f"{organ} {ours[organ] - theirs[organ]:+.3f} (2 s = {2 * scatter[organ]:.3f})"
               for organ in GOAL_ORGANS if ours[organ] < theirs[organ] - 2 * scatter[organ]]
    return Criterion(3, ours["goal mean"] >= bar and not dropped,
                     f"two-run goal mean {ours['goal mean']:.4f} (≥ {theirs['goal mean']:.4f} − 2 s = {bar:.4f})"
                     + (f"; down more than 2 s: {', '.join(dropped)}" if dropped else ""))


def scatter_report(runs: dict[str, Evaluation], pairs: list[tuple[str, str]]) -> list[str]:
    """The seed pairs' goal metrics, the scatter, and each later pair judged against the first."""
    keys = list(goal_metrics(runs[pairs[0][0]]))
    lines = ["| seed pair | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for a, b in pairs:
        both, one, other = two_run_mean((runs[a], runs[b])), goal_metrics(runs[a]), goal_metrics(runs[b])
        lines.append(f"| {a}, {b}: mean (d) | " + " | ".join(
            f"{both[k]:.4f} ({one[k] - other[k]:+.4f})" for k in keys) + " |")
    scatter = seed_scatter([(runs[a], runs[b]) for a, b in pairs])
    lines.append("| per-run scatter s (2 s) | " + " | ".join(
        f"{scatter[k]:.4f} ({2 * scatter[k]:.4f})" for k in keys) + " |")
    first = (runs[pairs[0][0]], runs[pairs[0][1]])
    for a, b in pairs[1:]:
        criterion = judge_by_seeds(first, (runs[a], runs[b]), scatter)
        lines.append(f"\n{a},{b} against {','.join(pairs[0])} by seeds: "
                     f"3. {'pass' if criterion.passed else 'FAIL'}: {criterion.detail}")
    return lines


class NotAnEvaluation(Exception):
    """A file given is not what ``evaluate_demo_model.py --json`` writes."""


def read_evaluation(path: Path) -> Evaluation:
    fix = "make one with scripts/evaluate_demo_model.py --json FILE"
    try:
        evaluation = json.loads(path.read_text())
    except OSError as error:
        raise NotAnEvaluation(f"{path}: cannot be read ({error.strerror}); {fix}") from None
    except ValueError:
        raise NotAnEvaluation(f"{path}: not JSON; {fix}") from None
    missing = [key for key in (REAL_MR_VERSIONS, EXAMPLE_CT, CTA, REMOVED) if key not in evaluation]
    if not isinstance(evaluation, dict) or missing or not phantom_contrasts(evaluation):
        what = f"no {missing[0]!r}" if isinstance(evaluation, dict) and missing else "no held-out phantom results"
        raise NotAnEvaluation(f"{path}: not an evaluation of the demo model ({what}); {fix}")
    return evaluation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="evaluation of the bundled weights")
    parser.add_argument("candidates", nargs="+", metavar="NAME=FILE", help="a candidate's evaluation")
    defaults = Thresholds()
    for name in Thresholds.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--seed-pair", action="append", default=[], metavar="A,B",
                        help="two runs (names given, or 'reference') of one recipe that differ only in the seed")
    args = parser.parse_args(argv)
    limits = Thresholds(**{name: getattr(args, name) for name in Thresholds.__dataclass_fields__})
    named = [given.partition("=") for given in args.candidates]
    for (name, separator, file), given in zip(named, args.candidates):
        if not separator or not name or not file:
            parser.error(f"{given!r}: give a candidate as NAME=FILE")
    try:
        runs = [("reference", read_evaluation(args.reference))]
        runs += [(name, read_evaluation(Path(file))) for name, _, file in named]
        for name, evaluation in runs[1:]:
            lacking = [c for c in phantom_contrasts(runs[0][1]) if c not in evaluation]
            if lacking:
                raise NotAnEvaluation(f"{name}: no {lacking[0]!r} results, which the reference has; evaluate both "
                                      f"with the same scripts/evaluate_demo_model.py")
    except NotAnEvaluation as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pairs = [tuple(given.split(",")) for given in args.seed_pair]
    for given, pair in zip(args.seed_pair, pairs):
        unknown = [name for name in pair if name not in dict(runs)]
        if len(pair) != 2 or unknown or pair[0] == pair[1]:
            parser.error(f"--seed-pair {given!r}: give two different runs named above as A,B"
                         + (f" ({unknown[0]!r} is not one)" if unknown else ""))
    if len(pairs) == 1:
        parser.error("--seed-pair: give at least two pairs (the reference recipe's and a candidate's)")
    print("\n".join(table(runs)))
    for name, evaluation in runs[1:]:
        criteria = judge(runs[0][1], evaluation, limits)
        verdict = "adopt" if all(c.passed for c in criteria) else (
            "not adopted (fails " + ", ".join(str(c.number) for c in criteria if not c.passed) + ")")
        print(f"\n{name}: {verdict}")
        for criterion in criteria:
            print(f"  {criterion.number}. {'pass' if criterion.passed else 'FAIL'}: {criterion.detail}")
    if pairs:
        print("\nSeed scatter of the real MR's goal metrics\n")
        print("\n".join(scatter_report(dict(runs), pairs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
