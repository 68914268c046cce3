"""The project state: written atomically under a lock, so commands running at once lose nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from mrseg.annotation.project import CaseState, ModelVersion, Project, ProjectState, Settings
from mrseg.errors import InputError


def _reject_many(folder: str, cases: list[str]) -> None:
    project = Project(folder)
    for case in cases:
        with project.changing() as state:
            state.cases[case].status = "rejected"


def test_two_processes_changing_the_state_at_once_lose_no_change(tmp_path):
    project = Project(tmp_path)
    names = [f"c{i:02d}" for i in range(40)]
    project.write(ProjectState(Settings(), [ModelVersion(0, "/m", "now")], {n: CaseState(n, f"/{n}") for n in names}))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_reject_many, args=(str(tmp_path), names[i::2])) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert {c.status for c in project.read().cases.values()} == {"rejected"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.json"]  # no temporary or lock file left


def test_a_failed_change_writes_nothing_and_a_damaged_state_is_refused(tmp_path):
    project = Project(tmp_path)
    project.write(ProjectState(Settings(batch=3), [ModelVersion(0, "/m", "now")], {"a": CaseState("a", "/a")}))
    with pytest.raises(RuntimeError):
        with project.changing() as state:
            state.cases["a"].status = "accepted"
            raise RuntimeError("the command failed half-way")
    assert project.read().cases["a"].status == "new"
    (tmp_path / "project.json").write_text("{")
    with pytest.raises(InputError, match="not a readable project state"):
        project.read()
    with pytest.raises(InputError, match="no annotation project here"):
        Project(Path(tmp_path / "elsewhere")).read()


def test_paths_inside_the_project_are_recorded_relative_to_it_and_others_absolute(tmp_path):
    project = Project(tmp_path / "project")
    (tmp_path / "project" / "models" / "v2").mkdir(parents=True)
    inside = project.stored_path(tmp_path / "project" / "models" / "v2")
    outside = project.stored_path(tmp_path / "images" / "a.nii.gz")
    assert inside == "models/v2" and outside == str((tmp_path / "images" / "a.nii.gz").resolve())
    moved = Project(tmp_path / "moved")
    assert moved.resolved_path(inside) == tmp_path / "moved" / "models" / "v2"
    assert moved.resolved_path(outside) == Path(outside)
