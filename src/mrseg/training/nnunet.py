"""Planning, preprocessing and training through the real nnunetv2 library.

nnU-Net reads its three folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``)
from the environment once, when it is first imported, and trains with worker processes of
its own. So each step runs in a fresh Python process (:mod:`mrseg.training.worker`) with those
variables set: the caller's process (which may have imported nnunetv2 already, with other
folders) is left alone, and a cluster can run each fold as its own job.

What nnU-Net offers as subclasses per value (epochs, iterations, ...) is passed here as
:class:`TrainingOptions` and set on nnU-Net's own trainer before it starts. The trainer class
is nnU-Net's ``nnUNetTrainerNoMirroring`` by default, as for the published weights (left and
right structures must not be mirrored into each other), or ``nnUNetTrainer`` with
``mirroring=True``; the checkpoint names it, so nnU-Net's own predictor loads the result.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrseg.errors import InputError, ModelError
from mrseg.io.files import write_bytes_atomic

log = logging.getLogger(__name__)

PLANS_NAME = "mrsegPlans"
"""Plans identifier of the plans written here (nnU-Net's default planner plus the overrides)."""

CONFIGURATION = "3d_fullres"
"""The nnU-Net configuration trained (the only one mrseg predicts with)."""

LOSSES = ("dice_ce", "dice_topk10")
"""Training losses, each nnU-Net's own (:attr:`TrainingOptions.loss`)."""

NNUNET_SCALE_AUGMENTATION = (0.2, 0.7, 1.4)
"""nnU-Net's own zoom augmentation: probability per patch and the range of the factor."""

SCALE_AUGMENTATION_LIMITS = (0.5, 2.0)
"""The smallest and largest zoom factor :attr:`TrainingOptions.scale_augmentation` may draw."""


@dataclass(frozen=True)
class PlanningOptions:
    """How nnU-Net's default planner is steered; None keeps its choice.

    Attributes:
        spacing: target spacing (z, y, x) in mm.
        patch_size: tile size (z, y, x); each axis must divide by the product of the
            network's strides along it.
        base_features: features of the first stage (nnU-Net: 32), doubled per stage.
        max_features: cap on the features per stage (nnU-Net: 320 in 3-D).
        batch_size: training batch size.
        memory_target_gb: the planner's GPU memory target (nnU-Net: 8), which sets the patch size.
        processes: worker processes of the integrity check, fingerprint and preprocessing (nnU-Net: 8).
        intensity_samples_per_case: foreground voxels each case gives to the dataset's intensity
            statistics (CT normalisation). nnU-Net draws 10^8 in all, with replacement, whatever the
            dataset's size: 2·10^7 voxels for each of 5 small cases, seconds of sampling and sorting
            and gigabytes to learn nothing more. At most this many per case (None: nnU-Net's share);
            datasets of 100 cases or more are not affected.
    """

    spacing: tuple[float, float, float] | None = None
    patch_size: tuple[int, int, int] | None = None
    base_features: int | None = None
    max_features: int | None = None
    batch_size: int | None = None
    memory_target_gb: float | None = None
    processes: int = 2
    intensity_samples_per_case: int | None = 1_000_000


@dataclass(frozen=True)
class TrainingOptions:
    """One fold's training run on nnU-Net's trainer.

    Attributes:
        epochs: epochs (nnU-Net: 1000).
        iterations_per_epoch: training batches per epoch (nnU-Net: 250).
        val_iterations_per_epoch: validation batches per epoch (nnU-Net: 50).
        initial_lr: SGD learning rate at the start of the poly schedule (nnU-Net: 0.01).
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        seed: seeds Python, NumPy and torch in the training process, and nnU-Net's augmentation
            workers (which nnU-Net starts unseeded); None leaves them. With 0 or 1 augmentation
            workers a CPU run gives the same weights again.
        mirroring: mirror augmentation (and mirrored inference); off by default.
        augmentation_processes: data augmentation worker processes (0: in the training process).
        init_from: a model folder whose weights start the training (transfer learning).
        init_fold: which fold of ``init_from`` to start from (0–4, or ``"all"``).
        validate: predict the fold's validation cases at the end (nnU-Net's own validation).
        save_every: write checkpoint_latest.pth every this many epochs.
        loss: ``"dice_ce"`` (nnU-Net's default: soft Dice plus cross-entropy) or ``"dice_topk10"``
            (nnU-Net's ``nnUNetTrainerDiceTopK10Loss``: soft Dice plus the cross-entropy of the 10 %
            hardest voxels of each batch). A class of a few voxels among ~10^5 gives plain
            cross-entropy almost no gradient, and once its softmax is near zero the Dice term gives
            none either; its voxels are always among the hardest 10 %. The checkpoint still names
            the trainer (the loss plays no part in predicting).
        class_weights: class name → weight of its voxels in the cross-entropy term (every other
            class 1; nnU-Net's own ``weight`` of its cross-entropy, normalised by the weights of
            each batch's voxels). For a class the network has given up on: its softmax near zero
            leaves the Dice term no gradient, and its few voxels give plain cross-entropy little.
            The network then leans towards that class by about the weight where it is unsure.
        scale_augmentation: ``(probability, low, high)`` of the zoom in nnU-Net's spatial
            augmentation: that share of the patches is resampled by one factor drawn uniformly
            from ``[low, high]`` (larger factors show smaller structures). None keeps nnU-Net's
            own (:data:`NNUNET_SCALE_AUGMENTATION`: 0.2, 0.7-1.4). A network trained on
            subjects of one build learns their size; more zoom shows it more sizes.
        resume: continue the fold's interrupted run from its ``checkpoint_latest.pth`` (weights,
            optimizer, epoch, learning-rate schedule and logs, as nnU-Net's ``--c``); a fresh start
            where there is none, nothing to do where the fold is trained (``fold_is_trained``). Long
            CPU runs are done in stages this way: a killed run loses at most ``save_every`` epochs.
            A fresh start (no ``resume``) first removes the checkpoints an earlier run left in the
            fold folder, so a stopped run is never taken for that earlier, finished one.
    """

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    device: str = "cpu"
    seed: int | None = 0
    mirroring: bool = False
    augmentation_processes: int = 0
    init_from: str | None = None
    init_fold: int | str = 0
    validate: bool = True
    save_every: int = 50
    resume: bool = False
    loss: str = "dice_ce"
    class_weights: dict[str, float] = field(default_factory=dict)
    scale_augmentation: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"unknown training loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if self.scale_augmentation is not None:
            check_scale_augmentation(self.scale_augmentation)
        for name, weight in self.class_weights.items():
            if not (np.isfinite(weight) and weight > 0):
                raise InputError(f"class weight {weight} for {name}: give a positive number (1 leaves the class as is)")

    @property
    def trainer_name(self) -> str:
        return "nnUNetTrainer" if self.mirroring else "nnUNetTrainerNoMirroring"


@dataclass(frozen=True)
class NnunetFolders:
    """nnU-Net's three folders."""

    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: str | os.PathLike[str]) -> NnunetFolders:
        """``root/nnUNet_raw``, ``root/nnUNet_preprocessed``, ``root/nnUNet_results``."""
        root = Path(root)
        return cls(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results")

    def environment(self) -> dict[str, str]:
        return {"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                "nnUNet_results": str(self.results)}


@dataclass
class StepResult:
    """What a worker step reported back (its JSON), plus its log."""

    report: dict[str, Any] = field(default_factory=dict)
    log: str = ""


def plan_and_preprocess(folders: NnunetFolders, dataset_id: int, options: PlanningOptions = PlanningOptions(),
                        *, transfer_from: str | os.PathLike[str] | None = None) -> Path:
    """Fingerprint, plan (nnU-Net's default planner with ``options``) and preprocess a raw dataset.

    With ``transfer_from`` (a model folder) the network, patch size and spacing are taken from
    that model's plans instead, so its weights fit (the published model was fine-tuned on MR
    from a CT model planned this way); a spacing, patch size or batch size in ``options`` is
    kept (the weights fit any), features in ``options`` must be that network's
    (:func:`transferred_plans`).

    Returns:
        The plans file written (``{PLANS_NAME}.json`` in the preprocessed dataset folder).

    Raises:
        InputError: no such raw dataset, or overrides the network cannot take.
    """
    if not raw_dataset_files(folders, dataset_id):  # before seconds of nnU-Net imports
        raise InputError(f"no nnU-Net dataset with id {dataset_id} in {folders.raw}: build it first "
                         "(mrseg dataset build)")
    if transfer_from is not None:  # a refusal now, not after the fingerprint
        source = source_plans(transfer_from)
        transferred_plans(source, source, options)
    spec = {"step": "plan", "dataset_id": dataset_id, "options": asdict(options),
            "transfer_from": str(transfer_from) if transfer_from else None}
    result = run_step(spec, folders)
    return Path(result.report["plans"])


def extend_splits(folders: NnunetFolders, dataset_id: int, *, seed: int = 0) -> list[str]:
    """Keep a dataset's five-fold split as it is and spread cases added since over the folds.

    nnU-Net draws ``splits_final.json`` once, on the first training, and reuses it: cases added
    to a dataset later would never be trained on, and drawing a new split would move cases a
    model was trained on into validation. Here every case keeps its fold, cases gone from the
    dataset leave the split, and the new ones are shuffled (``seed``) and dealt to the folds'
    validation sets in turn (so each new case is trained on in four folds). Without a split
    file nothing is written: nnU-Net draws one on the first training.

    Returns:
        The cases added to the split.
    """
    found = sorted(folders.preprocessed.glob(f"Dataset{dataset_id:03d}_*/dataset.json"))
    if not found:
        raise InputError(f"no preprocessed dataset {dataset_id} under {folders.preprocessed}: plan it first")
    dataset = found[0]
    split_file = dataset.parent / "splits_final.json"
    if not split_file.is_file():
        return []
    ending = json.loads(dataset.read_text())["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (dataset.parent / "gt_segmentations").glob(f"*{ending}"))
    splits = json.loads(split_file.read_text())
    present = set(cases)
    known = {case for fold in splits for case in fold["val"]}
    added = [case for case in cases if case not in known]
    order = np.random.default_rng(seed).permutation(len(added))
    for rank, index in enumerate(order):
        splits[rank % len(splits)]["val"].append(added[index])
    validation = [[case for case in fold["val"] if case in present] for fold in splits]
    splits = [{"train": sorted(case for other, val in enumerate(validation) if other != k for case in val),
               "val": sorted(val)} for k, val in enumerate(validation)]
    write_bytes_atomic(split_file, json.dumps(splits, indent=1))
    return added


def train_fold(folders: NnunetFolders, dataset_id: int, fold: int | str,
               options: TrainingOptions = TrainingOptions()) -> Path:
    """Train one fold (0–4, or ``"all"``) with nnU-Net's trainer; returns the model folder.

    The model folder is nnU-Net's results folder of the trainer, plans and configuration
    (dataset.json, plans.json, fold_k/checkpoint_final.pth), loadable by ``mrseg segment``
    and by nnU-Net's predictor.
    """
    check_training(folders, dataset_id, [fold], options)
    if options.resume and (trained := finished_model(folders, dataset_id, fold, options.trainer_name)):
        log.info("%s: fold %s is trained (checkpoint_final.pth); nothing to resume", trained, fold)
        return trained  # no nnU-Net process (seconds of imports) to find that out
    spec = {"step": "train", "dataset_id": dataset_id, "fold": fold, "options": asdict(options)}
    result = run_step(spec, folders)
    return Path(result.report["model_folder"])


def finished_model(folders: NnunetFolders, dataset_id: int, fold: int | str, trainer_name: str) -> Path | None:
    """The model folder where nnU-Net's trainer finished this fold (:func:`fold_is_trained`), if it did."""
    for dataset in sorted(folders.results.glob(f"Dataset{dataset_id:03d}_*")):
        model = dataset / f"{trainer_name}__{PLANS_NAME}__{CONFIGURATION}"
        if fold_is_trained(model / f"fold_{fold}"):
            return model
    return None


def fold_is_trained(fold_folder: Path) -> bool:
    """Whether the last run in ``fold_folder`` finished: its ``checkpoint_final.pth`` is there and no
    ``checkpoint_latest.pth`` is newer. nnU-Net removes checkpoint_latest once it writes the final one,
    so a newer one belongs to a later run that was stopped (in a folder where an earlier mrseg
    started a fresh run without clearing the previous run's final checkpoint)."""
    final = fold_folder / "checkpoint_final.pth"
    latest = fold_folder / "checkpoint_latest.pth"
    if not final.is_file():
        return False
    return not latest.is_file() or latest.stat().st_mtime_ns <= final.stat().st_mtime_ns


def raw_dataset_files(folders: NnunetFolders, dataset_id: int) -> list[Path]:
    """The ``dataset.json`` of each raw dataset with this id (``Dataset{id:03d}_*``; one, normally)."""
    return sorted(folders.raw.glob(f"Dataset{dataset_id:03d}_*/dataset.json"))


def check_training(folders: NnunetFolders, dataset_id: int, folds: Sequence[int | str],
                   options: TrainingOptions) -> None:
    """What the raw dataset can refuse before any process starts (planning takes a while).

    Folds 0–4 split the cases five ways: fewer than 5 cases is refused. A class weight must name
    one of the dataset's classes.
    """
    for dataset_json in raw_dataset_files(folders, dataset_id):
        dataset = json.loads(dataset_json.read_text())
        cases = dataset.get("numTraining")
        if any(fold != "all" for fold in folds) and isinstance(cases, int) and cases < 5:
            raise InputError(f"{dataset_json.parent.name} has {cases} cases; five-fold cross-validation needs at "
                             "least 5: add cases or train fold 'all'")
        check_class_weights(options.class_weights, dataset.get("labels", {}), dataset_json.parent.name)


def class_weights_from_pairs(pairs: Sequence[Sequence[str]]) -> dict[str, float]:
    """``--class-weight CLASS WEIGHT`` pairs as class name → weight (the last of a repeated class wins).

    Raises:
        InputError: naming every weight that is not a number.

    Example:
        >>> class_weights_from_pairs([("right_adrenal_gland", "10"), ("left_adrenal_gland", "10")])
        {'right_adrenal_gland': 10.0, 'left_adrenal_gland': 10.0}
    """
    weights: dict[str, float] = {}
    bad = []
    for name, text in pairs:
        try:
            weights[name] = float(text)
        except ValueError:
            bad.append(text)
    if bad:
        raise InputError(f"--class-weight CLASS WEIGHT: the weight must be a number, got {', '.join(bad)}")
    return weights


def check_scale_augmentation(setting: Sequence[float]) -> None:
    """Refuse a zoom augmentation ``(probability, low, high)`` that nnU-Net cannot draw from, in one line."""
    if len(setting) != 3:
        raise InputError(f"scale augmentation: give a probability and a factor range (3 numbers), got {len(setting)}")
    probability, low, high = (float(v) for v in setting)
    least, most = SCALE_AUGMENTATION_LIMITS
    if not 0 <= probability <= 1:
        raise InputError(f"scale augmentation: the probability must lie in [0, 1], got {probability:g}")
    if not least <= low <= high <= most:
        raise InputError(f"scale augmentation: the factors must satisfy {least:g} <= low <= high <= {most:g}, "
                         f"got {low:g} and {high:g}")


def check_class_weights(weights: dict[str, float], labels: dict[str, Any], dataset: str) -> None:
    """Every weighted class must be one of the dataset's (``labels``: its dataset.json's), and each
    label one class: region-based labels (lists) train with per-region binary cross-entropy, which
    has no class weights."""
    if weights and any(not isinstance(value, int) for value in labels.values()):
        raise InputError(f"class weights: {dataset} has region-based labels, whose loss has no class "
                         "weights; train without --class-weight")
    classes = [name for name in labels if name != "background"]
    unknown = sorted(set(weights) - set(classes))
    if unknown:
        raise InputError(f"class weight for {', '.join(unknown)}: {dataset} has no such class "
                         f"(its classes: {', '.join(classes)})")


def run_step(spec: dict[str, Any], folders: NnunetFolders) -> StepResult:
    """Run one worker step in a fresh process, which reports (JSON) through a file; the worker
    stops by itself should this process be killed (:func:`mrseg.training.worker.stop_when_orphaned`).

    Raises:
        InputError / ModelError: as the worker reported them (the message names the cause).
        RuntimeError: the worker died otherwise; the message ends with its log.
    """
    for path in (folders.raw, folders.preprocessed, folders.results):
        path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **folders.environment())
    options = spec.get("options", {})
    # Augmentation workers while training; the planner also sets torch's threads from it (so >= 1).
    workers = options.get("augmentation_processes", 0) if spec["step"] == "train" else options.get("processes", 1)
    env["nnUNet_n_proc_DA"] = str(workers if spec["step"] == "train" else max(1, workers))
    env.setdefault("nnUNet_compile", "false")  # torch.compile on a CPU trainer costs more than it gains
    # nnU-Net's pools (integrity check, fingerprint, validation export) spawn 8 processes by default,
    # each importing torch; no more than the machine has cores
    env.setdefault("nnUNet_def_n_proc", str(max(1, min(8, os.cpu_count() or 1))))
    with tempfile.TemporaryDirectory(prefix="mrseg-step-") as tmp:
        spec_file, report_file = Path(tmp) / "spec.json", Path(tmp) / "report.json"
        spec_file.write_text(json.dumps({**spec, "report": str(report_file), "caller_pid": os.getpid()}))
        done = subprocess.run([sys.executable, "-m", "mrseg.training.worker", str(spec_file)], env=env,
                              capture_output=True, text=True)
        output = done.stdout + done.stderr
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    if report.get("error"):
        kind = {"InputError": InputError, "ModelError": ModelError}.get(report.get("error_type", ""), RuntimeError)
        raise kind(report["error"])
    if done.returncode != 0:
        raise RuntimeError(f"nnU-Net step {spec['step']!r} failed (exit {done.returncode}):\n{output[-4000:]}")
    return StepResult(report, output)


def check_transfer_compatible(source_plans: dict[str, Any], target_plans: dict[str, Any],
                              *, source_labels: dict[str, Any], target_labels: dict[str, Any]) -> list[str]:
    """Whether a network trained with ``source_plans`` can start one with ``target_plans``.

    Every layer is copied when the label sets (dataset.json ``labels``) are the same; otherwise
    the segmentation head, whose outputs mean other classes, starts from random weights.

    Returns:
        Notes for the log: empty when everything is copied, else why the head is not.

    Raises:
        ModelError: different architecture, stages, features, kernels, strides or input
            channels, naming the first difference and the fix.
    """
    source = source_plans["configurations"][CONFIGURATION]["architecture"]
    target = target_plans["configurations"][CONFIGURATION]["architecture"]
    if source["network_class_name"] != target["network_class_name"]:
        raise ModelError(
            f"cannot start from a {source['network_class_name']} model: this dataset's plans build a "
            f"{target['network_class_name']}; plan with transfer_from=THAT_MODEL (mrseg train --init-from) "
            "so the plans copy its network"
        )
    keys = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
            "n_conv_per_stage_decoder", "conv_op", "norm_op")
    for key in keys:
        if source["arch_kwargs"].get(key) != target["arch_kwargs"].get(key):
            raise ModelError(
                f"cannot start from this model: its network differs in {key} "
                f"({source['arch_kwargs'].get(key)} vs {target['arch_kwargs'].get(key)}); plan the dataset "
                "with transfer_from=THAT_MODEL (mrseg train --init-from) so the plans copy its network"
            )
    if source_labels == target_labels:
        return []
    if len(source_labels) != len(target_labels):
        why = f"the source model predicts {len(source_labels)} labels and this dataset has {len(target_labels)}"
    else:
        why = "the source model's labels are other classes (or in another order) than this dataset's"
    return [f"{why}: the segmentation head (the last 1x1x1 convolutions) does not fit and starts from random "
            "weights; every other layer is copied"]


def transfer_plans(source_plans: dict[str, Any], target_plans: dict[str, Any],
                   *, spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """``target_plans`` with the source model's network, patch size and spacing (3d_fullres).

    Args:
        spacing: train at this spacing (z, y, x, before nnU-Net's transpose) instead of the
            source's. A convolutional network's weights fit any spacing, and the images are
            resampled to it: a model trained at 6 mm can start one at 4 mm (its patch, in
            voxels, then covers less of the body).
    """
    plans = json.loads(json.dumps(target_plans))
    source = source_plans["configurations"][CONFIGURATION]
    config = plans["configurations"][CONFIGURATION]
    for key in ("architecture", "patch_size", "spacing", "batch_size"):
        config[key] = json.loads(json.dumps(source[key]))
    plans["transpose_forward"] = source_plans["transpose_forward"]
    plans["transpose_backward"] = source_plans["transpose_backward"]
    if spacing is not None:
        config["spacing"] = [float(spacing[axis]) for axis in plans["transpose_forward"]]
    return plans


def source_plans(model_folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The nnU-Net plans of a model folder training starts from.

    Raises:
        InputError: no readable ``plans.json`` with the 3d_fullres configuration.
    """
    path = Path(model_folder) / "plans.json"
    try:
        plans = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the plans of the model to start from ({err})") from err
    if CONFIGURATION not in plans.get("configurations", {}):
        raise InputError(f"{model_folder}: its plans.json has no {CONFIGURATION} configuration")
    return plans


def transferred_plans(source_plans: dict[str, Any], target_plans: dict[str, Any],
                      options: PlanningOptions) -> dict[str, Any]:
    """The plans of a training that starts from ``source_plans``' weights, with ``options``.

    The network comes from the source (its weights must fit); the spacing, a patch size and a
    batch size asked for in ``options`` apply on top of it, the patch checked against the source
    network's strides. Features asked for must be the source network's.

    Raises:
        InputError: features other than the source network's, or a patch its strides do not divide.
    """
    source = source_plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]["features_per_stage"]
    for asked, has, flag in ((options.base_features, source[0], "base"), (options.max_features, max(source), "max")):
        if asked is not None and asked != has:
            raise InputError(f"{flag} features {asked} differ from the network training starts from "
                             f"({'-'.join(map(str, source))}): leave them out or give {has}")
    plans = transfer_plans(source_plans, target_plans, spacing=options.spacing)
    return apply_planning_overrides(plans, PlanningOptions(patch_size=options.patch_size,
                                                           batch_size=options.batch_size))


def apply_planning_overrides(plans: dict[str, Any], options: PlanningOptions) -> dict[str, Any]:
    """Apply the patch size, feature and batch overrides of ``options`` to nnU-Net's plans.

    Raises:
        InputError: a patch size the network's strides do not divide.
    """
    plans = json.loads(json.dumps(plans))
    config = plans["configurations"][CONFIGURATION]
    kwargs = config["architecture"]["arch_kwargs"]
    if options.base_features or options.max_features:
        base = options.base_features or kwargs["features_per_stage"][0]
        cap = options.max_features or max(kwargs["features_per_stage"])
        kwargs["features_per_stage"] = [min(cap, base * 2**i) for i in range(kwargs["n_stages"])]
    if options.patch_size:
        steps = [1, 1, 1]
        for stride in kwargs["strides"]:
            steps = [s * int(t) for s, t in zip(steps, stride)]
        bad = [p for p, s in zip(options.patch_size, steps) if p % s]
        if bad or len(options.patch_size) != 3:
            fitting = [max(s, round(p / s) * s) for p, s in zip(options.patch_size, steps)]
            raise InputError(
                f"patch size {list(options.patch_size)} does not fit the network: each axis must be a "
                f"multiple of {steps} (the product of its strides); try {fitting}"
            )
        config["patch_size"] = list(options.patch_size)
    if options.batch_size:
        config["batch_size"] = int(options.batch_size)
    return plans
