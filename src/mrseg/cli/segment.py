"""``mrseg segment``: parse the options, check inputs and output folder, load the models, run the
case pipeline (:mod:`mrseg.pipeline`) and print what happened."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from mrseg.cli._options import add_output_options, add_run_options, model_spec

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "segment",
        help="segment images with an nnU-Net v2 model",
        description=(
            "Segment image files (NIfTI, MHA, NRRD), DICOM series folders, folders of images or "
            "glob patterns. Each case writes OUTDIR/<name>_<postfix>.nii.gz, a uint8 label map on the input's "
            "exact grid, its other outputs, and last a case record <name>_<postfix>_record.json. Outputs appear "
            "together or not at all; rerunning the command after a crash finishes only what is missing."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--model", metavar="MODEL", nargs="+",
                   help="nnU-Net v2 model folder, or a model name: base, body_comp (installed on first use), demo, "
                        "or one imported with 'mrseg weights import' (default: $MRSEG_WEIGHTS_PATH, else base). "
                        "Several models each get their own output postfix")
    p.add_argument("--combine", action="store_true",
                   help="with several models, also write OUTDIR/<name>_combined.nii.gz: the first model's labels, "
                        "then each next model's shifted past the previous ones (base 1-40, body_comp 41-50); "
                        "table in OUTDIR/combined_classes.json")
    add_run_options(p)
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    add_output_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs, whatever made them (default: a case whose record shows it done "
                        "with the same settings is skipped, and only missing outputs are made)")
    p.add_argument("--series", metavar="UID", help="SeriesInstanceUID when a DICOM folder holds several series")
    p.add_argument("--channel", type=int, metavar="N", help="volume to use from 4-D or multi-component images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Check everything cheap first (options, output folder, inputs), then load, then work."""
    from mrseg.errors import MrsegError
    from mrseg.io.files import check_output_folder
    from mrseg.pipeline import OutputSpec, collect_cases, run_batch
    from mrseg.report.records import now, run_record, write_run_record

    names = args.model or [None]
    try:
        postfixes = _postfixes(names, args)
        out = check_output_folder(args.out)
        found = collect_cases(args.inputs, series=args.series, channel=args.channel, postfixes=postfixes)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    for path, reason in found.skipped:
        log.info("left out %s: %s (name it explicitly to segment it)", path, reason)
    if found.skipped:
        print(f"left out {len(found.skipped)} file(s) of the input folders that are label maps or earlier outputs "
              f"(-v lists them)", file=sys.stderr)

    started = now()
    try:
        models = [_load(name, args) for name in names]
        specs = []
        for (model, _), postfix in zip(models, postfixes):
            classes = _classes(args.classes, model.classes)
            specs.append(OutputSpec.with_classes(
                out, classes, postfix=postfix, output_type=args.output_type, statistics=args.statistics,
                preview=args.preview, split_classes=args.split_classes, overwrite=args.overwrite))
        combine = OutputSpec(out, postfix="combined", output_type="nifti", overwrite=args.overwrite) \
            if args.combine else None
    except MrsegError as err:
        log.error("%s", err)
        return 2
    for model, _ in models:
        members = "".join(f" + member {m.folder.name} ({m.configuration.name})" for m in model.segmenter.model.members)
        log.info("model %s, folds %s%s, step %.2f, device %s, precision %s, %d case(s)",
                 model.segmenter.model.folder, ",".join(model.segmenter.model.folds), members, model.segmenter.step,
                 model.segmenter.device, model.segmenter.precision, len(found.cases))

    progress = _Progress(out, enabled=not args.no_progress and not args.quiet)
    clock = time.perf_counter()
    try:
        result = run_batch(list(found.cases), [(m, s) for (m, _), s in zip(models, specs)], combine=combine,
                           on_stage=progress.stage, on_tile=progress.tile,
                           on_record=lambda record: progress.done(record, quiet=args.quiet))
    finally:
        progress.close()
    try:
        for (model, name), spec, records in zip(models, specs, result.records):
            report = run_record(records, model=model.describe(), settings=_settings(args, model, spec),
                                started=started, load_seconds=model.load_seconds)
            log.info("run record: %s", write_run_record(report, out, postfix=spec.postfix))
    except MrsegError as err:
        log.error("%s", err)
        return 2
    records = result.all_records()
    counts = {s: sum(r.status == s for r in records) for s in ("segmented", "completed", "skipped", "failed")}
    summary = (f"{len(found.cases)} case(s): {counts['segmented']} segmented, {counts['completed']} completed, "
               f"{counts['skipped']} skipped, {counts['failed']} failed, {time.perf_counter() - clock:.1f} s")
    if counts["failed"]:
        log.error("%s", summary)
    elif not args.quiet:
        print(summary)
    return 1 if counts["failed"] else 0


