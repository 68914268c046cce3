"""mrseg against the published pipeline (MRSegmentator 2.0.0 on nnU-Net 2.8.1), side by side.

Same model folder, same inputs, same run; each pipeline runs in its own process so that the
peak memory of its whole process tree (PSS, helper processes included) is clean.

    python benchmarks/make_mrsegmentator_like_model.py /tmp/mrseglike
    python benchmarks/bench_vs_nnunet.py --model /tmp/mrseglike --cases mr --modes fast

Cases: ``mr`` a 256×256×80 MR at 1.5×1.5×3 mm (already on the plans' grid), ``ct`` a
512×512×300 CT at 0.8×0.8×1.5 mm (resampled in and out). Modes: ``fast`` (fold 0, step 0.8)
and ``default`` (5 folds, step 0.5) with mrseg's default settings (fp32 on every CPU since
issue 16), ``fast-bf16``/``default-bf16`` with ``--precision bf16``, and
``fast-low-memory``/``default-low-memory`` with ``--low-memory``.
The official pipeline always runs as published.

Prints wall time, mrseg's per-stage times, peak PSS, voxel agreement, the smallest per-class
Dice and the ratios, and the GFLOP/s mrseg's network stage achieves against the best single
large Conv3d timed in the same run (bench_tile_levers.py), in fp32 and bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # parity.agreement: equal voxels and Dice per class, as the tests measure them
LAUNCHER = ROOT / "benchmarks" / "published_mrsegmentator.py"
MODES = {
    "fast": (["--fast"], ["--fast"]),
    "default": ([], []),
    "fast-bf16": (["--fast"], ["--fast", "--precision", "bf16"]),
    "default-bf16": ([], ["--precision", "bf16"]),
    "fast-low-memory": (["--fast"], ["--fast", "--low-memory"]),
    "default-low-memory": ([], ["--low-memory"]),
}


def make_input(case: str, folder: Path) -> Path:
    """A synthetic phantom scan of the benchmark's size (mrseg.phantom)."""
    from mrseg.io import write_image
    from mrseg.io.image import Geometry
    from mrseg.phantom.anatomy import default_grid, generate_anatomy
    from mrseg.phantom.synthesis import SynthesisOptions, synthesize

    shape, spacing, modality, sequence = {
        "mr": ((80, 256, 256), (1.5, 1.5, 3.0), "mr", "t1_in"),
        "ct": ((300, 512, 512), (0.8, 0.8, 1.5), "ct", "contrast"),
    }[case]
    box = default_grid("abdomen", spacing=(2.0, 2.0, 2.0))
    centre = box.affine_lps @ np.array([*(np.array(box.shape[::-1]) - 1) / 2, 1.0])
    origin = centre[:3] - (np.array(shape[::-1]) - 1) / 2 * np.array(spacing)
    grid = Geometry(shape=shape, spacing=spacing, origin=tuple(origin), direction=box.direction)
    anatomy = generate_anatomy(seed=0, fov="trunk", grid=grid)
    image = synthesize(anatomy.tissues, SynthesisOptions(modality=modality, sequence=sequence), seed=0)
    path = folder / f"{case}.nii.gz"
    write_image(image, path)
    return path


def _tree_pss_kb(root_pid: int) -> int:
    """PSS of a process and all its descendants, in kB (Linux /proc)."""
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
            for task in os.listdir(f"/proc/{pid}/task"):
                stack.extend(int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak process-tree PSS in GB, and stderr of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    out: dict[str, str] = {}
    reader = threading.Thread(target=lambda: out.update(err=process.communicate()[1]))
    reader.start()
    while process.poll() is None:
        peak = max(peak, _tree_pss_kb(process.pid))
        time.sleep(0.2)
    reader.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.get('err', '')[-3000:]}")
    return wall, peak / 1024 / 1024, out.get("err", "")


