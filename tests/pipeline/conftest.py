"""Inputs and a model for the pipeline tests: small images of four orientations and formats, the
session's tiny trained model loaded in exact mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrseg.io import write_image
from mrseg.pipeline import CaseSpec, ModelSpec, load
from parity import phantom_image


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """A folder of four small images (a, b, c, d) in different orientations and formats."""
    folder = tmp_path / "in"
    for name, orientation, seed in (("a.nii.gz", "RAS", 1), ("b.mha", "PIL", 2), ("c.nrrd", "oblique", 3),
                                    ("d.nii.gz", "LPS", 4)):
        write_image(phantom_image(orientation, seed=seed), folder / name)
    return folder


@pytest.fixture()
def model(model_dir):
    """The tiny trained model, fold 0, fast step, exact mode."""
    return load(ModelSpec(model_dir(), folds=("0",), step=0.8, precision="fp32"))


@pytest.fixture()
def case(tmp_path) -> CaseSpec:
    """One MHA input in PIL orientation."""
    return CaseSpec.of(write_image(phantom_image("PIL", seed=3), tmp_path / "in" / "scan.mha"))
