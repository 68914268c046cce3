"""Cohorts for the cohort tests: small phantom MR cases at 6 mm (the demo model's grid), their truth
label maps, and the bundled demo model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mrseg.io import read_image
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


@pytest.fixture(scope="session")
def truth_cohort(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Ten phantom cases' truth label maps (as an appearance-true model would label them)."""
    root = tmp_path_factory.mktemp("truth_cohort")
    phantom_cohort(root / "images", 10, truth=root / "truth", first_seed=92000)
    return [read_image(p) for p in sorted((root / "truth").glob("*_labels.nii.gz"))]


@pytest.fixture()
def demo_model() -> Path:
    from mrseg.model.store import resolve_model_folder

    return resolve_model_folder("demo")
