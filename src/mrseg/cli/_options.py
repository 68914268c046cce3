"""Options several commands share, parsed the same way everywhere."""

from __future__ import annotations

import argparse


def orientation_option(value: str) -> str | None:
    """An ``--orientation`` value: an axis code, or None for 'none' (keep the file's axes)."""
    return None if str(value).lower() == "none" else value


def add_class_name_options(p: argparse.ArgumentParser) -> None:
    """``--catalogue`` or ``--model``: where the class names of a label map come from."""
    names = p.add_mutually_exclusive_group()
    names.add_argument("--catalogue", default="base", choices=("base", "body_comp"),
                       help="class names of the labels (default base, the 40 classes)")
    names.add_argument("--model", metavar="MODEL", help="take the class names from this model's dataset.json")


def class_names(args: argparse.Namespace) -> dict[int, str]:
    """Label value → class name from ``--model``'s dataset.json, else from ``--catalogue``."""
    from mrseg.classes import catalogue
    from mrseg.model.plans import read_dataset
    from mrseg.model.store import resolve_model_folder

    if args.model:
        dataset = read_dataset(resolve_model_folder(args.model) / "dataset.json")
        return {value: name for name, value in dataset.foreground.items()}
    return {c.index: c.name for c in catalogue(args.catalogue).classes}
