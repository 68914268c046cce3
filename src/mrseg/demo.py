"""``mrseg demo``: the whole job offline, with the bundled demo model and a case whose truth is known.

Synthesise a case with the phantom engine (or take an image file), segment it with the demo
model, write the label map, and score it per class against the known truth: the phantom's own
labels, or a label file given with the image (``NAME_labels.nii.gz`` beside it, as ``mrseg
phantom`` writes them, or ``truth=``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.evaluation.metrics import dice
from mrseg.io.files import case_name, read_image


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files and how well the labels match the truth."""

    image: Path
    labels: Path
    truth: Path | None
    dice: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else float("nan")


def run_demo(
    out_dir: str | os.PathLike[str],
    image: str | os.PathLike[str] | None = None,
    *,
    truth: str | os.PathLike[str] | None = None,
    seed: int = 7,
    modality: str = "mr",
    sequence: str = "t1_in",
    model: str = "demo",
    min_voxels: int = 10,
) -> DemoResult:
    """Run the demo; see the module docstring.

    Args:
        out_dir: output folder (created).
        image: an image file to segment instead of a synthesised case.
        truth: its 40-class label map; default ``NAME_labels.nii.gz`` beside the image if present.
        seed, modality, sequence: the synthesised case (``mrseg phantom``'s options).
        model: the model (``demo``, or any model folder).
        min_voxels: classes smaller than this in the truth are not scored.

    Raises:
        InputError / ModelError: bad input, or the demo model missing from the installation.
    """
    from mrseg.model.store import resolve_model_folder
    from mrseg.phantom.cases import make_case, write_case
    from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, clean_output_folder, load, process_case

    # The model first: a missing model costs nothing.
    loaded = load(ModelSpec(resolve_model_folder(model), name=str(model), precision="fp32"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth_path: Path | None
    if image is None:
        case = make_case(seed=seed, modality=modality, sequence=sequence, fov="trunk", spacing=(3.0, 3.0, 3.0))
        paths = write_case(case, out, f"demo_{modality}_{sequence}_{seed:03d}")
        image_path, truth_path = paths["image"], paths["labels"]
    else:
        image_path = Path(image)
        beside = image_path.parent / f"{case_name(image_path)}_labels.nii.gz"
        truth_path = Path(truth) if truth is not None else (beside if beside.is_file() else None)
    outputs = OutputSpec(out, output_type="nifti", overwrite=True)
    outcome = process_case(CaseSpec.of(image_path), loaded, outputs, keep_labels=True)
    clean_output_folder(out)
    if outcome.record.status == "failed" or outcome.labels is None:
        raise InputError(outcome.record.error or f"{image_path}: not segmented")
    labels = outcome.labels
    scores: dict[str, float] = {}
    if truth_path is not None:
        reference = read_image(truth_path)
        if not reference.geometry.same_grid(labels.geometry, atol=1e-3):
            raise InputError(f"{truth_path}: the truth is not on the grid of {image_path}")
        scores = per_class_dice(labels.array, reference.array, min_voxels=min_voxels)
    seconds = sum(v for k, v in outcome.record.timings.items()
                  if k in ("preprocess", "predict", "export", "postprocess"))
    return DemoResult(image_path, outputs.paths(case_name(image_path))["labels"], truth_path,
                      scores, seconds)


def per_class_dice(predicted: np.ndarray, truth: np.ndarray, *, min_voxels: int = 10) -> dict[str, float]:
    """Dice of every 40-class label with at least ``min_voxels`` voxels in ``truth``, by class name."""
    scores = {}
    for c in BASE.classes:
        ref = truth == c.index
        if int(ref.sum()) >= min_voxels:
            scores[c.name] = dice(predicted == c.index, ref)
    return scores


def format_scores(result: DemoResult) -> str:
    """The per-class Dice table as text."""
    if not result.dice:
        return "no truth to compare with: give a label map (--truth) to get per-class Dice"
    lines = [f"{'class':32s} {'Dice':>6s}"]
    lines += [f"{name:32s} {value:6.3f}" for name, value in result.dice.items()]
    lines.append(f"{'mean over ' + str(len(result.dice)) + ' classes':32s} {result.mean_dice:6.3f}")
    return "\n".join(lines)
