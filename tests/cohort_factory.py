"""Phantom cohorts for the cohort tests: small MR cases at 6 mm (the demo model's grid), several
sequences and fields of view, with their truth label maps when asked."""

from __future__ import annotations

import shutil
from pathlib import Path

from mrseg.phantom import make_case, write_case

SEQUENCES = ("t1_in", "t2_haste", "dixon_water", "t1_opp", "t2_tse", "dixon_fat")


def phantom_cohort(folder: Path, count: int, *, first_seed: int = 91000, spacing: float = 6.0,
                   truth: Path | None = None) -> list[Path]:
    """``count`` phantom MR images (abdomen or trunk, several sequences) in ``folder``; their truth
    label maps in ``truth`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        case = make_case(seed=first_seed + i, modality="mr", sequence=SEQUENCES[i % len(SEQUENCES)],
                         fov=("abdomen", "trunk")[i % 2], spacing=(spacing, spacing, spacing))
        written = write_case(case, truth or folder / ".truth", f"case{i:02d}")
        target = folder / f"case{i:02d}.nii.gz"
        shutil.move(written["image"], target)
        paths.append(target)
    if truth is None:
        shutil.rmtree(folder / ".truth")
    return paths
