"""Training end to end on nnunetv2: tiny phantoms, a few iterations, the CPU.

The model folder it makes must load in ``mrseg segment`` and in nnU-Net's own predictor;
transfer learning must start from the source weights exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model_factory import model_of_classes
from mrseg.cli import main
from mrseg.errors import InputError, ModelError
from mrseg.inference.segmenter import Segmenter
from mrseg.io import read_image
from mrseg.training import (
    NnunetFolders,
    PlanningOptions,
    TrainingOptions,
    build_dataset,
    cases_from_folder,
    check_transfer_compatible,
    plan_and_preprocess,
    run_cross_validation,
    train_fold,
)
from mrseg.training.nnunet import LOSSES, fold_is_trained

pytestmark = pytest.mark.slow

TINY_PLANS = PlanningOptions(spacing=(6.0, 6.0, 6.0), patch_size=(32, 32, 32), base_features=4, max_features=16,
                             batch_size=2, processes=1)
TINY_TRAINING = TrainingOptions(epochs=4, iterations_per_epoch=6, val_iterations_per_epoch=1, initial_lr=0.02,
                                save_every=1000)


@pytest.fixture(scope="module")
def trained(phantom_folder, tmp_path_factory):
    """One fold trained on the six phantoms (dataset 21), validated."""
    folders = NnunetFolders.under(tmp_path_factory.mktemp("nnunet"))
    build_dataset(cases_from_folder(phantom_folder), folders.raw, dataset_id=21, name="Tiny")
    result = run_cross_validation(folders, 21, folds=[0], planning=TINY_PLANS, training=TINY_TRAINING)
    return folders, result


def _checkpoint(model: Path, fold: int | str = 0, name: str = "checkpoint_final.pth") -> dict:
    return torch.load(model / f"fold_{fold}" / name, map_location="cpu", weights_only=False)


def _start_from(source: Path) -> TrainingOptions:
    """One short epoch from ``source``'s fold 0 weights."""
    return TrainingOptions(epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1, validate=False,
                           init_from=str(source))


def test_training_makes_a_model_folder_with_a_falling_loss(trained):
    folders, result = trained
    model = result.model_folder
    assert model.name == "nnUNetTrainerNoMirroring__mrsegPlans__3d_fullres"
    assert (model / "plans.json").is_file() and (model / "dataset.json").is_file()
    checkpoint = _checkpoint(model)
    assert checkpoint["trainer_name"] == "nnUNetTrainerNoMirroring"
    assert checkpoint["inference_allowed_mirroring_axes"] is None  # no mirroring, as the published weights
    losses = checkpoint["logging"]["train_losses"]
    assert len(losses) == TINY_TRAINING.epochs and losses[-1] < losses[0]
    plans = json.loads((model / "plans.json").read_text())
    features = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"]
    assert features[0] == 4 and max(features) == 16  # the overrides reached nnU-Net's planner
    assert plans["configurations"]["3d_fullres"]["spacing"] == [6.0, 6.0, 6.0]


def test_cross_validation_writes_a_per_class_dice_table(trained):
    _, result = trained
    assert result.report is not None and (result.report / "summary.csv").is_file()
    assert "liver" in result.mean_dice and all(0.0 <= v <= 1.0 for v in result.mean_dice.values())
    text = (result.report / "report.md").read_text()
    assert "modality" in text  # broken down by the modality recorded at dataset build


def test_cross_validation_decides_postprocessing_as_nnunet_does_where_the_loader_finds_it(trained, tmp_path,
                                                                                         monkeypatch):
    import shutil

    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    from mrseg.model import load_model
    from mrseg.model.postprocessing import KeepLargestComponent, read_postprocessing
    from parity import nnunet_pools_as_threads

    nnunet_pools_as_threads(monkeypatch)

    folders, result = trained
    model = result.model_folder
    assert result.postprocessing == model / "crossval_results_folds_0" / "postprocessing.json"
    steps = read_postprocessing(result.postprocessing)
    assert load_model(model, folds=[0]).postprocessing == steps
    predictions = tmp_path / "validation"  # nnU-Net writes beside the predictions: a copy keeps the model clean
    shutil.copytree(model / "fold_0" / "validation", predictions)
    _, kwargs = determine_postprocessing(str(predictions), str(folders.preprocessed / model.parent.name /
                                                                 "gt_segmentations"),
                                         str(model / "plans.json"), str(model / "dataset.json"), num_processes=1,
                                         keep_postprocessed_files=False)
    theirs = tuple(KeepLargestComponent(tuple(v) if isinstance(v, list) else (v,))
                   for v in (k["labels_or_regions"] for k in kwargs))
    assert steps == theirs