def _postfixes(names: list[str | None], args: argparse.Namespace) -> list[str]:
    from mrseg.errors import InputError
    from mrseg.pipeline.outputs import default_postfix

    if len(names) > 1 and args.postfix is not None:
        raise InputError("--postfix names the output of one model; with several models each gets its own "
                         f"({', '.join(default_postfix(m) for m in names)})")
    postfixes = [args.postfix or default_postfix(m) for m in names]
    if len(set(postfixes)) < len(postfixes):
        raise InputError(f"models {', '.join(str(m) for m in names)} would write the same output names "
                         f"(*_{postfixes[0]}); run them one at a time with --postfix")
    if args.combine and len(names) < 2:
        raise InputError("--combine needs two or more models, e.g. --model base body_comp")
    return postfixes


def _load(name: str | None, args: argparse.Namespace) -> tuple[Any, str | None]:
    """Resolve a model name (installing a published model on first use) and load it once."""
    from mrseg.model.store import resolve_model_folder
    from mrseg.pipeline import load

    folder = resolve_model_folder(name, install_missing=True)
    return load(model_spec(folder, name or folder.name, args, threads=args.threads)), name


def _classes(requested: list[str] | None, foreground: dict[str, int]) -> dict[str, int] | None:
    from mrseg.classes import resolve_classes

    return resolve_classes(requested, foreground) if requested else None


def _settings(args: argparse.Namespace, model: Any, spec: Any) -> dict[str, Any]:
    return {"device": str(model.segmenter.device), "precision": model.segmenter.precision,
            "step": model.segmenter.step, "tta": args.tta, "threads": args.threads,
            "orientation": model.segmenter.orientation, "low_memory": args.low_memory,
            "ensemble": args.ensemble,
            "classes": [name for name, _ in spec.classes] if spec.classes else None,
            "statistics": args.statistics, "split_classes": args.split_classes, "preview": args.preview,
            "postfix": spec.postfix, "output_type": args.output_type, "overwrite": args.overwrite}


class _Progress:
    """One progress line per case: its stage, then tiles while the network runs."""

    def __init__(self, out: Path, *, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.bar: Any = None
        self.name = ""

    def stage(self, case: Any, stage: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or case.name != self.name:
            self.close()
            self.name = case.name
            self.bar = tqdm(total=None, leave=False, desc=f"{case.name}: {stage}", bar_format="{desc} [{elapsed}]",
                            file=sys.stderr)
        else:
            self.bar.set_description_str(f"{case.name}: {stage}")

    def tile(self, done: int, total: int) -> None:
        if self.bar is None:
            return
        if self.bar.total != total:
            self.bar.total = total
            self.bar.bar_format = "{desc} {bar} {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining}]"
        self.bar.update(1)
        if done >= total:
            self.bar.set_description_str(f"{self.name}: export")
            self.bar.bar_format = "{desc} [{elapsed}]"
            self.bar.refresh()

    def done(self, record: Any, *, quiet: bool) -> None:
        self.close()
        if record.status == "failed":
            log.error("failed     %s", record.error)
            return
        if quiet:
            return
        stages = ", ".join(f"{k} {v:.1f}" for k, v in record.timings.items())
        output = self.out / next(iter(record.outputs.values())).path if record.outputs else "nothing"
        detail = f" ({sum(record.timings.values()):.1f} s: {stages})" if record.timings else ""
        if record.status == "skipped":
            detail = f" ({record.error})" if record.error else " (done before, same settings)"
        print(f"{record.status:<10} {record.input} -> {output}{detail}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
