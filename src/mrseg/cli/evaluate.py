"""``mrseg evaluate``: Dice and surface distances per organ against reference label maps, with a report."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


def run(args: argparse.Namespace) -> int:
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
