"""Count sliding-window tiles that lie entirely outside the body, for the MRSegmentator-like plans.

Body mask: above 10 % of the 99th percentile (MR) or above -500 HU (CT), opened and hole-filled,
on the plans' grid (3 x 1.5 x 1.5 mm, patch 56 x 192 x 160). Skipping such tiles only pays if
there are any:

    python benchmarks/count_tiles_outside_body.py scan.nii.gz [...]
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage

from mrseg.inference.sliding_window import tile_starts
from mrseg.io import read_image

PATCH = (56, 192, 160)
TARGET_SPACING = (3.0, 1.5, 1.5)


def body_mask(array: np.ndarray) -> np.ndarray:
    threshold = np.percentile(array, 99) * 0.1 if array.min() >= 0 else -500.0
    return ndimage.binary_fill_holes(ndimage.binary_opening(array > threshold, iterations=2))


def tiles_outside(body: np.ndarray, step: float) -> tuple[int, int]:
    padded = [max(n, p) for n, p in zip(body.shape, PATCH)]
    starts = tile_starts(padded, PATCH, step)
    total = empty = 0
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                total += 1
                empty += not body[z:z + PATCH[0], y:y + PATCH[1], x:x + PATCH[2]].any()
    return empty, total


def main() -> None:
    for path in sys.argv[1:]:
        image = read_image(path)
        array = image.array.astype(np.float32)
        shape = [max(1, round(n * s / t)) for n, s, t in zip(array.shape, image.geometry.spacing_zyx, TARGET_SPACING)]
        array = ndimage.zoom(array, [n / m for n, m in zip(shape, array.shape)], order=0)
        body = body_mask(array)
        counts = {step: tiles_outside(body, step) for step in (0.5, 0.8)}
        text = ", ".join(f"step {s}: {e} of {t} tiles outside the body" for s, (e, t) in counts.items())
        print(path, array.shape, text)


if __name__ == "__main__":
    main()