def test_fold_all_alone_decides_no_postprocessing(tmp_path):
    """Fold ``all`` validates on the cases it trained on: nothing is decided, and training still ends well."""
    from mrseg.training.crossval import decide_postprocessing

    model = tmp_path / "results" / "Dataset021_Tiny" / "nnUNetTrainerNoMirroring__mrsegPlans__3d_fullres"
    (model / "fold_all" / "validation").mkdir(parents=True)
    (model / "fold_all" / "validation" / "case_000.nii.gz").write_bytes(b"")
    assert decide_postprocessing(NnunetFolders.under(tmp_path), model) is None
    assert not list(model.glob("crossval_results_folds_*"))


def test_mrseg_segment_loads_the_trained_model(trained, phantom_folder, tmp_path):
    _, result = trained
    image = phantom_folder / "mr_t1_in_000.nii.gz"
    assert main(["segment", str(image), "-o", str(tmp_path), "--model", str(result.model_folder),
                 "--no-progress", "--precision", "fp32"]) == 0
    labels = read_image(tmp_path / "mr_t1_in_000_seg.nii.gz")
    assert labels.geometry.same_grid(read_image(image).geometry)
    assert labels.array.max() <= 40


def test_nnunets_own_predictor_loads_the_trained_model_and_agrees(trained, phantom_folder, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as predict_module
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring,
    )

    from parity import nnunet_labels, nnunet_predictor

    # nnU-Net's lookup by name imports the primus trainers, which need a torchvision that cannot
    # load beside CPU torch here; the class it would find is this one.
    monkeypatch.setattr(predict_module, "recursive_find_trainer_class_by_name",
                        lambda name: {"nnUNetTrainerNoMirroring": nnUNetTrainerNoMirroring}[name])
    _, result = trained
    image = read_image(phantom_folder / "mr_t2_haste_001.nii.gz")
    theirs = nnunet_labels(nnunet_predictor(result.model_folder, folds=(0,)), image, reorient_to_lps=False)
    ours = Segmenter(result.model_folder, folds=[0], precision="fp32", orientation=None).segment(image).array
    assert (ours == theirs).mean() > 0.999


