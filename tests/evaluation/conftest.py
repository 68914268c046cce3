"""Synthetic masks and label files for the evaluation tests: seeded, anisotropic, non-identity axes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from scipy import ndimage

from mrseg.io import Image, write_image

SPACING_ZYX = (2.5, 0.8, 1.1)
"""Anisotropic voxel size (mm) used throughout, numpy axis order."""

DIRECTION_PIL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
"""A permuted and flipped (non-identity) direction for files on disk."""


def random_blob(rng: np.random.Generator, shape=(24, 40, 36), fill: float = 0.3, smooth: float = 2.5) -> np.ndarray:
    """An irregular mask (possibly several pieces, possibly touching the border): thresholded smooth noise."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
    return field > np.quantile(field, 1 - fill)


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def shapes(shape=(20, 36, 32)) -> dict[str, np.ndarray]:
    """Named test shapes: ellipsoid, box, thin plate, tube, hollow shell, single voxel, two pieces, border."""
    out = {}
    out["ellipsoid"] = ellipsoid(shape, (10, 18, 15), (6, 11, 9))
    box = np.zeros(shape, bool)
    box[4:15, 6:30, 5:25] = True
    out["box"] = box
    plate = np.zeros(shape, bool)
    plate[9:10, 5:30, 4:28] = True
    out["plate"] = plate
    tube = np.zeros(shape, bool)
    tube[:, 16:20, 14:18] = True  # touches the top and bottom faces of the volume
    out["tube"] = tube
    out["shell"] = ellipsoid(shape, (10, 18, 15), (7, 12, 10)) & ~ellipsoid(shape, (10, 18, 15), (4, 8, 6))
    voxel = np.zeros(shape, bool)
    voxel[10, 18, 15] = True
    out["voxel"] = voxel
    two = ellipsoid(shape, (6, 8, 8), (3, 5, 4)) | ellipsoid(shape, (14, 28, 24), (3, 5, 5))
    out["two_pieces"] = two
    corner = np.zeros(shape, bool)
    corner[:6, :10, :9] = True  # touches three faces of the volume
    out["corner"] = corner
    return out


def label_volume(rng: np.random.Generator, shape=(16, 40, 36), labels=(1, 2, 5, 13)) -> np.ndarray:
    """A label map with one ellipsoid per label at random positions (later labels overwrite)."""
    out = np.zeros(shape, np.uint8)
    for k in labels:
        centre = [rng.uniform(0.3 * s, 0.7 * s) for s in shape]
        radii = [rng.uniform(0.15 * s, 0.3 * s) for s in shape]
        out[ellipsoid(shape, centre, radii)] = k
    return out


def perturb(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: the label map shifted by a voxel with a few labels eroded."""
    out = np.roll(labels, int(rng.integers(-1, 2)), axis=int(rng.integers(0, 3)))
    for k in np.unique(out)[1:]:
        if rng.uniform() < 0.5:
            mask = out == k
            out[mask & ~ndimage.binary_erosion(mask)] = 0
    return out


@pytest.fixture()
def write_labels() -> Callable[..., Path]:
    """``write_labels(array, path, spacing_zyx=..., direction=..., origin=...)`` → path of the written file."""

    def write(array: np.ndarray, path: Path, *, spacing_zyx=SPACING_ZYX, direction=DIRECTION_PIL,
              origin=(12.5, -30.0, 4.0)) -> Path:
        image = Image.from_array(array.astype(np.uint8), spacing=tuple(spacing_zyx[::-1]), origin=origin,
                                 direction=direction)
        return write_image(image, path)

    return write


class Synth:
    """The helpers above, handed to tests as the ``synth`` fixture (test modules cannot import this conftest)."""

    spacing = SPACING_ZYX
    direction = DIRECTION_PIL
    random_blob = staticmethod(random_blob)
    ellipsoid = staticmethod(ellipsoid)
    shapes = staticmethod(shapes)
    label_volume = staticmethod(label_volume)
    perturb = staticmethod(perturb)


@pytest.fixture(scope="session")
def synth() -> Synth:
    return Synth()


COHORT_META = (
    "case_id,dataset,modality,sequence,scanner\n"
    "dsA_001,dsA,CT,CT,S1\n"
    "dsA_002,dsA,CT,CT,S2\n"
    "dsB_001,dsB,MR,T1 in-phase,S1\n"
    "dsB_002,dsB,MR,T2 HASTE,S1\n"
    "dsB_003,dsB,MR,T2 HASTE,S2\n"
)
"""Metadata of the synthetic cohort: two CT cases, three MR cases (one without a prediction)."""


@pytest.fixture()
def cohort(tmp_path: Path, write_labels) -> dict[str, Path]:
    """A small cohort on disk: refs/, preds/ (``<case>_seg.nii.gz``), meta.csv.

    dsB_003 has no prediction; preds/extra_seg.nii.gz has no reference; the references are MHA
    and NIfTI files with anisotropic spacing and a permuted, flipped direction.
    """
    rng = np.random.default_rng(42)
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    for case in ("dsA_001", "dsA_002", "dsB_001", "dsB_002", "dsB_003"):
        ref = label_volume(rng)
        suffix = ".mha" if case == "dsA_002" else ".nii.gz"
        write_labels(ref, refs / f"{case}{suffix}")
        if case != "dsB_003":
            write_labels(perturb(ref, rng), preds / f"{case}_seg.nii.gz")
    write_labels(label_volume(rng), preds / "extra_seg.nii.gz")
    meta = tmp_path / "meta.csv"
    meta.write_text(COHORT_META)
    return {"refs": refs, "preds": preds, "meta": meta, "root": tmp_path}
