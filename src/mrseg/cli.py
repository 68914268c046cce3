"""Command-line interface: ``mrseg segment ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from mrseg import __version__

log = logging.getLogger("mrseg")


def _segment_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "segment",
        help="segment images with an nnU-Net v2 model",
        description=(
            "Segment image files (NIfTI, MHA, NRRD), DICOM series folders, folders of images or "
            "glob patterns. The model is loaded once for the whole batch. Each case writes "
            "OUTDIR/<name>_<postfix>.nii.gz, a uint8 label map on the input's exact grid."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--model", metavar="DIR", help="nnU-Net v2 model folder (default: $MRSEG_WEIGHTS_PATH)")
    p.add_argument("--folds", nargs="+", metavar="K", help="folds to ensemble (default: all in the model folder)")
    p.add_argument("--fast", action="store_true", help="fold 0 and step 0.8, as the published tool's --fast")
    p.add_argument("--step", type=float, metavar="S", help="sliding-window step, fraction of the patch (default 0.5)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                   help="mirroring test-time augmentation, where the checkpoint allows it (default: off)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--postfix", default="seg", help="output name postfix (default: seg)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--series", metavar="UID", help="SeriesInstanceUID when a DICOM folder holds several series")
    p.add_argument("--channel", type=int, metavar="N", help="volume to use from 4-D or multi-component images")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="checkpoint_final.pth (default) or checkpoint_best.pth")
    p.add_argument("--orientation", default="LPS",
                   help="axis orientation the network runs in; 'none' keeps the input's axes (default: LPS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrseg",
        description="Segment 40 anatomical structures in MRI and CT with nnU-Net v2 models.",
    )
    parser.add_argument("--version", action="version", version=f"mrseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _segment_parser(sub)
    return parser


def _run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mrseg.batch import CaseResult, collect_cases, run_batch
    from mrseg.errors import MrsegError
    from mrseg.inference.segmenter import Segmenter
    from mrseg.model.loader import resolve_model_folder

    folds = args.folds if args.folds is not None else (["0"] if args.fast else None)
    step = args.step if args.step is not None else (0.8 if args.fast else 0.5)
    orientation = None if str(args.orientation).lower() == "none" else args.orientation
    cases = collect_cases(args.inputs)
    try:
        segmenter = Segmenter(
            resolve_model_folder(args.model),
            folds=folds,
            checkpoint_name=f"checkpoint_{args.checkpoint}.pth",
            device=args.device,
            step=step,
            tta=args.tta,
            threads=args.threads,
            orientation=orientation,
        )
    except MrsegError as err:
        log.error("%s", err)
        return 2
    log.info(
        "model %s, folds %s, step %.2f, device %s, %d case(s)",
        segmenter.model.folder, ",".join(segmenter.model.folds), step, segmenter.device, len(cases),
    )

    bar: tqdm | None = None  # type: ignore[type-arg]
    show = not args.no_progress and not args.quiet

    def start(case: object) -> None:
        nonlocal bar
        if show:
            bar = tqdm(total=None, desc=getattr(case, "name", "case"), unit="tile", leave=False)

    def tile(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(1)

    def end(result: CaseResult) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        if result.status == "ok":
            log.info("ok      %s -> %s (%.1f s)", result.case.path, result.output, result.seconds)
        elif result.status == "skipped":
            log.warning("skipped %s", result.error)
        else:
            log.error("failed  %s", result.error)

    results = run_batch(
        segmenter, cases, args.out, postfix=args.postfix, overwrite=args.overwrite,
        series=args.series, channel=args.channel, on_case_start=start, on_tile=tile, on_case_end=end,
    )
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    total = sum(r.seconds for r in results)
    summary = (f"{len(results)} case(s): {counts['ok']} segmented, {counts['skipped']} skipped, "
               f"{counts['failed']} failed, {total:.1f} s")
    (log.error if counts["failed"] else log.warning if not args.quiet else log.info)(summary)
    return 1 if counts["failed"] else 0


def _configure_logging(level: int) -> None:
    """Log the package's messages to stderr (once, however often main() is called)."""
    logger = logging.getLogger("mrseg")
    logger.setLevel(level)
    if not any(getattr(h, "mrseg_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.mrseg_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mrseg`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    _configure_logging(level)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "segment":
        return _run_segment(args)
    parser.error(f"unknown command {args.command}")
    return 2
