"""One nnU-Net step in its own process: ``python -m mrseg.training.worker SPEC.json``.

Started by :func:`mrseg.training.nnunet.run_step` with nnU-Net's folders in the environment.
The spec names the step (``plan`` or ``train``) and its arguments; the report (JSON) goes to
the file the spec names, errors included, so the caller can raise them with their message.
The spec also names the caller's pid: a worker whose caller is gone (killed by a signal, by the
out-of-memory killer) stops itself and the processes it started, rather than train on unseen.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from pathlib import Path
from typing import Any

from mrseg.errors import InputError, MrsegError

ORPHANED_EXIT = 3
"""The exit status of a worker that stopped because its caller was gone."""

INITIAL_CHECKPOINT = "checkpoint_initial.pth"
"""Written into the fold folder when training starts from another model: the starting weights."""


POOL_MODULES = [
    "nnunetv2.experiment_planning.verify_dataset_integrity",
    "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
    "nnunetv2.preprocessing.preprocessors.default_preprocessor",
    "nnunetv2.inference.export_prediction",
]
"""What nnU-Net's pools run (integrity check, fingerprint, preprocessing, validation export)."""


def stop_when_orphaned(caller_pid: int, every_s: float = 1.0) -> None:
    """Watch, from a daemon thread, that the process that started this one is still its parent;
    once it is not, kill the processes this one started (nnU-Net's augmentation workers) and exit.

    A caller killed with SIGTERM or SIGKILL does not take its child with it: the worker would
    train on, unseen, and write checkpoints into the fold folder that a rerun with ``--resume``
    is about to train in. The fork server, if any, exits by itself once this process is gone.
    """
    import multiprocessing
    import threading
    import time

    def watch() -> None:
        while os.getppid() == caller_pid:
            time.sleep(every_s)
        for child in multiprocessing.active_children():
            child.kill()
        os._exit(ORPHANED_EXIT)

    threading.Thread(target=watch, name="mrseg-stop-when-orphaned", daemon=True).start()


def start_pools_from_a_fork_server() -> None:
    """Have nnU-Net's "spawn" pools start their processes from a fork server instead.

    A spawned process imports nnU-Net and torch afresh: about 4 s on 2 cores for each pool, and
    planning starts three. The fork server is a fresh single-threaded process, as safe to start
    from as spawn, that imports them once (on first use) and forks each pool process from there.
    """
    import multiprocessing

    multiprocessing.set_forkserver_preload(POOL_MODULES)
    _answer_spawn_with(multiprocessing.get_context("forkserver"))


def run_pools_in_threads() -> None:
    """Have nnU-Net's "spawn" pools run as threads of this process instead.

    nnU-Net runs the integrity check, the fingerprint and the preprocessing in a pool even when
    it is given one process, and a pool process, spawned or forked from a fork server, first
    imports nnU-Net and torch (the fork server once, about 4 s on 2 cores). With one process
    there is nothing to run in parallel: a pool of one thread does the same work in order,
    in this process, which has imported them already.
    """
    from multiprocessing.pool import ThreadPool
    from types import SimpleNamespace

    _answer_spawn_with(SimpleNamespace(Pool=ThreadPool))


def _answer_spawn_with(context: Any) -> None:
    """Have ``multiprocessing.get_context("spawn")``, what nnU-Net's pools ask for, return
    ``context``; every other start method is left as it was."""
    import multiprocessing

    get_context = multiprocessing.get_context

    def instead_of_spawn(method: str | None = None) -> Any:
        return context if method == "spawn" else get_context(method)

    multiprocessing.get_context = instead_of_spawn  # type: ignore[assignment]


