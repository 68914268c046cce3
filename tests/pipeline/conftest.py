"""Inputs for the pipeline tests: small images of four orientations and formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrseg.io import write_image
from parity import phantom_image


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """A folder of four small images (a, b, c, d) in different orientations and formats."""
    folder = tmp_path / "in"
    for name, orientation, seed in (("a.nii.gz", "RAS", 1), ("b.mha", "PIL", 2), ("c.nrrd", "oblique", 3),
                                    ("d.nii.gz", "LPS", 4)):
        write_image(phantom_image(orientation, seed=seed), folder / name)
    return folder