def tile_cost(model: Path) -> float:
    """TFLOP of the convolutions in one forward pass over a tile of the model's patch size."""
    import torch
    from bench_tile_levers import conv_flops

    from mrseg.model import available_folds, load_model

    loaded = load_model(model, folds=available_folds(model)[:1])
    network = loaded.build_networks("cpu")[0]
    tile = torch.zeros(1, loaded.num_input_channels, *loaded.configuration.patch_size)
    return conv_flops(network, tile) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model folder (make_mrsegmentator_like_model.py)")
    parser.add_argument("--cases", nargs="+", default=["mr", "ct"], choices=["mr", "ct"])
    parser.add_argument("--modes", nargs="+", default=["fast", "default"], choices=list(MODES))
    args = parser.parse_args()

    from mrseg.io import read_image
    from parity import agreement

    env = {**os.environ, "MRSEG_WEIGHTS_PATH": str(args.model.resolve())}
    tile_tflop = tile_cost(args.model)
    conv = json.loads(subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tile_levers.py"), "--variant",
                                      "conv"], capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    rows = []
    official: dict[tuple[str, tuple[str, ...]], tuple[float, float, Path]] = {}
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        for case in args.cases:
            inputs = work / f"in_{case}"
            inputs.mkdir()
            make_input(case, inputs)
            for mode in args.modes:
                theirs_args, ours_args = MODES[mode]
                out_theirs, out_ours = work / f"theirs_{case}_{mode}", work / f"ours_{case}_{mode}"
                key = (case, tuple(theirs_args))
                if key not in official:  # modes that differ only on mrseg's side share one official run
                    official[key] = run([sys.executable, str(LAUNCHER), "-i", str(inputs), "-o", str(out_theirs),
                                         "--cpu_only", "--no_tqdm", *theirs_args], env)[:2] + (out_theirs,)
                t_wall, t_mem, out_theirs = official[key]
                o_wall, o_mem, _ = run([sys.executable, "-m", "mrseg", "-v", "segment", str(inputs), "-o",
                                          str(out_ours), "--model", str(args.model), "--no-progress", *ours_args], env)
                # The run record says what ran: tiles, per-stage seconds, the precision used and the folds.
                (record_path,) = out_ours.glob("mrseg_run_*.json")
                record = json.loads(record_path.read_text())
                (case_record,) = record["cases"]
                timings = case_record["timings"]
                passes = case_record["tiles"] * len(record["model"]["folds"])
                predict = timings.get("predict", 0.0)
                gflops = passes * tile_tflop * 1000 / predict if passes and predict else float("nan")
                precision = record["settings"]["precision"]
                stages = ", ".join(f"{k} {timings[k]:.1f}" for k in ("preprocess", "predict", "export") if k in timings)
                equal, dice = agreement(read_image(out_ours / f"{case}_seg.nii.gz").array,
                                        read_image(out_theirs / f"{case}_seg.nii.gz").array, min_voxels=10)
                min_dice = min(dice.values(), default=float("nan"))
                rows.append((case, mode, precision, t_wall, o_wall, t_mem, o_mem, equal, min_dice, gflops, stages))
                print(rows[-1], flush=True)

    print(f"\nnetwork: {tile_tflop * 1000:.0f} GFLOP per tile; best single Conv3d here: fp32 {conv['fp32']:.0f} "
          f"GFLOP/s, bf16 {conv['bf16']:.0f} GFLOP/s")
    print(f"{'case':4s} {'mode':13s} {'precision':9s} {'official s':>10s} {'mrseg s':>8s} {'speed-up':>8s} "
          f"{'official GB':>11s} {'mrseg GB':>8s} {'mem ratio':>9s} {'equal %':>8s} {'min Dice':>8s} "
          f"{'GFLOP/s':>8s}  mrseg stages (s)")
    for case, mode, precision, tw, ow, tm, om, eq, md, gf, stages in rows:
        print(f"{case:4s} {mode:13s} {precision:9s} {tw:10.1f} {ow:8.1f} {tw / ow:8.2f} {tm:11.2f} {om:8.2f} "
              f"{om / tm:9.2f} {100 * eq:8.3f} {md:8.4f} {gf:8.0f}  {stages}")


if __name__ == "__main__":
    main()
