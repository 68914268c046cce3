"""Cohorts for the cohort tests: small phantom MR cases at 6 mm (the demo model's grid), their truth
label maps, and the bundled demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohort_factory import phantom_cohort
from mrseg.io import read_image


@pytest.fixture(scope="session")
def truth_cohort(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Ten phantom cases' truth label maps (as an appearance-true model would label them)."""
    root = tmp_path_factory.mktemp("truth_cohort")
    phantom_cohort(root / "images", 10, truth=root / "truth", first_seed=92000, fovs=("abdomen", "trunk"))
    return [read_image(p) for p in sorted((root / "truth").glob("*_labels.nii.gz"))]


@pytest.fixture()
def demo_model() -> Path:
    from mrseg.model.store import resolve_model_folder

    return resolve_model_folder("demo")