def _dataset_name(dataset_id: int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return str(maybe_convert_to_dataset_name(dataset_id))
    except RuntimeError as err:
        raise InputError(f"no nnU-Net dataset with id {dataset_id}: {err}") from err


def plan(spec: dict[str, Any]) -> dict[str, Any]:
    """Fingerprint, plan with nnU-Net's default planner, apply the overrides, preprocess."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset
    from nnunetv2.paths import nnUNet_preprocessed

    from mrseg.training.nnunet import (
        CONFIGURATION,
        PLANS_NAME,
        PlanningOptions,
        apply_planning_overrides,
        source_plans,
        transferred_plans,
    )

    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["options"].items()}
    options = PlanningOptions(**values)
    dataset_id = int(spec["dataset_id"])
    name = _dataset_name(dataset_id)
    # nnU-Net's default is 8 spawned processes for each of these steps, each importing torch: on a
    # small machine that start-up costs more than the work
    extract_fingerprint_dataset(dataset_id, _fingerprint_extractor(options.intensity_samples_per_case),
                                num_processes=options.processes, check_dataset_integrity=True,
                                clean=True, verbose=False, show_progress_bar=False)
    kwargs: dict[str, Any] = {"plans_name": "nnUNetPlans"}
    if options.memory_target_gb is not None:
        kwargs["gpu_memory_target_in_gb"] = options.memory_target_gb
    if options.spacing is not None:
        kwargs["overwrite_target_spacing"] = [float(s) for s in options.spacing]
    planner = ExperimentPlanner(dataset_id, **kwargs)
    if options.base_features is not None:
        planner.UNet_base_num_features = options.base_features  # the planner sizes patch and batch with them
    if options.max_features is not None:
        planner.UNet_max_features_3d = options.max_features
    planner.plan_experiment()
    folder = Path(nnUNet_preprocessed) / name
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    if spec.get("transfer_from"):
        plans = transferred_plans(source_plans(spec["transfer_from"]), plans, options)
    else:
        plans = apply_planning_overrides(plans, options)
    plans["plans_name"] = PLANS_NAME
    plans["configurations"] = {CONFIGURATION: plans["configurations"][CONFIGURATION]}
    plans_file = folder / f"{PLANS_NAME}.json"
    plans_file.write_text(json.dumps(plans, indent=2))
    preprocess_dataset(dataset_id, PLANS_NAME, (CONFIGURATION,), (options.processes,), show_progress_bar=False)
    config = plans["configurations"][CONFIGURATION]
    return {"plans": str(plans_file), "patch_size": config["patch_size"], "spacing": config["spacing"],
            "features_per_stage": config["architecture"]["arch_kwargs"]["features_per_stage"],
            "batch_size": config["batch_size"]}


def _fingerprint_extractor(samples_per_case: int | None) -> Any:
    """nnU-Net's fingerprint extractor, drawing at most ``samples_per_case`` intensities from each case."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    class CappedSamples(DatasetFingerprintExtractor):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if samples_per_case is not None:
                nnunet_total = float(vars(self)["num_foreground_voxels_for_intensitystats"])  # 10^8
                self.num_foreground_voxels_for_intensitystats = min(nnunet_total,
                                                                    float(samples_per_case * len(self.dataset)))

    return CappedSamples


def _trainer_class(name: str) -> Any:
    # Imported directly: nnU-Net's search by name imports every trainer module, primus included,
    # which needs torchvision (a CUDA build on PyPI that fails beside a CPU torch).
    if name == "nnUNetTrainerNoMirroring":
        from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
            nnUNetTrainerNoMirroring,
        )

        return nnUNetTrainerNoMirroring
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer


def _use_loss(trainer: Any, loss: str) -> None:
    """Have ``trainer`` build nnU-Net's own loss of that name (:data:`~mrseg.training.nnunet.LOSSES`)
    when it initialises; the trainer class, and so the name its checkpoints carry, stays the same."""
    if loss == "dice_ce":
        return  # the trainer's own
    from types import MethodType

    from nnunetv2.training.nnUNetTrainer.variants.loss.nnUNetTrainerTopkLoss import nnUNetTrainerDiceTopK10Loss

    variant = {"dice_topk10": nnUNetTrainerDiceTopK10Loss}[loss]
    trainer._build_loss = MethodType(variant._build_loss, trainer)
    trainer.print_to_log_file(f"loss: {loss} ({variant.__name__}'s)")


def _weigh_classes(trainer: Any, weights: dict[str, float], labels: dict[str, Any]) -> None:
    """Have the cross-entropy term of ``trainer``'s loss weigh each named class's voxels so (the
    rest 1): nnU-Net's own ``weight`` of its cross-entropy, set on the loss the trainer builds."""
    if not weights:
        return
    import numpy as np
    import torch
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    from mrseg.training.nnunet import check_class_weights

    check_class_weights(weights, labels, "the preprocessed dataset")

    per_label = np.ones(max(int(v) for v in labels.values()) + 1, dtype=np.float32)
    for name, weight in weights.items():
        per_label[int(labels[name])] = weight
    build = trainer._build_loss

    def build_weighted() -> Any:
        loss = build()
        inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
        inner.ce.weight = torch.from_numpy(per_label).to(trainer.device)  # nn.CrossEntropyLoss's own buffer
        return loss

    trainer._build_loss = build_weighted
    trainer.print_to_log_file("cross-entropy class weights: " + ", ".join(f"{k} {v:g}" for k, v in weights.items()))


