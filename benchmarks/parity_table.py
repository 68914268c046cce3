"""The parity table: how closely mrseg's labels agree with nnU-Net's predictor and with the
published tool, per trained model, input and precision, with the speed-up (issue 16).

For each trained model we have (the bundled demo model; the trained test models of
tests/model_factory.py, plain and residual-encoder U-Nets trained briefly on blob phantoms) and
each input (every real scan in ../shared/data, the DICOM series included, plus ``--phantoms``
held-out phantoms per contrast: CT, T1 in/opposed phase, T2 HASTE, Dixon water/fat; seeds from
90000, trunk field of view, 3 mm, never used to train the demo model), the script runs:

- nnU-Net v2's own predictor (``nnUNetPredictor``, the image through SimpleITK's DICOMOrient to
  LPS and back, as the published tool does);
- the published tool (MRSegmentator 2.0.0's command line through benchmarks/published_mrsegmentator.py,
  one process per model over all inputs; ``--no-published`` leaves it out);
- mrseg's Segmenter in each ``--precisions`` (``fp32`` is the default on every CPU).

All run fold 0, step 0.5, on the CPU, the inputs written once as NIfTI so every tool reads the
same voxels. Agreement: equal voxels and the smallest Dice over classes with at least
``--min-voxels`` voxels in either map; phantom rows give the worst case over their seeds.
Speed-up: nnU-Net predictor seconds over mrseg seconds, summed over the row's inputs, both
in this process with the model already loaded and warmed up on the first input (prediction
and export only); keep the machine otherwise idle.

    python benchmarks/parity_table.py                                   # everything (long)
    python benchmarks/parity_table.py --models demo --phantoms 2 --precisions fp32 bf16
    python benchmarks/parity_table.py --json parity.json                # also write the rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LAUNCHER = ROOT / "benchmarks" / "published_mrsegmentator.py"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONTRASTS = (("ct", "contrast"), ("mr", "t1_in"), ("mr", "t1_opp"), ("mr", "t2_haste"), ("mr", "dixon_water"),
             ("mr", "dixon_fat"))
HELD_OUT_SEED = 90000
MODELS = ("demo", "plain", "resenc")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Row:
    model: str
    inputs: str
    count: int
    precision: str
    equal_nnunet: float
    min_dice_nnunet: float
    equal_published: float
    min_dice_published: float
    speedup: float


def worst_agreement(a: np.ndarray, b: np.ndarray, min_voxels: int) -> tuple[float, float]:
    """Share of equal voxels and the smallest Dice over classes with ``min_voxels`` in either map."""
    from parity import agreement

    equal, dice = agreement(a, b, min_voxels=min_voxels)
    return equal, min(dice.values(), default=float("nan"))
def write_inputs(folder: Path, phantoms: int) -> dict[str, list[Path]]:
    """Every input as NIfTI under ``folder``, grouped by table row (one per real scan, one per contrast)."""
    from mrseg.io import read_image, write_image
    from mrseg.phantom.cases import make_case

    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Path]] = {}
    if SHARED.is_dir():
        scans = sorted((SHARED / "mr").glob("*.nii.gz")) + sorted((SHARED / "ct").glob("*.nii.gz"))
        series = SHARED / "dicom" / "example_ct_series"
        for scan in scans + ([series] if series.is_dir() else []):
            name = scan.name.removesuffix(".nii.gz")
            path = folder / f"real_{name}.nii.gz"
            write_image(read_image(scan), path)
            groups[f"real {scan.parent.name}/{name}"] = [path]
    for modality, sequence in CONTRASTS:
        paths = []
        for i in range(phantoms):
            case = make_case(seed=HELD_OUT_SEED + i, modality=modality, sequence=sequence, fov="trunk",
                             spacing=(3.0, 3.0, 3.0))
            path = folder / f"phantom_{sequence}_{i}.nii.gz"
            write_image(case.image, path)
            paths.append(path)
        if paths:
            groups[f"{phantoms} phantoms {modality} {sequence}"] = paths
    return groups


def model_folders(names: list[str], work: Path) -> dict[str, Path]:
    """The model folders by name: the bundled demo model and the trained test models."""
    import model_factory
    from mrseg.model.store import resolve_model_folder

    folders = {}
    for name in names:
        if name == "demo":
            folders[name] = resolve_model_folder("demo")
            continue
        kind = {"plain": "PlainConvUNet", "resenc": "ResidualEncoderUNet"}[name]
        plans = model_factory.make_plans(kind=kind)
        folders[name] = model_factory.build_model(work / f"model_{name}", weights=model_factory.train_state_dict(plans),
                                                  plans_options={"kind": kind})
    return folders


def nnunet_runs(folder: Path, paths: list[Path]) -> dict[Path, tuple[np.ndarray, float]]:
    """nnU-Net's predictor on every input: labels and seconds (prediction and export)."""
    import nnunetv2.inference.predict_from_raw_data as predict_module
    from published_mrsegmentator import find_trainer_without_primus

    from mrseg.io import read_image
    from parity import nnunet_labels, nnunet_predictor

    predict_module.recursive_find_trainer_class_by_name = find_trainer_without_primus  # see the launcher
    predictor = nnunet_predictor(folder, folds=(0,), step=0.5)
    nnunet_labels(predictor, read_image(paths[0]), reorient_to_lps=True)  # warm-up: first-call costs not timed
    runs = {}
    for path in paths:
        image = read_image(path)
        start = time.perf_counter()
        labels = nnunet_labels(predictor, image, reorient_to_lps=True)
        runs[path] = labels, time.perf_counter() - start
    return runs


