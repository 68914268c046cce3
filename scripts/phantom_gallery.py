"""Render mid-slices (axial, coronal, sagittal) of synthetic cases to PNG, for looking at.

One row per contrast of a generated trunk phantom, plus rows of images synthesised from the
real 40-class label maps in ../shared/data/labels when present.

    python scripts/phantom_gallery.py -o gallery/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mrseg.io import read_image, reorient
from mrseg.io.image import Image
from mrseg.phantom.cases import make_case
from mrseg.phantom.synthesis import SEQUENCES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "labels"


def mid_slices(image: Image) -> list[np.ndarray]:
    """Axial, coronal and sagittal mid-slices in radiological display orientation."""
    lps, _ = reorient(image, "LPS")  # numpy axes: (S, P, L) after reorientation
    a = lps.array
    z, y, x = (s // 2 for s in a.shape)
    axial = a[z, :, :]  # rows anterior→posterior, columns right→left: radiological
    coronal = np.flipud(a[:, y, :])  # superior at the top
    sagittal = np.flipud(a[:, :, x])
    return [axial, coronal, sagittal]


def render(rows: list[tuple[str, Image]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (title, image) in enumerate(rows):
        sp = image.geometry.spacing
        for c, (plane, aspect) in enumerate(zip(mid_slices(image), (sp[1] / sp[0], sp[2] / sp[0], sp[2] / sp[1]))):
            lo, hi = np.percentile(image.array, [1, 99.5])
            axes[r, c].imshow(plane, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            axes[r, c].set_axis_off()
        axes[r, 0].set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--out", default="gallery", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for modality, sequences in SEQUENCES.items():
        for sequence in sequences:
            case = make_case(seed=args.seed, modality=modality, sequence=sequence, fov="trunk", spacing=(2.5,) * 3)
            rows.append((f"phantom {modality} {sequence}", case.image))
    case = make_case(seed=args.seed, modality="mr", sequence="t1_in", fov="abdomen", random_contrast=True)
    rows.append(("phantom random contrast", case.image))
    render(rows, out / "phantoms.png")

    if SHARED.is_dir():
        real_rows = []
        for name in ("example_mr_sm__ref40", "example_ct__ref40"):
            labels = read_image(SHARED / f"{name}.nii.gz")
            for modality, sequence in (("mr", "t1_in"), ("mr", "t2_haste"), ("ct", "native")):
                case = make_case(seed=args.seed, modality=modality, sequence=sequence, from_labels=labels,
                                 source=name)
                real_rows.append((f"{name} → {modality} {sequence}", case.image))
        render(real_rows, out / "from_real_labels.png")
    print(f"wrote {', '.join(str(p) for p in sorted(out.glob('*.png')))}")


if __name__ == "__main__":
    main()
