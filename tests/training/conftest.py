"""Small synthetic cases for the training tests (the phantom engine at a coarse spacing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrseg.phantom.cases import make_case, write_case

SPACING = (6.0, 6.0, 6.0)


def write_phantoms(folder: Path, specs: list[tuple[int, str, str]]) -> Path:
    """Write one phantom per (seed, modality, sequence) into ``folder`` as ``mrseg phantom`` does."""
    for seed, modality, sequence in specs:
        case = make_case(seed=seed, modality=modality, sequence=sequence, spacing=SPACING,
                         random_contrast=modality == "mr")
        write_case(case, folder, f"{modality}_{sequence}_{seed:03d}")
    return folder


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    specs = [(0, "mr", "t1_in"), (1, "mr", "t2_haste"), (2, "ct", "contrast"), (3, "mr", "dixon_water"),
             (4, "mr", "t1_opp"), (5, "ct", "native")]
    return write_phantoms(tmp_path_factory.mktemp("phantoms"), specs)
