"""Print how closely mrseg's labels agree with nnU-Net's predictor, case by case.

Builds the same small trained model folders the tests use (tests/model_factory.py), runs mrseg
and nnUNetPredictor on synthetic phantoms in several orientations and, when present, on the
real scans in ../shared/data, and prints voxel agreement and per-class Dice.

    python benchmarks/parity_report.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import model_factory  # noqa: E402
from mrseg.inference import Segmenter  # noqa: E402
from mrseg.io import read_image  # noqa: E402
from parity import agreement, nnunet_labels, nnunet_predictor, phantom_image  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mrseg_parity_"))
    weights = {k: model_factory.train_state_dict(model_factory.make_plans(kind=k))
               for k in ("PlainConvUNet", "ResidualEncoderUNet")}
    rows = []

    def compare(name: str, folder: Path, image, folds=(0, 1), step=0.5) -> None:
        ours = Segmenter(folder, folds=list(folds), step=step).segment(image).array
        theirs = nnunet_labels(nnunet_predictor(folder, folds=folds, step=step), image, reorient_to_lps=True)
        equal, dice = agreement(ours, theirs)
        rows.append((name, ours.size, int((ours != theirs).sum()), equal, dice))

    for kind, w in weights.items():
        for norm in ("ZScoreNormalization", "CTNormalization"):
            folder = model_factory.build_model(work / f"{kind}_{norm}", weights=w,
                                               plans_options={"kind": kind, "normalization": norm})
            for code in ("RAS", "LPS", "PIL", "ASL", "oblique"):
                compare(f"{kind} {norm[:5]} {code}", folder,
                        phantom_image(code, spacing=(1.2, 1.3, 4.0), ct=norm == "CTNormalization"))
    data = ROOT.parent / "shared" / "data"
    if data.is_dir():
        for rel, norm in [("mr/prostatex_0000_t2_tse_tra.nii.gz", "ZScoreNormalization"),
                          ("mr/example_mr_sm.nii.gz", "ZScoreNormalization"),
                          ("ct/thorax_cta.nii.gz", "CTNormalization"),
                          ("ct/example_ct.nii.gz", "CTNormalization"),
                          ("dicom/example_ct_series", "CTNormalization")]:
            folder = work / f"PlainConvUNet_{norm}"
            compare(f"real {rel} (fold 0, step 0.8)", folder, read_image(data / rel), folds=(0,), step=0.8)

    print(f"{'case':58s} {'voxels':>9s} {'differ':>7s} {'equal %':>8s}  Dice per class")
    for name, size, differ, equal, dice in rows:
        text = " ".join(f"{k}:{v:.4f}" for k, v in dice.items())
        print(f"{name:58s} {size:9d} {differ:7d} {100 * equal:8.4f}  {text}")


if __name__ == "__main__":
    main()