def test_transfer_learning_starts_from_the_source_weights(trained, phantom_folder, tmp_path):
    folders, result = trained
    build_dataset(cases_from_folder(phantom_folder)[:5], folders.raw, dataset_id=22, name="Transfer")
    source_plans = json.loads((result.model_folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    steps = np.prod(source_plans["architecture"]["arch_kwargs"]["strides"], axis=0)
    wider = tuple(int(p + s) for p, s in zip(source_plans["patch_size"], steps))  # one step more on each axis
    # at another spacing than the source's 6 mm and with a wider patch: the network and its weights fit any
    plan_and_preprocess(folders, 22, PlanningOptions(spacing=(7.5, 7.5, 7.5), patch_size=wider, processes=1),
                        transfer_from=result.model_folder)
    model = train_fold(folders, 22, 0, _start_from(result.model_folder))
    source = _checkpoint(result.model_folder)["network_weights"]
    target = _checkpoint(model, name="checkpoint_initial.pth")["network_weights"]  # before the first step
    assert source.keys() == target.keys()
    for key in source:
        assert torch.equal(source[key], target[key]), key
    trained = _checkpoint(model)["network_weights"]
    assert any(not torch.equal(source[k], trained[k]) for k in source)  # and training then moved them
    plans = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert plans["architecture"] == source_plans["architecture"] and plans["patch_size"] == list(wider)
    assert source_plans["spacing"] == [6.0] * 3 and plans["spacing"] == [7.5] * 3


def test_a_source_with_another_class_count_keeps_all_but_its_head(trained, phantom_folder, tmp_path):
    folders, result = trained
    ten = list(json.loads((result.model_folder / "dataset.json").read_text())["labels"])[1:11]
    source = model_of_classes(result.model_folder, tmp_path / "ten_class_model", ten)  # as a CT model's would be
    checkpoint = _checkpoint(source)
    head = [k for k in checkpoint["network_weights"] if ".seg_layers." in k]

    model = train_fold(folders, 22, 0, _start_from(source))
    weights = _checkpoint(model, name="checkpoint_initial.pth")["network_weights"]
    for key, value in checkpoint["network_weights"].items():
        if key in head:
            assert weights[key].shape[0] == 41  # the dataset's own head, newly initialised
        else:
            assert torch.equal(value, weights[key]), key
    log = "".join(p.read_text() for p in (model / "fold_0").glob("training_log_*.txt"))
    assert "segmentation head" in log and "starts from random weights" in log


def test_the_losses_are_nnunets_own_and_the_checkpoint_keeps_the_trainer_name(trained):
    """The same first batch on the same starting weights (seed 0) with each loss: the mean
    cross-entropy of the hardest 10 % of voxels exceeds that of all voxels (the Dice terms agree),
    and class weights change the cross-entropy's mean."""
    folders, _ = trained
    runs = {"dice_ce": {}, "dice_topk10": {}, "weighted": {"class_weights": {"liver": 20.0, "spleen": 5.0}}}
    first_loss, logs = {}, {}
    for run, options in runs.items():
        options = TrainingOptions(epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1, validate=False,
                                  seed=0, loss=run if run in LOSSES else "dice_ce", **options)
        checkpoint = _checkpoint(train_fold(folders, 21, "all", options), fold="all")
        assert checkpoint["trainer_name"] == "nnUNetTrainerNoMirroring"  # loads as before, here and in nnU-Net
        first_loss[run] = checkpoint["logging"]["train_losses"][0]
        log = max(folders.results.joinpath(*FOLD_ALL).glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime_ns)
        logs[run] = log.read_text()
    assert first_loss["dice_topk10"] > first_loss["dice_ce"]
    assert first_loss["weighted"] != pytest.approx(first_loss["dice_ce"], abs=1e-4)
    assert "loss: dice_topk10 (nnUNetTrainerDiceTopK10Loss's)" in logs["dice_topk10"]
    assert "cross-entropy class weights: liver 20, spleen 5" in logs["weighted"]
    assert "class weights" not in logs["dice_ce"] and "loss:" not in logs["dice_ce"]


def test_scale_augmentation_reaches_nnunets_spatial_transform(trained):
    """Every patch zoomed by 1.6 (nnU-Net's own: a fifth, 0.7-1.4): the same seed's first batch
    is another, so its loss differs, and the trainer's log says what it drew from."""
    folders, _ = trained
    first_loss, logs = {}, {}
    for run, setting in {"nnunet": None, "zoomed": (1.0, 1.6, 1.6)}.items():
        options = TrainingOptions(epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1, validate=False,
                                  seed=0, scale_augmentation=setting)
        first_loss[run] = _checkpoint(train_fold(folders, 21, "all", options), fold="all")["logging"]["train_losses"][0]
        log = max(folders.results.joinpath(*FOLD_ALL).glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime_ns)
        logs[run] = log.read_text()
    assert first_loss["zoomed"] != pytest.approx(first_loss["nnunet"], abs=1e-4)
    assert "scale augmentation: probability 1, factors 1.6-1.6" in logs["zoomed"]
    assert "scale augmentation" not in logs["nnunet"]


def test_the_seed_fixes_a_run_with_an_augmentation_worker_and_another_seed_draws_another(trained):
    """nnU-Net starts its augmentation workers unseeded; with one worker and the same seed two
    runs give the same losses and weights, and the next seed other ones."""
    folders, _ = trained
    runs = []
    for seed in (0, 0, 1):
        options = TrainingOptions(epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1, validate=False,
                                  seed=seed, augmentation_processes=1)
        checkpoint = _checkpoint(train_fold(folders, 21, "all", options), fold="all")
        runs.append((checkpoint["logging"]["train_losses"], checkpoint["network_weights"]))
    (losses_a, weights_a), (losses_b, weights_b), (losses_c, weights_c) = runs
    assert losses_a == losses_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert losses_c != losses_a
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


def test_a_class_weight_for_a_class_the_dataset_lacks_is_refused_before_planning(trained):
    folders, _ = trained
    options = TrainingOptions(epochs=1, class_weights={"livr": 5.0})
    with pytest.raises(InputError, match="class weight for livr: Dataset021_Tiny has no such class "
                                         r"\(its classes: spleen, right_kidney, "):
        run_cross_validation(folders, 21, folds=[0], planning=TINY_PLANS, training=options)
    with pytest.raises(InputError, match="class weight for livr"):
        train_fold(folders, 21, "all", options)


def test_incompatible_sources_and_bad_options_are_explained(trained):
    _, result = trained
    plans = json.loads((result.model_folder / "plans.json").read_text())
    other = json.loads(json.dumps(plans))
    other["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][0] = 8
    labels = json.loads((result.model_folder / "dataset.json").read_text())["labels"]
    with pytest.raises(ModelError, match="differs in features_per_stage .*--init-from"):
        check_transfer_compatible(plans, other, source_labels=labels, target_labels=labels)
    assert check_transfer_compatible(plans, plans, source_labels=labels, target_labels=labels) == []
    swapped = dict(zip(labels, [labels[k] for k in reversed(list(labels))]))
    (note,) = check_transfer_compatible(plans, plans, source_labels=swapped, target_labels=labels)
    assert "other classes" in note and "starts from random weights" in note
    from mrseg.training.nnunet import apply_planning_overrides

    with pytest.raises(InputError, match="does not fit the network: each axis must be a multiple of"):
        apply_planning_overrides(plans, PlanningOptions(patch_size=(33, 32, 32)))


def test_training_a_dataset_that_does_not_exist_says_so(tmp_path):
    folders = NnunetFolders.under(tmp_path)
    with pytest.raises(InputError, match="no nnU-Net dataset with id 99"):
        plan_and_preprocess(folders, 99)


def test_too_few_cases_for_five_folds_is_explained(trained, phantom_folder):
    folders, _ = trained
    build_dataset(cases_from_folder(phantom_folder)[:3], folders.raw, dataset_id=23, name="Three")
    with pytest.raises(InputError, match="has 3 cases; five-fold cross-validation needs at least 5"):
        train_fold(folders, 23, 1, TINY_TRAINING)
    with pytest.raises(InputError, match="Dataset023_Three has 3 cases"):
        run_cross_validation(folders, 23, folds=["all", 0], planning=TINY_PLANS, training=TINY_TRAINING)
    assert not (folders.preprocessed / "Dataset023_Three").exists()  # refused before planning


RUN_AND_WAIT = """
import json
import sys
from pathlib import Path
from mrseg.training import NnunetFolders, TrainingOptions, train_fold
folders = NnunetFolders.under(Path(sys.argv[1]))
options = dict(epochs=int(sys.argv[3]), iterations_per_epoch=2, val_iterations_per_epoch=1, validate=False,
               save_every=1, seed=0)
options.update(json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
train_fold(folders, int(sys.argv[2]), "all", TrainingOptions(**options))
"""


FOLD_ALL = ("Dataset021_Tiny", "nnUNetTrainerNoMirroring__mrsegPlans__3d_fullres", "fold_all")


def _kill_fresh_run_after(folders: NnunetFolders, epochs: int, done: int) -> Path:
    """Start a fresh (not resumed) training run of fold "all" in its own process and SIGKILL it
    once its checkpoint_latest.pth holds ``done`` epochs; returns the fold folder."""
    run = subprocess.Popen([sys.executable, "-c", RUN_AND_WAIT, str(folders.raw.parent), "21", str(epochs)],
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fold = folders.results.joinpath(*FOLD_ALL)
    try:
        _wait_for_epochs(run, fold, done)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    return fold


def _wait_for_epochs(run: subprocess.Popen, fold: Path, done: int) -> None:
    """Until the run's checkpoint_latest.pth holds ``done`` epochs, the run ended or 300 s passed."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:  # a run that ended early: stop waiting
        latest = fold / "checkpoint_latest.pth"
        if latest.is_file() and torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"] >= done:
            return
        time.sleep(0.5)


def _tiny_run(epochs: int, resume: bool) -> TrainingOptions:
    return TrainingOptions(epochs=epochs, iterations_per_epoch=2, val_iterations_per_epoch=1, validate=False,
                           save_every=1, seed=0, resume=resume)


def test_a_killed_training_run_resumes_from_its_last_checkpoint(trained):
    """SIGKILL a real training run after its first checkpoints; resume=True finishes the epochs left,
    from nnU-Net's checkpoint_latest (the epochs already done are not run again)."""
    folders, _ = trained
    epochs = 5  # killed at epoch 2 or 3 (an epoch takes about 2 s here): the run is cut short, not done
    fold = _kill_fresh_run_after(folders, epochs, done=2)
    assert not (fold / "checkpoint_final.pth").exists()
    done_before = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)["current_epoch"]
    assert 2 <= done_before < epochs

    model = train_fold(folders, 21, "all", _tiny_run(epochs, resume=True))
    final = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert len(final["logging"]["train_losses"]) == epochs  # the epochs before the kill kept, the rest run once
    log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    assert f"resumed from {fold / 'checkpoint_latest.pth'} at epoch {done_before}" in log
    files = {p: p.stat().st_mtime_ns for p in fold.iterdir()}
    again = train_fold(folders, 21, "all", _tiny_run(epochs, resume=True))
    assert again == model  # trained already: nothing to do, and no trainer started to find that out (no new log)
    assert {p: p.stat().st_mtime_ns for p in fold.iterdir()} == files


def test_a_killed_fresh_run_over_a_finished_one_is_resumed_not_taken_for_it(trained):
    """A fresh run in a fold folder where an earlier run finished (a fine-tune started over): killed
    early, resume must go on with it, not find the earlier run's checkpoint_final.pth and stop."""
    folders, _ = trained
    earlier = train_fold(folders, 21, "all", _tiny_run(2, resume=False))
    fold = earlier / "fold_all"
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "checkpoint_latest.pth").exists()

    _kill_fresh_run_after(folders, epochs=6, done=1)
    assert not (fold / "checkpoint_final.pth").exists()  # the fresh start cleared the earlier run's
    done_before = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)["current_epoch"]
    assert 1 <= done_before < 6

    train_fold(folders, 21, "all", _tiny_run(6, resume=True))
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert len(final["logging"]["train_losses"]) == 6


def _second_epoch_begun(fold: Path) -> bool:
    """Whether nnU-Net's log shows epoch 1's opening lines (its number, then its learning rate)."""
    log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    return ": Epoch 1 " in log and "Current learning rate" in log.split(": Epoch 1 ", 1)[1]


def _live_processes_in_session(session: int) -> list[int]:
    """The pids of the processes of ``session`` that still run (zombies aside), read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _parent, _group, sid = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):  # the process ended while the table was read
            continue
        if int(sid) == session and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_a_training_run_whose_caller_is_killed_stops_with_it(trained):
    """SIGKILL only the process that called train_fold, not its session, just after an epoch began:
    the worker process that trains, and nnU-Net's augmentation worker it started, must be gone
    within 5 s, not train on unseen. (Without the watch the worker only died at the end of the
    epoch, its first print into the dead caller's pipe; the epochs here take longer than 5 s.)"""
    folders, _ = trained
    long_epochs = json.dumps({"iterations_per_epoch": 80, "augmentation_processes": 1})
    run = subprocess.Popen([sys.executable, "-c", RUN_AND_WAIT, str(folders.raw.parent), "21", "50", long_epochs],
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fold = folders.results.joinpath(*FOLD_ALL)
    try:
        _wait_for_epochs(run, fold, done=1)
        deadline = time.monotonic() + 120
        while not _second_epoch_begun(fold) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # once its first lines are printed, the epoch runs silently for a while
        assert run.poll() is None, "the run ended before it could be killed"
        assert len(_live_processes_in_session(run.pid)) >= 3  # the caller, its worker, an augmentation worker
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        deadline = time.monotonic() + 5
        while _live_processes_in_session(run.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _live_processes_in_session(run.pid) == []
    finally:
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_final_checkpoint_older_than_the_latest_is_a_stopped_later_run(tmp_path):
    """Folders left by an earlier mrseg: the finished run's checkpoint_final.pth and a later, stopped
    run's newer checkpoint_latest.pth. The fold is not trained: resume goes on from the latest."""
    import os

    final, latest = tmp_path / "checkpoint_final.pth", tmp_path / "checkpoint_latest.pth"
    assert not fold_is_trained(tmp_path)
    final.write_bytes(b"final")
    assert fold_is_trained(tmp_path)
    latest.write_bytes(b"latest")
    os.utime(final, ns=(1_000_000_000, 1_000_000_000))
    assert not fold_is_trained(tmp_path)
    os.utime(latest, ns=(1_000_000_000, 1_000_000_000))
    os.utime(final, ns=(2_000_000_000, 2_000_000_000))
    assert fold_is_trained(tmp_path)  # written after the latest (nnU-Net removes it next): finished