def published_runs(folder: Path, inputs: Path, out: Path) -> dict[Path, np.ndarray]:
    """The published tool's labels for every NIfTI in ``inputs`` (one process, fold 0)."""
    from mrseg.io import read_image

    env = {**os.environ, "MRSEG_WEIGHTS_PATH": str(folder)}
    subprocess.run([sys.executable, str(LAUNCHER), "-i", str(inputs), "-o", str(out), "--cpu_only", "--fold", "0",
                    "--no_tqdm"], env=env, check=True, capture_output=True, text=True)
    return {path: read_image(out / f"{path.name.removesuffix('.nii.gz')}_seg.nii.gz").array
            for path in inputs.glob("*.nii.gz")}


def mrseg_runs(folder: Path, paths: list[Path], precision: str) -> dict[Path, tuple[np.ndarray, float]]:
    """mrseg's labels and seconds (prediction and export) for every input, in ``precision``."""
    from mrseg.inference import Segmenter
    from mrseg.io import read_image

    # nnU-Net's predictor sees an ensemble folder (the demo model) as its own model alone: so does this
    segmenter = Segmenter(folder, folds=[0], step=0.5, precision=precision, ensemble=False)
    segmenter.segment(read_image(paths[0]))  # warm-up: first-call costs not timed
    runs = {}
    for path in paths:
        image = read_image(path)
        start = time.perf_counter()
        labels = segmenter.segment(image).array
        runs[path] = labels, time.perf_counter() - start
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--phantoms", type=int, default=10, help="held-out phantoms per contrast (default 10)")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--min-voxels", type=int, default=1000, help="classes in the smallest Dice (default 1000)")
    parser.add_argument("--no-published", action="store_true", help="leave out the published tool")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mrseg_parity_") as work_dir:
        work = Path(work_dir)
        inputs = work / "inputs"
        groups = write_inputs(inputs, args.phantoms)
        paths = [p for group in groups.values() for p in group]
        for name, folder in model_folders(args.models, work).items():
            theirs = nnunet_runs(folder, paths)
            published = {} if args.no_published else published_runs(folder, inputs, work / f"published_{name}")
            for precision in args.precisions:
                ours = mrseg_runs(folder, paths, precision)
                for group, members in groups.items():
                    versus_nnunet = [worst_agreement(ours[p][0], theirs[p][0], args.min_voxels) for p in members]
                    versus_published = [worst_agreement(ours[p][0], published[p], args.min_voxels)
                                        for p in members if p in published]
                    rows.append(Row(
                        model=name, inputs=group, count=len(members), precision=precision,
                        equal_nnunet=min(e for e, _ in versus_nnunet),
                        min_dice_nnunet=float(np.nanmin([d for _, d in versus_nnunet])),
                        equal_published=min((e for e, _ in versus_published), default=float("nan")),
                        min_dice_published=float(np.nanmin([d for _, d in versus_published]))
                        if versus_published else float("nan"),
                        speedup=sum(theirs[p][1] for p in members) / sum(ours[p][1] for p in members),
                    ))
                    print(rows[-1], file=sys.stderr, flush=True)

    print("| model | inputs | precision | equal to nnU-Net | min Dice vs nnU-Net | equal to published | "
          "min Dice vs published | speed-up vs nnU-Net |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.model} | {r.inputs} | {r.precision}{' (default)' if r.precision == 'fp32' else ''} | "
              f"{100 * r.equal_nnunet:.3f} % | {r.min_dice_nnunet:.4f} | {100 * r.equal_published:.3f} % | "
              f"{r.min_dice_published:.4f} | {r.speedup:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