def _zoom_patches(trainer: Any, setting: tuple[float, float, float] | None) -> None:
    """Set the zoom of the spatial augmentation ``trainer`` builds (nnU-Net's own where None):
    its probability per patch and factor range, on nnU-Net's ``SpatialTransform`` itself."""
    if setting is None:
        return
    probability, low, high = setting
    build = trainer.get_training_transforms

    def build_zooming(*args: Any, **kwargs: Any) -> Any:
        transforms = build(*args, **kwargs)
        spatial = [t for t in getattr(transforms, "transforms", []) if type(t).__name__ == "SpatialTransform"]
        if len(spatial) != 1:  # a change in nnU-Net's pipeline: say so rather than train without the zoom asked for
            raise RuntimeError(f"scale augmentation: expected one SpatialTransform in nnU-Net's training "
                               f"transforms, found {len(spatial)}")
        spatial[0].p_scaling = float(probability)
        spatial[0].scaling = (float(low), float(high))
        return transforms

    trainer.get_training_transforms = build_zooming
    trainer.print_to_log_file(f"scale augmentation: probability {probability:g}, factors {low:g}-{high:g}")


def _save_checkpoints_whole(trainer: Any) -> None:
    """Make ``trainer`` write each checkpoint beside its name, then rename it into place.

    nnU-Net writes ``checkpoint_latest.pth`` in place; a kill during that write would leave a
    truncated file that no resume can load, and a reader (a monitor, a test) could load half a file.
    """
    from mrseg.io.files import write_atomic

    write = trainer.save_checkpoint

    def save_checkpoint(filename: str) -> None:
        if trainer.local_rank == 0 and not trainer.disable_checkpointing:  # nnU-Net's own condition to write
            write_atomic(filename, lambda temporary: write(str(temporary)))
        else:
            write(filename)  # writes nothing, says so in its log

    trainer.save_checkpoint = save_checkpoint


