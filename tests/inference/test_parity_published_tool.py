"""mrseg against the published MRSegmentator 2.0.0 CLI on the same model folder and images.

The published tool runs unmodified through benchmarks/published_mrsegmentator.py, which only
works around nnU-Net's trainer lookup on CPU-only torch (see that file).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrseg.cli import main as mrseg_main
from mrseg.io import read_image, write_image
from parity import assert_agrees, phantom_image

LAUNCHER = Path(__file__).resolve().parents[2] / "benchmarks" / "published_mrsegmentator.py"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("mrsegmentator") is None,
    reason="mrsegmentator not installed (pip install --no-deps mrsegmentator==2.0.0)",
)]


@pytest.fixture(scope="module")
def published_setup(model_dir, tmp_path_factory):
    """A 5-fold model named like the published one, and RAS, LPS and PIL inputs."""
    folder = model_dir(num_folds=5, trainer_name="nnUNetTrainerNoMirroring", configuration="3d_fullres_bs8")
    inputs = tmp_path_factory.mktemp("published_inputs")
    for code in ("RAS", "LPS", "PIL"):
        write_image(phantom_image(code, spacing=(1.2, 1.3, 4.0), seed=11), inputs / f"case_{code}.nii.gz")
    return folder, inputs


def run_published(folder: Path, inputs: Path, out: Path, *extra: str) -> None:
    env = {**os.environ, "MRSEG_WEIGHTS_PATH": str(folder)}
    command = [sys.executable, str(LAUNCHER), "-i", str(inputs), "-o", str(out), "--cpu_only",
               "--nproc", "1", "--nproc_export", "1", "--no_tqdm", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def published_fast(published_setup, tmp_path_factory) -> Path:
    """The published tool's --fast labels, for the two tests that compare against them."""
    folder, inputs = published_setup
    out = tmp_path_factory.mktemp("published_fast")
    run_published(folder, inputs, out, "--fast")
    return out


def assert_same_labels(ours: Path, theirs: Path) -> None:
    for code in ("RAS", "LPS", "PIL"):
        their_labels = read_image(theirs / f"case_{code}_seg.nii.gz")
        our_labels = read_image(ours / f"case_{code}_seg.nii.gz")
        assert our_labels.geometry.same_grid(their_labels.geometry)
        assert_agrees(our_labels.array, their_labels.array)


def test_same_labels_as_published_mrsegmentator(published_setup, tmp_path):
    """The five folds at the default step. One fold alone is compared by the --fast tests below
    (fold 0, step 0.8); a separate fold-0 run at step 0.5 added 26 s and nothing they miss."""
    folder, inputs = published_setup
    run_published(folder, inputs, tmp_path / "published")
    assert mrseg_main(["segment", str(inputs), "-o", str(tmp_path / "ours"), "--model", str(folder),
                       "--no-progress", "--precision", "fp32"]) == 0
    assert_same_labels(tmp_path / "ours", tmp_path / "published")


@pytest.mark.parametrize("precision", [["--precision", "fp32"], []], ids=["fp32", "default"])
def test_fast_mode_gives_the_labels_of_published_mrsegmentator(published_setup, published_fast, tmp_path, precision):
    """--fast both ways; with no --precision given, the default (fp32 on every CPU since issue 16)
    must meet the same exact-mode bar."""
    folder, inputs = published_setup
    assert mrseg_main(["segment", str(inputs), "-o", str(tmp_path / "ours"), "--model", str(folder),
                       "--no-progress", "--fast", *precision]) == 0
    assert_same_labels(tmp_path / "ours", published_fast)
