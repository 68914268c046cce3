"""Cohort runs against ``mrseg segment`` over the same files, side by side in one run.

    python benchmarks/bench_cohort.py --cases 24 --spacing 3

Makes a synthetic cohort (phantom MR cases, several sequences, abdomen and trunk), then runs, each
as its own process on an otherwise idle machine:

- ``mrseg segment`` with ``--statistics`` (the cohort always writes statistics) and all cores;
- ``mrseg cohort run`` with 1 worker × all cores, and with 2 workers × half the cores.

Prints wall time, cases per minute, the ratio to ``mrseg segment`` (the goal: a cohort is at most
10 % slower on the same cores) with and without the quality control a cohort run ends with, the
scheduling overhead per case (wall time minus the workers' time in cases, per case: cluster
start, model load, QC and scheduling, spread over the cases), and the driver's peak resident
memory (its own process, without the workers). The model is the bundled demo model unless ``--model`` names another.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def peak_rss(pid: int, stop: threading.Event, result: dict) -> None:
    """Poll one process's resident memory (not its children's) until ``stop``."""
    import psutil

    try:
        process = psutil.Process(pid)
        while not stop.is_set():
            result["peak"] = max(result.get("peak", 0), process.memory_info().rss)
            time.sleep(0.05)
    except psutil.NoSuchProcess:
        pass


def timed(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; returns (wall seconds, the process's peak RSS in GB, its stdout)."""
    clock = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, memory = threading.Event(), {}
    watcher = threading.Thread(target=peak_rss, args=(process.pid, stop, memory))
    watcher.start()
    out, err = process.communicate()
    stop.set()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - clock, memory.get("peak", 0) / 1e9, out


def case_seconds(out: Path) -> float:
    """The workers' time in cases, from the attempts log."""
    total = 0.0
    for line in (out / "cohort_attempts.jsonl").read_text().splitlines():
        if line.strip():
            event = json.loads(line)
            if event["event"] == "end":
                total += event["seconds"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--spacing", type=float, default=3.0, help="voxel size of the synthetic cases (mm)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    from cohort_factory import phantom_cohort

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    inputs = work / "in"
    if not inputs.is_dir():
        phantom_cohort(inputs, args.cases, spacing=args.spacing)
    mrseg = [sys.executable, "-m", "mrseg"]
    half = max(1, args.cores // 2)
    runs = {
        "mrseg segment": [*mrseg, "segment", str(inputs), "-o", str(work / "segment"), "--model", args.model,
                          "--statistics", "--threads", str(args.cores), "--no-progress"],
        "cohort 1 worker": [*mrseg, "cohort", "run", str(inputs), "-o", str(work / "cohort1"), "--model", args.model,
                            "--workers", "1", "--threads-per-worker", str(args.cores), "--no-progress"],
        "cohort 2 workers": [*mrseg, "cohort", "run", str(inputs), "-o", str(work / "cohort2"), "--model",
                             args.model, "--workers", "2", "--threads-per-worker", str(half), "--no-progress"],
    }
    print(f"{args.cases} cases at {args.spacing} mm, model {args.model}, {args.cores} cores; work folder {work}")
    print(f"{'run':<18} {'wall s':>7} {'cases/min':>9} {'vs segment':>10} {'QC s':>5} {'vs segment, QC apart':>20} "
          f"{'overhead s/case':>15} {'driver GB':>9}")
    baseline = None
    for name, command in runs.items():
        wall, memory, stdout = timed(command)
        baseline = baseline or wall
        rate = 60.0 * args.cases / wall
        overhead = qc = apart = ""
        if name.startswith("cohort"):
            qc_seconds = float(stdout.split("quality control: ")[1].split("\n")[0].rsplit(", ", 1)[1].split(" s")[0])
            qc, apart = f"{qc_seconds:.1f}", f"{(wall - qc_seconds) / baseline:.2f}"
            out = Path(command[command.index("-o") + 1])
            workers = int(command[command.index("--workers") + 1])
            overhead = f"{(wall - case_seconds(out) / workers) / args.cases:.2f}"
            rows = list(csv.DictReader((out / "cohort_manifest.csv").open()))
            assert all(r["status"] == "done" for r in rows), "a case did not finish"
        print(f"{name:<18} {wall:7.1f} {rate:9.1f} {wall / baseline:10.2f} {qc:>5} {apart:>20} {overhead:>15} "
              f"{memory:9.2f}")


if __name__ == "__main__":
    main()
