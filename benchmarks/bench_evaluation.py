"""Time the evaluation metrics: all 40 classes of a 512×512×300 label-map pair, on one core.

Target (issue 4): under 30 s for Dice, HD, HD95, ASSD and NSD of all 40 classes. The pair is
synthetic: 40 ellipsoids with the extents (mm) of the real organs at 0.8×0.8×1.5 mm spacing,
and a prediction made from the same ellipsoids shifted by up to 2 mm and scaled by ±5 %.
MONAI's ``compute_hausdorff_distance`` runs on a few classes side by side for a ratio.

    python benchmarks/bench_evaluation.py [--monai-classes 4]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one core, set before numpy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mrseg.classes import BASE  # noqa: E402
from mrseg.evaluation.metrics import compare_labels, compare_masks  # noqa: E402

TARGET_S = 30.0
SHAPE = (300, 512, 512)  # z, y, x
SPACING_ZYX = (1.5, 0.8, 0.8)

# Approximate organ extents in mm (left-right, anterior-posterior, superior-inferior).
EXTENTS_MM = {
    "spleen": (120, 70, 110), "right_kidney": (60, 60, 110), "left_kidney": (60, 60, 110),
    "gallbladder": (40, 40, 80), "liver": (200, 170, 170), "stomach": (150, 100, 150),
    "pancreas": (150, 40, 50), "right_adrenal_gland": (30, 20, 50), "left_adrenal_gland": (30, 20, 50),
    "left_lung": (120, 180, 250), "right_lung": (130, 180, 250), "heart": (130, 100, 120),
    "aorta": (25, 25, 380), "inferior_vena_cava": (25, 25, 250), "portal_vein_and_splenic_vein": (120, 40, 40),
    "left_iliac_artery": (30, 30, 120), "right_iliac_artery": (30, 30, 120), "left_iliac_vena": (30, 30, 120),
    "right_iliac_vena": (30, 30, 120), "esophagus": (20, 20, 250), "small_bowel": (250, 150, 200),
    "duodenum": (80, 60, 100), "colon": (300, 150, 250), "urinary_bladder": (80, 70, 70),
    "spine": (50, 60, 440), "sacrum": (110, 60, 110), "left_hip": (150, 120, 200), "right_hip": (150, 120, 200),
    "left_femur": (50, 50, 150), "right_femur": (50, 50, 150), "left_autochthonous_muscle": (40, 50, 400),
    "right_autochthonous_muscle": (40, 50, 400), "left_iliopsoas_muscle": (50, 50, 300),
    "right_iliopsoas_muscle": (50, 50, 300), "left_gluteus_maximus": (120, 80, 180),
    "right_gluteus_maximus": (120, 80, 180), "left_gluteus_medius": (100, 60, 130),
    "right_gluteus_medius": (100, 60, 130), "left_gluteus_minimus": (70, 40, 80),
    "right_gluteus_minimus": (70, 40, 80),
}


def _draw(labels: np.ndarray, value: int, centre_mm: np.ndarray, radii_mm: np.ndarray) -> None:
    """Paint an ellipsoid (centre and radii in mm, numpy axis order) into ``labels``."""
    spacing = np.asarray(SPACING_ZYX)
    low = np.maximum(np.floor((centre_mm - radii_mm) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centre_mm + radii_mm) / spacing).astype(int) + 1, SHAPE)
    axes = [(np.arange(lo, hi) * s - c) / r for lo, hi, s, c, r in zip(low, high, spacing, centre_mm, radii_mm)]
    inside = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2 <= 1.0
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    labels[box][inside] = value


def make_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a perturbed prediction, uint8 label maps of shape ``SHAPE``."""
    rng = np.random.default_rng(seed)
    field_mm = np.asarray(SHAPE) * np.asarray(SPACING_ZYX)
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    placed = []
    for cls in BASE.classes:
        lr, ap, si = EXTENTS_MM[cls.name]
        radii = np.array([si, ap, lr], float) / 2
        centre = radii + rng.uniform(0, 1, 3) * (field_mm - 2 * radii)
        placed.append((cls.index, centre, radii, rng.uniform(-2, 2, 3), rng.uniform(0.95, 1.05, 3)))
    for index, centre, radii, shift, scale in sorted(placed, key=lambda p: -float(np.prod(p[2]))):
        _draw(ref, index, centre, radii)  # largest first, so that every organ stays visible
        _draw(pred, index, centre + shift, radii * scale)
    return pred, ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monai-classes", type=int, default=4, help="classes timed with MONAI (0: skip)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    pred, ref = make_pair()
    built = time.perf_counter() - t0
    print(f"synthetic pair {SHAPE[::-1]} (x, y, z) at {SPACING_ZYX[::-1]} mm: {built:.1f} s to build")
    labels = [c.index for c in BASE.classes]

    t0 = time.perf_counter()
    results = compare_labels(pred, ref, labels=labels, spacing=SPACING_ZYX, nsd_tolerance=2.0)
    ours = time.perf_counter() - t0
    dice = [m.dice for m in results.values() if m.dice is not None]
    present = sum(m.status.value == "ok" for m in results.values())
    print(f"mrseg: Dice, HD, HD95, ASSD, NSD for {len(results)} classes ({present} present): {ours:.1f} s "
          f"(target {TARGET_S:.0f} s, {ours / TARGET_S:.2f} of it); mean Dice {np.mean(dice):.3f}")

    if args.monai_classes <= 0:
        return
    try:
        import torch
        from monai.metrics import compute_hausdorff_distance
    except ImportError:
        print("MONAI not installed; no side-by-side comparison")
        return
    torch.set_num_threads(1)
    chosen = sorted(labels, key=lambda k: -int(np.count_nonzero(ref == k)))[: args.monai_classes]
    ours_few = theirs = 0.0
    for k in chosen:
        p, r = pred == k, ref == k
        t0 = time.perf_counter()
        mine = compare_masks(p, r, spacing=SPACING_ZYX)
        ours_few += time.perf_counter() - t0
        tp, tr = torch.from_numpy(p)[None, None], torch.from_numpy(r)[None, None]
        t0 = time.perf_counter()
        hd = float(compute_hausdorff_distance(tp, tr, percentile=95, spacing=list(SPACING_ZYX))[0, 0])
        theirs += time.perf_counter() - t0
        print(f"  {BASE.name_of(k):28s} HD95 mrseg {mine.hd95:7.3f} mm, MONAI {hd:7.3f} mm")
    print(f"{len(chosen)} largest classes: mrseg all five metrics {ours_few:.1f} s, MONAI HD95 alone {theirs:.1f} s "
          f"(MONAI / mrseg = {theirs / ours_few:.2f})")


if __name__ == "__main__":
    main()
