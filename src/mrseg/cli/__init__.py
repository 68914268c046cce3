"""The ``mrseg`` command: one module per command, each with ``add_parser(sub)`` and ``run(args)``.

Commands only parse options, call the library and print; the work lives in the library
(:mod:`mrseg.pipeline` for ``segment`` and ``demo``). Problems with inputs, models or the
environment end in one line on stderr and exit code 2 (1: some cases failed); tracebacks are
shown only with ``-vv``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import Sequence

from mrseg._version import __version__
from mrseg.cli import (
    annotate,
    cohort,
    dataset,
    demo,
    evaluate,
    phantom,
    preview,
    review,
    segment,
    stats,
    train,
    weights,
)

log = logging.getLogger("mrseg")

COMMANDS: dict[str, ModuleType] = {
    "segment": segment, "evaluate": evaluate, "phantom": phantom, "dataset": dataset, "train": train,
    "demo": demo, "weights": weights, "stats": stats, "preview": preview, "cohort": cohort,
    "annotate": annotate, "review": review,
}
"""Command name → its module (``add_parser``, ``run``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrseg",
        description="Segment 40 anatomical structures in MRI and CT with nnU-Net v2 models.",
    )
    parser.add_argument("--version", action="version", version=f"mrseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v: every step; -vv: debug, with tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


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
    if args.quiet:
        level = logging.ERROR
    else:
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    _configure_logging(level)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(COMMANDS[args.command].run(args))
    except KeyboardInterrupt:
        log.error("interrupted; nothing half-written is left under a final name, rerun the command to go on")
        return 130
    except Exception as err:  # a bug, or an environment problem nothing above names: one line unless -vv
        if args.verbose >= 2:
            raise
        log.error("unexpected %s: %s (run with -vv for the traceback, and please report it)", type(err).__name__, err)
        return 1


__all__ = ["COMMANDS", "build_parser", "main"]