def _seed(seed: int | None) -> None:
    if seed is None:
        return
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _seed_augmentation_workers(seed: int | None) -> None:
    """Give nnU-Net's augmentation worker processes seeds drawn from ``seed``.

    nnU-Net starts them with ``seeds=None``, and batchgenerators' producer then reseeds NumPy from
    the operating system: the batches and their augmentations were another draw on every run,
    whatever the training seed. Each augmenter the trainer builds (training first, validation
    second) gets its own seed per worker from a ``SeedSequence`` of the training seed and its
    place. With one worker the run is then the same on every rerun; with several, each worker's
    batches are, but nnU-Net takes them in the order they are ready.
    """
    if seed is None:
        return
    import numpy as np
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    root, built = seed, 0

    class SeededAugmenter(NonDetMultiThreadedAugmenter):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            nonlocal built
            workers = int(kwargs.get("num_processes", args[2] if len(args) > 2 else 1))
            if kwargs.get("seeds") is None and len(args) < 5:
                kwargs["seeds"] = [int(s) for s in np.random.SeedSequence([root, built]).generate_state(workers)]
            built += 1
            super().__init__(*args, **kwargs)

    trainer_module.NonDetMultiThreadedAugmenter = SeededAugmenter  # the name nnU-Net's get_dataloaders builds


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one fold on nnU-Net's trainer with the options set on it."""
    import torch
    from nnunetv2.paths import nnUNet_preprocessed

    from mrseg.training.nnunet import CONFIGURATION, PLANS_NAME, TrainingOptions, fold_is_trained

    options = TrainingOptions(**spec["options"])
    dataset_id = int(spec["dataset_id"])
    name = _dataset_name(dataset_id)
    folder = Path(nnUNet_preprocessed) / name
    plans_file = folder / f"{PLANS_NAME}.json"
    if not plans_file.is_file():
        raise InputError(f"{plans_file} is missing: plan and preprocess the dataset first (mrseg train does both)")
    plans = json.loads(plans_file.read_text())
    plans["continue_training"] = False  # nnU-Net's run_training sets this for its trainer; a fresh start here
    dataset_json = json.loads((folder / "dataset.json").read_text())
    fold = spec["fold"] if spec["fold"] == "all" else int(spec["fold"])  # train_fold checked the case count
    _seed(options.seed)
    _seed_augmentation_workers(options.seed)
    trainer = _trainer_class(options.trainer_name)(
        plans=plans, configuration=CONFIGURATION, fold=fold, dataset_json=dataset_json,
        device=torch.device(options.device),
    )
    trainer.num_epochs = options.epochs
    trainer.num_iterations_per_epoch = options.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = options.val_iterations_per_epoch
    trainer.initial_lr = options.initial_lr
    trainer.save_every = options.save_every
    _use_loss(trainer, options.loss)
    _weigh_classes(trainer, options.class_weights, dataset_json["labels"])
    _zoom_patches(trainer, options.scale_augmentation)
    _save_checkpoints_whole(trainer)
    notes: list[str] = []
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    if options.resume and fold_is_trained(final.parent):
        notes.append(f"resume: {final} exists; the fold is trained")
        options = TrainingOptions(**{**spec["options"], "validate": False})
    elif options.resume and latest.is_file():
        trainer.initialize()
        trainer.load_checkpoint(str(latest))  # nnU-Net's own: weights, optimizer, epoch, logs
        trainer.print_to_log_file(f"resumed from {latest} at epoch {trainer.current_epoch}")
        notes.append(f"resumed at epoch {trainer.current_epoch}")
        trainer.run_training()
    else:
        if options.init_from:  # first: a bad source is refused with the earlier run's files untouched
            notes = _load_source_weights(trainer, Path(options.init_from), options.init_fold, plans, dataset_json)
        for earlier in (final, latest):  # another run's: a stopped fresh run must not be taken for it
            if earlier.is_file():
                earlier.unlink()
                notes.append(f"removed {earlier.name} of an earlier run in {earlier.parent}")
        trainer.run_training()
    validation: dict[str, Any] = {}
    if options.validate:
        trainer.perform_actual_validation(False)
        summary = Path(trainer.output_folder) / "validation" / "summary.json"
        if summary.is_file():
            validation = {"summary": str(summary)}
    losses = trainer.logger.local_logger.my_fantastic_logging.get("train_losses", [])
    return {"model_folder": str(Path(trainer.output_folder).parent), "fold_folder": str(trainer.output_folder),
            "train_losses": [float(v) for v in losses], "notes": notes, **validation}


def _load_source_weights(trainer: Any, source: Path, fold: int | str, plans: dict[str, Any],
                         dataset_json: dict[str, Any]) -> list[str]:
    """Start ``trainer`` from ``source``'s fold weights (all but a segmentation head that does not fit)."""
    import torch
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from mrseg.training.nnunet import check_transfer_compatible, source_plans

    checkpoint = source / f"fold_{fold}" / "checkpoint_final.pth"
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint} is missing: --init-from needs a model folder with fold_{fold}")
    source_labels = json.loads((source / "dataset.json").read_text())["labels"]
    notes = check_transfer_compatible(source_plans(source), plans, source_labels=source_labels,
                                      target_labels=dataset_json["labels"])
    for note in notes:
        trainer.print_to_log_file(note)
    trainer.initialize()
    if notes:  # nnU-Net's own transfer: every layer but the segmentation head
        load_pretrained_weights(trainer.network, str(checkpoint), verbose=False)
    else:  # the same classes: the head too
        weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
        trainer.network.load_state_dict(weights)
    trainer.print_to_log_file(f"started from {checkpoint}")
    start = Path(trainer.output_folder) / INITIAL_CHECKPOINT  # the weights the first step starts from, for audit
    start.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": trainer.network.state_dict(), "source": str(checkpoint), "notes": notes}, start)
    return notes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    report_file = Path(spec["report"])
    if spec.get("caller_pid"):
        stop_when_orphaned(int(spec["caller_pid"]))
    if spec["step"] == "plan" and spec.get("options", {}).get("processes", 1) <= 1:
        run_pools_in_threads()
    else:
        start_pools_from_a_fork_server()
    try:
        step = {"plan": plan, "train": train}[spec["step"]]
        report = step(spec)
    except MrsegError as err:
        report_file.write_text(json.dumps({"error": str(err), "error_type": type(err).__name__}))
        return 1
    except Exception:
        report_file.write_text(json.dumps({"error": traceback.format_exc(), "error_type": "RuntimeError"}))
        return 1
    report_file.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
