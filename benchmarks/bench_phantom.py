"""Time phantom synthesis: one 160×160×100 case at 2 mm, anatomy + image, on one core.

Target (issue 3): under 3 s per case on one core. Prints the time of each stage per
contrast and the ratio to the target.

    python benchmarks/bench_phantom.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, set before numpy loads its BLAS

import time  # noqa: E402

import numpy as np  # noqa: E402

from mrseg.io.image import Geometry  # noqa: E402
from mrseg.phantom.anatomy import default_grid, generate_anatomy  # noqa: E402
from mrseg.phantom.synthesis import SEQUENCES, SynthesisOptions, synthesize  # noqa: E402

TARGET_S = 3.0


def abdomen_grid(shape_zyx=(100, 160, 160), spacing=2.0) -> Geometry:
    box = default_grid("abdomen", spacing=(spacing,) * 3)
    centre = box.affine_lps @ np.array([*(np.array(box.shape[::-1]) - 1) / 2, 1.0])
    origin = centre[:3] - (np.array(shape_zyx[::-1]) - 1) / 2 * spacing
    return Geometry(shape=shape_zyx, spacing=(spacing,) * 3, origin=tuple(origin), direction=box.direction)


def main() -> None:
    grid = abdomen_grid()
    print(f"grid {grid.shape[::-1]} (x, y, z) at 2 mm, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"{'modality':8s} {'sequence':12s} {'anatomy s':>10s} {'image s':>8s} {'total s':>8s} {'vs 3 s':>7s}")
    for modality, sequences in SEQUENCES.items():
        for sequence in sequences:
            times = []
            for seed in range(3):
                start = time.perf_counter()
                anatomy = generate_anatomy(seed=seed, fov="abdomen", grid=grid)
                middle = time.perf_counter()
                synthesize(anatomy.tissues, SynthesisOptions(modality=modality, sequence=sequence), seed=seed)
                times.append((middle - start, time.perf_counter() - middle))
            a, s = np.median(np.array(times), axis=0)
            print(f"{modality:8s} {sequence:12s} {a:10.2f} {s:8.2f} {a + s:8.2f} {(a + s) / TARGET_S:7.2f}")


if __name__ == "__main__":
    main()
