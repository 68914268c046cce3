"""The annotation loop end to end with real processes: the demo model drafts MR phantoms, an
annotator's corrections (NIfTI and Slicer) come back, nnU-Net fine-tunes, the next round is drafted
by the new version; and a ``next`` or ``retrain`` killed with SIGKILL is finished by running it
again."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cohort_factory import phantom_cohort
from model_factory import model_of_classes
from mrseg.annotation import Project
from mrseg.annotation.exchange import write_slicer_segmentation
from mrseg.classes import BASE
from mrseg.io import read_image, write_image
from mrseg_processes import attempt_events, mrseg_process, run_mrseg, wait_for

pytestmark = pytest.mark.slow

NAMES = {c.index: c.name for c in BASE.classes}
QUICK = ["--epochs", "1", "--iterations", "2"]
ONE_WORKER = ["--workers", "1"]  # drafts of a handful of cases: a second Dask worker costs more to start than it saves


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("annotation")
    phantom_cohort(root / "images", 5, truth=root / "truth", first_seed=95000)
    return root / "images", root / "truth"


def statuses(project: Path) -> dict[str, str]:
    return {name: case.status for name, case in Project(project).read().cases.items()}


def succeeded(*args: str) -> subprocess.CompletedProcess:
    done = run_mrseg(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


def ok(*args: str) -> str:
    return succeeded(*args).stdout


def test_two_rounds_move_every_case_through_its_states_and_a_killed_retrain_is_finished_by_running_it_again(
        tmp_path, images):
    folder, truth = images
    project = tmp_path / "project"
    ok("annotate", "init", str(project), "--images", str(folder), "--model", "demo", "--batch", "2",
       "--order", "uncertain")
    assert set(statuses(project).values()) == {"new"} and len(statuses(project)) == 5

    ok("annotate", "next", str(project), *ONE_WORKER)
    state = Project(project).read()
    first = state.rounds[0].cases
    assert len(first) == 2 and all(state.cases[c].status == "in_correction" for c in first)
    scored = {c.case: c.uncertainty for c in state.cases.values()}
    assert all(0 < u < 1 for u in scored.values())  # the whole pool was scored for the uncertain order
    assert sorted(scored.values(), reverse=True)[:2] == sorted((scored[c] for c in first), reverse=True)
    assert all(state.cases[c].draft_model == 0 for c in first)

    slicer_case, nifti_case = first
    truth_slicer = read_image(truth / f"{slicer_case}_labels.nii.gz")
    write_slicer_segmentation(truth_slicer, NAMES, project / "rounds" / "001" / slicer_case / "corrected.seg.nrrd")
    returned = tmp_path / "returned"
    write_image(read_image(truth / f"{nifti_case}_labels.nii.gz"), returned / f"{nifti_case}.nii.gz")
    out = ok("annotate", "submit", str(project), str(project / "rounds" / "001" / slicer_case), str(returned))
    assert f"accepted {slicer_case}:" in out and f"accepted {nifti_case}:" in out
    state = Project(project).read()
    draft = read_image(project / "rounds" / "001" / slicer_case / "draft.nii.gz").array
    assert state.cases[slicer_case].effort["voxels_changed"] == int(np.count_nonzero(draft != truth_slicer.array))
    assert (project / "accepted" / f"{nifti_case}.nii.gz").is_file()

    left = sorted(c for c, s in statuses(project).items() if s == "new")
    ok("annotate", "reject", str(project), left[0], "--reason", "motion artefacts")
    process = mrseg_process("annotate", "retrain", str(project), "--epochs", "50", "--iterations", "5",
                            start_new_session=True)
    wait_for(lambda: any((project / "training" / "nnUNet_results").rglob("training_log_*.txt")), timeout=300, every=0.5,
             what="nnU-Net's training to start")
    os.killpg(process.pid, signal.SIGKILL)  # the driver and nnU-Net's training process: the machine died
    process.communicate(timeout=60)
    assert [m.version for m in Project(project).read().models] == [0]
    assert not (project / "models").exists() or not any((project / "models").iterdir())
    again = succeeded("annotate", "retrain", str(project), *QUICK)
    assert "planning and preprocessing" not in again.stderr and "reused" in again.stderr  # it was whole: kept
    assert sorted(p.name for p in (project / "models").iterdir()) == ["v1"]
    assert (project / "models" / "v1" / "fold_all" / "checkpoint_final.pth").is_file()
    state = Project(project).read()
    assert [(m.version, m.accepted_cases, m.fold) for m in state.models] == [(0, 0, "0"), (1, 2, "all")]
    assert state.models[1].folder == "models/v1"  # inside the project: recorded relative to it
    moved = tmp_path / "elsewhere" / "project"
    shutil.move(project, moved)  # the project travels whole (another disk, another machine)
    project = moved

    ok("annotate", "next", str(project), *ONE_WORKER)
    state = Project(project).read()
    second = state.rounds[1]
    assert second.model == 1 and sorted(second.cases) == sorted(left[1:])  # the rejected case is never chosen
    for case in second.cases:
        write_image(read_image(truth / f"{case}_labels.nii.gz"),
                    project / "rounds" / "002" / case / "corrected.nii.gz")
    ok("annotate", "submit", str(project), *second.cases)
    assert sorted(statuses(project).values()) == ["accepted"] * 4 + ["rejected"]

    report = ok("annotate", "status", str(project))
    assert "4 accepted, 1 rejected" in report
    rows = list(csv.DictReader((project / "rounds.csv").open()))
    assert [(r["round"], r["cases"], r["accepted_total"], r["model"], r["model_trained_on"]) for r in rows] == [
        ("1", "2", "2", "v0", "0"), ("2", "2", "4", "v1", "2")]
    efforts = [state.cases[c].effort for c in first]
    efforts = [Project(project).read().cases[c].effort for c in first]
    assert float(rows[0]["draft_dice_mean"]) == pytest.approx(np.mean([e["dice_mean"] for e in efforts]), abs=1e-4)
    assert (project / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    none_left = run_mrseg("annotate", "next", str(project))
    assert none_left.returncode == 2 and "no new case left" in none_left.stderr
    nowhere = run_mrseg("annotate", "simulate", str(tmp_path / "nowhere"), "--truth", str(truth))
    assert nowhere.returncode == 2 and "no annotation project here" in nowhere.stderr


def test_a_killed_next_is_finished_by_running_next_again(tmp_path, images):
    folder, _ = images
    project = tmp_path / "project"
    ok("annotate", "init", str(project), "--images", str(folder), "--model", "demo", "--batch", "3")
    attempts = project / "predictions" / "v0" / "cohort_attempts.jsonl"
    process = mrseg_process("annotate", "next", str(project), *ONE_WORKER, start_new_session=True)
    wait_for(lambda: any(e["event"] == "end" for e in attempt_events(attempts)), timeout=300,
             what="a first draft")
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    state = Project(project).read()
    chosen = state.rounds[0].cases
    assert len(chosen) == 3 and {state.cases[c].status for c in chosen} <= {"draft", "in_correction"}

    out = ok("annotate", "next", str(project), *ONE_WORKER)
    state = Project(project).read()
    assert len(state.rounds) == 1 and "round 1: 3 draft(s)" in out  # the same batch, finished
    assert all(state.cases[c].status == "in_correction" for c in chosen)
    segmented = [e["case"] for e in attempt_events(attempts) if e["event"] == "end" and e["status"] == "segmented"]
    assert sorted(segmented) == sorted(chosen)  # each draft predicted once
    for case in chosen:
        assert (project / "rounds" / "001" / case / "draft.seg.nrrd").is_file()


def test_simulate_runs_rounds_from_a_model_of_its_own_classes_and_a_rerun_continues(tmp_path, images):
    """``mrseg annotate simulate`` from a starting model that knows two classes (liver 1, spleen 2),
    not the 40: two rounds with an oracle, drafts, the files for the annotators and the fine-tuned
    version keep its names and values, and a rerun has nothing more to do."""
    from mrseg.model.plans import read_dataset

    folder, truth = images
    own = {"liver": 1, "spleen": 2}
    own_truth = tmp_path / "truth"
    for labels_file in sorted(truth.glob("*_labels.nii.gz")):
        labels = read_image(labels_file)
        mapped = np.zeros(labels.array.shape, np.uint8)
        for name, value in own.items():
            mapped[labels.array == BASE.index_of(name)] = value
        write_image(labels.with_array(mapped), own_truth / labels_file.name)
    from mrseg.model.store import resolve_model_folder

    start = model_of_classes(resolve_model_folder("demo"), tmp_path / "liver_spleen_model", list(own))
    project = Project(tmp_path / "project")
    ok("annotate", "init", str(project.folder), "--images", str(folder), "--model", str(start), "--batch", "2")
    out = ok("annotate", "simulate", str(project.folder), "--truth", str(own_truth), "--rounds", "2", *ONE_WORKER,
             *QUICK)
    state = project.read()
    assert len(state.rounds) == 2 and [r.model for r in state.rounds] == [0, 1]  # round 2 drafted by the new version
    accepted = [c for c in state.cases.values() if c.status == "accepted"]
    assert len(accepted) == 4 and all(c.effort["dice_mean"] is not None for c in accepted)
    assert out.count("trained on") == 2
    rows = list(csv.DictReader((project.folder / "rounds.csv").open()))
    assert [r["accepted_total"] for r in rows] == ["2", "4"]
    again = ok("annotate", "simulate", str(project.folder), "--truth", str(own_truth), "--rounds", "2", *QUICK)
    assert len(project.read().rounds) == 2 and again.count("trained on") == 2  # nothing more to do
    state = project.read()
    assert [m.version for m in state.models] == [0, 1]
    new_model = project.resolved_path(state.models[1].folder)
    assert read_dataset(new_model / "dataset.json").labels == {"background": 0, **own}
    drafted = state.rounds[1].cases[0]
    descriptions = (project.case_folder(2, drafted) / "labels.txt").read_text()
    assert '"liver"' in descriptions and '"spleen"' in descriptions and '"right_kidney"' not in descriptions
    accepted = read_image(project.folder / "accepted" / f"{drafted}.nii.gz").array
    assert set(np.unique(accepted)) <= {0, 1, 2}
