"""``mrseg cohort run|status|retry|qc``: parse the options, call :mod:`mrseg.cohort`, print."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mrseg.cli._options import add_output_options, add_run_options, model_spec

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cohort", help="segment a cohort on Dask workers: resumable, with quality control",
        description=("Run many cases on Dask workers (a local cluster, a running scheduler or Slurm), resumable "
                     "after any crash, with a manifest (OUTDIR/cohort_manifest.csv) and quality control "
                     "(OUTDIR/cohort_qc.csv, .md, _volumes.png). Needs pip install 'mrseg[cohort]'."))
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run (or continue, or extend) a cohort",
                             description="Segment every input not done yet; rerun the same command after a crash, "
                                         "or with more inputs, to continue.")
    run.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns, DICOM folders")
    run.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="cohort folder (created if missing)")
    run.add_argument("--model", metavar="MODEL",
                     help="model folder or name (default: $MRSEG_WEIGHTS_PATH, else base)")
    add_run_options(run)
    add_output_options(run, statistics=False)
    run.add_argument("--retries", type=int, default=2, metavar="N",
                     help="tries again a case whose worker died or ran out of memory, up to N times (default 2); "
                          "bad inputs are not retried")
    _add_cluster_options(run)

    retry = actions.add_parser("retry", help="run the failed cases again (after fixing their inputs)")
    retry.add_argument("out", metavar="OUTDIR", help="cohort folder")
    _add_cluster_options(retry)

    status = actions.add_parser("status", help="counts by state, failures with reasons, throughput, ETA")
    status.add_argument("out", metavar="OUTDIR", help="cohort folder")

    qc = actions.add_parser("qc", help="(re)build the quality-control tables, report and plot")
    qc.add_argument("out", metavar="OUTDIR", help="cohort folder")


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: one per core, at most one per 4 GB of memory)")
    p.add_argument("--threads-per-worker", type=int, metavar="T",
                   help="torch threads per worker (default: the cores shared out between the workers)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://host:8786)")
    where.add_argument("--slurm", action="store_true", help="start the workers as Slurm jobs (dask-jobqueue)")
    p.add_argument("--slurm-option", action="append", metavar="K=V",
                   help="Slurm job setting: queue, account, memory, walltime, gpus (per worker), job_extra, ... "
                        "(repeatable)")
    p.add_argument("--no-dashboard", action="store_true",
                   help="start no Dask dashboard (default: one on a free port of 127.0.0.1, its address printed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError

    try:
        if args.action == "status":
            return _status(Path(args.out))
        if args.action == "qc":
            return _qc(Path(args.out))
        return _run(args)
    except MrsegError as err:
        log.error("%s", err)
        return 2


def _run(args: argparse.Namespace) -> int:
    from mrseg.cohort import ClusterSpec, parse_slurm_options, read_plan, run_cohort
    from mrseg.errors import InputError

    cluster = ClusterSpec(args.workers, args.threads_per_worker, args.scheduler, args.slurm,
                          parse_slurm_options(args.slurm_option), dashboard=not args.no_dashboard)
    out = Path(args.out)
    if args.action == "retry":
        plan = read_plan(out)
        if plan is None:
            raise InputError(f"{out}: no cohort here (no cohort.json); start one with mrseg cohort run")
        cases: tuple[Any, ...] = ()
    else:
        plan, cases = _plan_and_cases(args, out)
    progress = _Progress(enabled=not args.no_progress and not args.quiet)
    try:
        result = run_cohort(out, plan, cluster, cases=cases, retry_failed=args.action == "retry",
                            on_start=progress.start, on_result=progress.result)
    finally:
        progress.close()
    for line in result.summary.lines():
        print(line, file=sys.stderr if result.summary.counts["failed"] else sys.stdout)
    print(f"manifest: {result.manifest.path} ({result.submitted} case(s) run, {result.seconds:.1f} s)")
    _qc(out)
    return 1 if result.summary.counts["failed"] else 0


def _plan_and_cases(args: argparse.Namespace, out: Path) -> tuple[Any, tuple[Any, ...]]:
    from mrseg.classes import resolve_classes
    from mrseg.cohort import CohortPlan
    from mrseg.io.files import check_output_folder
    from mrseg.model.plans import read_dataset
    from mrseg.model.store import resolve_model_folder
    from mrseg.pipeline import OutputSpec, collect_cases
    from mrseg.pipeline.outputs import default_postfix

    check_output_folder(out)
    postfix = args.postfix or default_postfix(args.model)
    found = collect_cases(args.inputs, postfixes=(postfix,))
    folder = resolve_model_folder(args.model, install_missing=True)
    classes = None
    if args.classes:
        classes = resolve_classes(args.classes, read_dataset(folder / "dataset.json").foreground)
    outputs = OutputSpec.with_classes(out, classes, postfix=postfix, output_type=args.output_type, statistics=True,
                                      preview=args.preview, split_classes=args.split_classes)
    model = model_spec(folder.resolve(), args.model or folder.name, args, threads=None)
    return CohortPlan(model, outputs, args.retries), found.cases


def _status(out: Path) -> int:
    from mrseg.cohort import AttemptLog, Manifest, read_plan, summarize
    from mrseg.errors import InputError

    if read_plan(out) is None:
        raise InputError(f"{out}: no cohort here (no cohort.json); start one with mrseg cohort run")
    attempts = AttemptLog(out)
    attempts.update()
    manifest = Manifest.read(out)
    for line in summarize(manifest, attempts).lines():
        print(line)
    return 0


def _qc(out: Path) -> int:
    import time

    from mrseg.cohort.qc import quality_control

    clock = time.perf_counter()
    qc, paths = quality_control(out)
    counts = ", ".join(f"{n} {kind}" for kind, n in qc.counts().items() if n)
    flagged = sum(bool(c.flags) for c in qc.cases)
    print(f"quality control: {len(qc.cases)} case(s) checked, {flagged} flagged" + (f" ({counts})" if counts else "")
          + f", {time.perf_counter() - clock:.1f} s")
    for path in paths:
        print(f"  {path}")
    return 0


class _Progress:
    """A progress bar over the submitted cases, with throughput and ETA (tqdm's rate and remaining)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.failed = 0

    def start(self, client: Any, submitted: int) -> None:
        from mrseg.cohort.cluster import dashboard_link

        workers = len(client.scheduler_info().get("workers", {}))
        link = dashboard_link(client)
        print(f"{submitted} case(s) to run on {workers} worker(s)" + (f"; dashboard: {link}" if link else ""),
              file=sys.stderr)
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=submitted, unit="case", file=sys.stderr, dynamic_ncols=True)

    def result(self, row: Any) -> None:
        if row.status == "failed":
            self.failed += 1
            log.error("failed     %s: %s", row.case, row.error)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
