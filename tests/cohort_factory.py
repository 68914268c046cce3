"""Phantom cohorts for the cohort tests: small MR cases at 6 mm (the demo model's grid), several
sequences and fields of view, with their truth label maps when asked."""

from __future__ import annotations

import shutil
from pathlib import Path

from mrseg.phantom import make_case, write_case

SEQUENCES = ("t1_in", "t2_haste", "dixon_water", "t1_opp", "t2_tse", "dixon_fat")


def phantom_cohort(folder: Path, count: int, *, first_seed: int = 91000, spacing: float = 6.0,
                   truth: Path | None = None, fovs: tuple[str, ...] = ("abdomen",)) -> list[Path]:
    """``count`` phantom MR images (fields of view taken in turn from ``fovs``, several sequences)
    in ``folder``; their truth label maps in ``truth`` when given. An abdomen is 47 slices at 6 mm,
    a trunk 118 (about 3× the demo model's time), so abdomens unless a test needs a trunk."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        case = make_case(seed=first_seed + i, modality="mr", sequence=SEQUENCES[i % len(SEQUENCES)],
                         fov=fovs[i % len(fovs)], spacing=(spacing, spacing, spacing))
        written = write_case(case, truth or folder / ".truth", f"case{i:02d}")
        target = folder / f"case{i:02d}.nii.gz"
        shutil.move(written["image"], target)
        paths.append(target)
    if truth is None:
        shutil.rmtree(folder / ".truth")
    return paths
