"""Where does bf16 lose agreement with fp32? Labels of one model under precision variants.

Issue 16 asks for a default that gives nnU-Net's (float32) labels on ≥ 99.9 % of voxels on every
CPU and stays ≥ 3× faster than the official pipeline. bf16 is the speed; this script measures
which parts of the bf16 path cost agreement, on trained models and real scans:

- ``bf16``: mrseg's bf16 mode as shipped (every convolution in bf16, logits summed in float16);
- ``bf16+acc32``: the same network arithmetic, logits summed in float32 (as exact mode does);
- ``bf16+first32`` / ``bf16+head32`` / ``bf16+ends32``: the first convolution (raw intensities in)
  / the segmentation head / both in float32, the rest in bf16, float32 sums;
- ``bf16+enc0_32`` / ``bf16+dec_last32`` / ``bf16+fullres32``: the full-resolution encoder stage /
  decoder stage / both (with the head) in float32: about half the network's FLOPs;
- ``fp16``: float16 autocast (what nnU-Net runs on a GPU), float16 sums.

Every variant's labels are compared with exact mode's (``fp32``, nnU-Net's labels on this machine;
the parity tests hold that): equal voxels, and the smallest Dice over classes with at least
``--min-voxels`` voxels in either map. Seconds are the network stage of one process on this
machine; compare within a run. The layer variants run the network's own forward (the lean
forward only changes memory, not arithmetic) with the chosen modules under ``autocast(enabled=False)``.

    python benchmarks/precision_sensitivity.py --model demo            # every real scan in ../shared/data
    python benchmarks/precision_sensitivity.py --model DIR --scans a.nii.gz b.nii.gz --variants bf16 bf16+acc32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

VARIANTS = ("bf16", "bf16+acc32", "bf16+first32", "bf16+head32", "bf16+ends32", "bf16+enc0_32", "bf16+dec_last32",
            "bf16+fullres32", "fp16")


def real_scans() -> list[Path]:
    """Every real scan in ../shared/data (image files and the DICOM series)."""
    scans = sorted(p for p in (SHARED / "mr").glob("*.nii.gz")) + sorted(p for p in (SHARED / "ct").glob("*.nii.gz"))
    series = SHARED / "dicom" / "example_ct_series"
    return scans + ([series] if series.is_dir() else [])


def full_precision(module: Any) -> None:
    """Run ``module`` in float32 under any autocast: its input cast up, autocast off inside."""
    import torch

    forward = module.forward

    def forward_fp32(x: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float(), *args, **kwargs)

    module.forward = forward_fp32


def first_convolution(network: Any) -> Any:
    import torch

    return next(m for m in network.encoder.stages[0].modules() if isinstance(m, torch.nn.Conv3d))


def chosen_modules(network: Any, variant: str) -> list[Any]:
    """The modules a variant keeps in float32."""
    head = network.decoder.seg_layers[-1]
    enc0, dec_last = network.encoder.stages[0], network.decoder.stages[-1]
    return {
        "bf16+first32": [first_convolution(network)],
        "bf16+head32": [head],
        "bf16+ends32": [first_convolution(network), head],
        "bf16+enc0_32": [enc0],
        "bf16+dec_last32": [dec_last],
        "bf16+fullres32": [enc0, dec_last, head],
    }.get(variant, [])


def labels_of(segmenter: Any, image: Any, variant: str, accumulator: str) -> tuple[np.ndarray, float]:
    """Run one variant: patch the segmenter's networks, then restore them."""
    from mrseg.inference import sliding_window

    original_iter: Callable[..., Any] = sliding_window.iter_logit_slabs

    def with_accumulator(*args: Any, **kwargs: Any) -> Any:
        kwargs["accumulator"] = accumulator
        return original_iter(*args, **kwargs)

    import mrseg.inference.segmenter as segmenter_module

    segmenter_module.iter_logit_slabs = with_accumulator  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        result = segmenter.run(image)
        return result.labels.array, time.perf_counter() - start
    finally:
        segmenter_module.iter_logit_slabs = original_iter  # type: ignore[assignment]


def make_segmenter(folder: Path, variant: str, folds: list[str] | None) -> Any:
    from mrseg.inference import Segmenter

    if variant in ("fp32", "bf16", "fp16"):
        return Segmenter(folder, folds=folds, precision=variant)
    # Layer variants: float32 weights, the whole network under bf16 autocast but the chosen modules,
    # and the network's own forward (module calls) so the patches apply.
    segmenter = Segmenter(folder, folds=folds, precision="fp32")
    segmenter.precision = "bf16"
    for wrapper in segmenter.networks:
        wrapper.lean = False
        for module in chosen_modules(wrapper.network, variant):
            full_precision(module)
    return segmenter


def agreement(a: np.ndarray, b: np.ndarray, min_voxels: int) -> tuple[float, float, str]:
    equal = float((a == b).mean())
    worst, worst_label = 1.0, "-"
    for label in np.union1d(np.unique(a), np.unique(b)):
        if label == 0:
            continue
        x, y = a == label, b == label
        if max(int(x.sum()), int(y.sum())) >= min_voxels:
            d = 2 * float((x & y).sum()) / float(x.sum() + y.sum())
            if d < worst:
                worst, worst_label = d, str(int(label))
    return equal, worst, worst_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="model folder or name (default: the bundled demo model)")
    parser.add_argument("--scans", nargs="+", type=Path, help="images or DICOM folders (default: ../shared/data)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--folds", nargs="+", help="folds (default: all)")
    parser.add_argument("--min-voxels", type=int, default=1000, help="classes smaller than this are not scored")
    args = parser.parse_args()

    from mrseg.io import read_image
    from mrseg.model.store import resolve_model_folder

    folder = resolve_model_folder(args.model)
    scans = args.scans or real_scans()
    if not scans:
        sys.exit("no scans: give --scans or provide ../shared/data")
    images = {scan: read_image(scan) for scan in scans}
    reference = make_segmenter(folder, "fp32", args.folds)
    exact = {scan: labels_of(reference, image, "fp32", "float32") for scan, image in images.items()}
    print(f"model {folder}; reference: exact mode (fp32); classes >= {args.min_voxels} voxels scored", flush=True)
    print(f"{'scan':34s} {'variant':16s} {'equal %':>8s} {'min Dice':>8s} {'class':>5s} {'seconds':>8s} "
          f"{'fp32 s':>7s}")
    for variant in args.variants:
        segmenter = make_segmenter(folder, variant, args.folds)
        accumulator = "float16" if variant in ("bf16", "fp16") else "float32"
        for scan, image in images.items():
            labels, seconds = labels_of(segmenter, image, variant, accumulator)
            equal, worst, label = agreement(labels, exact[scan][0], args.min_voxels)
            print(f"{scan.name[:34]:34s} {variant:16s} {100 * equal:8.3f} {worst:8.4f} {label:>5s} {seconds:8.2f} "
                  f"{exact[scan][1]:7.2f}", flush=True)


if __name__ == "__main__":
    main()
