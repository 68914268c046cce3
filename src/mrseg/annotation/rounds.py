"""The annotation loop: start a project, draft a batch, take corrections back, retrain, repeat.

- :func:`init_project`: the images, the starting model (version 0, e.g. a CT model) and the settings;
- :func:`next_round`: choose the next batch (random, or most uncertain first: the whole pool is
  scored by the current model), predict drafts with the cohort engine (resumable, so a killed
  ``next`` continues where it stopped) and write each draft for ITK-SNAP and 3D Slicer;
- :func:`submit`: validate a correction, measure the effort, accept the case;
- :func:`retrain`: fine-tune the current model on every accepted case with ``mrseg train``
  (nnU-Net's trainer, fold ``all``, started from the current model's weights and plans) and
  register the result as the next model version; nothing is registered until the model is complete;
- :func:`round_table` / :func:`write_status`: per round the draft quality, the effort and the model
  (``PROJECT/rounds.csv``), and the learning curve (``PROJECT/learning_curve.png``);
- :func:`simulate`: the same loop with an oracle annotator whose correction is the known truth.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mrseg.annotation.effort import measure_effort
from mrseg.annotation.exchange import read_correction, write_draft_files
from mrseg.annotation.project import (
    ORDERS,
    CaseState,
    ModelVersion,
    Project,
    ProjectState,
    RoundState,
    Settings,
    now,
)
from mrseg.errors import InputError, MrsegError
from mrseg.io.files import read_image, write_bytes_atomic, write_image
from mrseg.io.locks import FileLock
from mrseg.io.paths import case_name
from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, collect_cases
from mrseg.report.records import read_case_record

log = logging.getLogger(__name__)

DATASET_ID = 990
"""nnU-Net dataset id of a project's training data (inside the project's own nnU-Net folders)."""
CORRECTION_NAMES = ("corrected.seg.nrrd", "corrected.nii.gz", "corrected.nrrd", "corrected.mha", "corrected.nii")
ROUND_COLUMNS = ("round", "cases", "accepted", "accepted_total", "draft_dice_mean", "effort_voxels_mean",
                 "effort_fraction_mean", "model", "model_trained_on", "order", "started", "hours")


def init_project(folder: Path, images: Sequence[str | os.PathLike[str]], model: Path, *,
                 settings: Settings = Settings()) -> ProjectState:
    """Start a project in ``folder`` with ``images`` and the starting model folder ``model``.

    Raises:
        InputError: a project exists there, no images, a bad order or batch, or not a model folder.
    """
    from mrseg.model.loader import available_folds

    project = Project(folder)
    if project.exists():
        raise InputError(f"{folder}: already an annotation project; go on with mrseg annotate next")
    if settings.order not in ORDERS:
        raise InputError(f"--order must be one of {', '.join(ORDERS)}, got {settings.order!r}")
    if settings.batch < 1:
        raise InputError(f"--batch must be 1 or more, got {settings.batch}")
    folds = available_folds(model)
    if not folds:
        raise InputError(f"{model}: not an nnU-Net model folder with a trained fold (fold_*/checkpoint_final.pth)")
    cases = collect_cases(list(images)).cases
    state = ProjectState(settings, [ModelVersion(0, project.stored_path(model), now(), 0, folds[0])],
                         {c.name: CaseState(c.name, project.stored_path(c.path)) for c in cases})
    folder.mkdir(parents=True, exist_ok=True)
    with project.locked():
        if project.exists():
            raise InputError(f"{folder}: already an annotation project; go on with mrseg annotate next")
        project.write(state)
    return state


def _model_classes(folder: Path, settings: Settings) -> dict[str, int]:
    from mrseg.classes import resolve_classes
    from mrseg.model.plans import read_dataset

    foreground = read_dataset(folder / "dataset.json").foreground
    return resolve_classes(settings.classes, foreground) if settings.classes else dict(foreground)


def _predict(project: Project, state: ProjectState, cases: Sequence[CaseState], cluster: Any) -> dict[str, float]:
    """Drafts of ``cases`` with the current model (a cohort run, resumable); case → uncertainty."""
    from mrseg.cohort import ClusterSpec, CohortPlan, run_cohort

    version = state.model
    out = project.predictions_folder(version.version)
    model_folder = project.resolved_path(version.folder)
    classes = _model_classes(model_folder, state.settings)
    spec = ModelSpec(model_folder, name=f"v{version.version}", folds=(version.fold,), step=state.settings.step,
                     precision=state.settings.precision)
    outputs = OutputSpec.with_classes(out, classes if state.settings.classes else None, output_type="nifti")
    cluster = replace(cluster or ClusterSpec(), dashboard=False)  # nobody is shown a round's dashboard address
    result = run_cohort(out, CohortPlan(spec, outputs, retries=1), cluster,
                        cases=[CaseSpec(project.resolved_path(c.image), c.case) for c in cases])
    uncertainty = {}
    for case in cases:
        row = result.manifest.rows.get(case.case)
        if row is None or row.status != "done":
            continue
        uncertainty[case.case] = _uncertainty(out, outputs, case.case)
    return uncertainty


def _uncertainty(out: Path, outputs: OutputSpec, case: str) -> float:
    """1 − the voxel-weighted mean winning probability over the draft's foreground classes."""
    record = read_case_record(outputs.record_path(case))
    if record is None or "statistics_json" not in record.outputs:
        return 1.0
    stats = json.loads((out / record.outputs["statistics_json"].path).read_text())["classes"]
    weights = {row["name"]: row["voxels"] for row in stats if row["voxels"]}
    sure = [(record.confidence[name], voxels) for name, voxels in weights.items() if name in record.confidence]
    if not sure:
        return 1.0
    values, voxels = zip(*sure)
    return float(1.0 - np.average(values, weights=voxels))


def next_round(project: Project, *, cluster: Any = None, batch: int | None = None) -> RoundState:
    """Choose, predict and hand out the next batch; see the module docstring. A batch whose drafts
    a killed ``next`` left unfinished is finished first, before a new one is chosen.

    Raises:
        InputError: another ``next`` runs, or no new case is left.
    """
    with _exclusive(project, "next"):
        state = project.read()
        unfinished = state.with_status("draft")
        if unfinished:
            current = state.rounds[-1]
            chosen = unfinished
            log.info("finishing round %d: %d draft(s) left by a stopped run", current.round, len(chosen))
        else:
            pool = state.with_status("new")
            if not pool:
                raise InputError(f"{project.folder}: no new case left to draft; retrain, or add images with a new "
                                 "project")
            size = min(batch or state.settings.batch, len(pool))
            number = len(state.rounds) + 1
            if state.settings.order == "uncertain":
                scores = _predict(project, state, pool, cluster)
                for case in pool:
                    case.uncertainty = scores.get(case.case)
                ranked = sorted(pool, key=lambda c: (-(c.uncertainty if c.uncertainty is not None else -1), c.case))
                chosen = ranked[:size]
            else:
                rng = np.random.default_rng(state.settings.seed + number)
                chosen = [pool[i] for i in sorted(rng.choice(len(pool), size=size, replace=False))]
            current = RoundState(number, state.model.version, [c.case for c in chosen], now(), state.settings.order)
            with project.changing() as fresh:
                fresh.rounds.append(current)
                for case in pool:  # every score is kept: the status shows how the order was made
                    fresh.cases[case.case].uncertainty = case.uncertainty
                for case in chosen:
                    fresh.cases[case.case].status = "draft"
                    fresh.cases[case.case].round = number
                    fresh.cases[case.case].draft_model = state.model.version
                    fresh.cases[case.case].uncertainty = case.uncertainty
            state = project.read()
            chosen = [state.cases[c.case] for c in chosen]
        scores = _predict(project, state, chosen, cluster)
        _hand_out(project, state, chosen, scores)
        return current


def _hand_out(project: Project, state: ProjectState, chosen: Sequence[CaseState], scores: dict[str, float]) -> None:
    version = state.models[chosen[0].draft_model or 0] if chosen else state.model
    classes = _model_classes(project.resolved_path(version.folder), state.settings)
    names = {value: name for name, value in classes.items()}
    out = project.predictions_folder(version.version)
    for case in chosen:
        draft_path = out / f"{case.case}_seg.nii.gz"
        with project.changing() as fresh:
            entry = fresh.cases[case.case]
            if not draft_path.is_file():
                entry.status, entry.reason = "rejected", _failure(out, case.case)
                log.error("%s: no draft (%s); rejected", case.case, entry.reason)
                continue
            write_draft_files(project.resolved_path(case.image), read_image(draft_path), names,
                              project.case_folder(entry.round or 0, case.case))
            entry.status, entry.drafted = "in_correction", now()
            if entry.uncertainty is None:
                entry.uncertainty = scores.get(case.case)


def _failure(out: Path, case: str) -> str:
    from mrseg.cohort import Manifest

    row = Manifest.read(out).rows.get(case)
    return row.error if row is not None and row.error else "the prediction failed"


def correction_files(project: Project, state: ProjectState, items: Sequence[str | os.PathLike[str]]
                     ) -> list[tuple[str, Path]]:
    """(case, corrected file) for each argument of ``submit``: a case folder holding
    ``corrected.*``, a corrected file named after its case (``CASE.nii.gz``, ``CASE.seg.nrrd``,
    ``CASE_corrected.nii.gz``), or a folder of such files.

    Raises:
        InputError: an argument that names no case in correction.
    """
    waiting = {c.case for c in state.with_status("in_correction")}
    found: list[tuple[str, Path]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            inside = [path / n for n in CORRECTION_NAMES if (path / n).is_file()]
            if inside and path.name in waiting:
                found.append((path.name, inside[0]))
                continue
            files = [p for p in sorted(path.iterdir()) if p.is_file() and _case_of(p, waiting)]
            if not files:
                raise InputError(f"{path}: no corrected file in it (expected {CORRECTION_NAMES[0]} or "
                                 f"{CORRECTION_NAMES[1]}, or files named after cases in correction)")
            found += [(_case_of(p, waiting) or "", p) for p in files]
        elif path.is_file():
            case = _case_of(path, waiting) or (path.parent.name if path.parent.name in waiting else None)
            if case is None:
                raise InputError(f"{path}: names no case in correction ({', '.join(sorted(waiting)[:5]) or 'none'}); "
                                 "name the file after its case, or give the case folder")
            found.append((case, path))
        elif str(item) in waiting:
            folder = project.case_folder(state.cases[str(item)].round or 0, str(item))
            inside = [folder / n for n in CORRECTION_NAMES if (folder / n).is_file()]
            if not inside:
                raise InputError(f"{item}: no corrected file in {folder} yet (save it as {CORRECTION_NAMES[0]} or "
                                 f"{CORRECTION_NAMES[1]})")
            found.append((str(item), inside[0]))
        else:
            raise InputError(f"{item}: no such file, folder or case in correction")
    return found


def _case_of(path: Path, waiting: set[str]) -> str | None:
    name = path.name.removesuffix(".seg.nrrd") if path.name.endswith(".seg.nrrd") else case_name(path)
    name = name.removesuffix("_corrected")
    return name if name in waiting else None


def submit(project: Project, case: str, path: Path) -> dict[str, Any]:
    """Accept ``path`` as the correction of ``case``: check it, measure the effort against the
    draft, keep it in ``PROJECT/accepted/CASE.nii.gz``; returns the effort.

    Raises:
        InputError: the case is not in correction, or the file is not a valid correction.
    """
    state = project.read()
    entry = state.cases.get(case)
    if entry is None or entry.status != "in_correction":
        raise InputError(f"{case}: not a case in correction ({entry.status if entry else 'unknown'}); "
                         "see mrseg annotate status")
    folder = project.case_folder(entry.round or 0, case)
    draft = read_image(folder / "draft.nii.gz")
    classes = _model_classes(project.resolved_path(state.models[entry.draft_model or 0].folder), state.settings)
    corrected = read_correction(path, draft.geometry, classes)
    effort = measure_effort(draft, corrected, classes)
    write_image(corrected, project.folder / "accepted" / f"{case}.nii.gz")
    with project.changing() as fresh:
        target = fresh.cases[case]
        if target.status != "in_correction":
            raise InputError(f"{case}: was {target.status} meanwhile; nothing changed")
        target.status, target.submitted, target.effort = "accepted", now(), effort
    return effort


def reject(project: Project, case: str, reason: str) -> None:
    """Take a case out of the loop (unusable image, wrong anatomy): never trained on or chosen again."""
    with project.changing() as state:
        entry = state.cases.get(case)
        if entry is None or entry.status == "accepted":
            raise InputError(f"{case}: {'unknown case' if entry is None else 'already accepted'}; nothing changed")
        entry.status, entry.reason = "rejected", reason


def retrain(project: Project, *, training: Any = None, planning: Any = None,
            on_step: Callable[[str], None] | None = None) -> ModelVersion:
    """Fine-tune the current model on every accepted case and register the next version.

    Args:
        training: :class:`~mrseg.training.TrainingOptions` (epochs, iterations, device, seed;
            ``init_from`` and the fold are set here).
        planning: :class:`~mrseg.training.PlanningOptions` (the network and spacing come from the
            current model's plans).

    Raises:
        InputError: another retrain runs, or no accepted case yet.
    """
    from mrseg.model.plans import read_dataset
    from mrseg.training import (
        DatasetCase,
        NnunetFolders,
        PlanningOptions,
        TrainingOptions,
        build_dataset,
        plan_and_preprocess,
        train_fold,
    )

    with _exclusive(project, "retrain"):
        state = project.read()
        accepted = state.with_status("accepted")
        if not accepted:
            raise InputError(f"{project.folder}: no accepted case yet; submit corrections first")
        source = state.model
        source_folder = project.resolved_path(source.folder)
        number = source.version + 1
        models = project.models_folder()
        for stale in list(models.glob(f".v{number}.*")) + ([models / f"v{number}"] if (models / f"v{number}").exists()
                                                            else []):
            shutil.rmtree(stale, ignore_errors=True)  # a killed retrain's half-copied model
        clock = time.perf_counter()
        folders = NnunetFolders.under(project.folder / "training")
        cases = [DatasetCase(image=str(project.resolved_path(c.image)),
                             label=str(project.folder / "accepted" / f"{c.case}.nii.gz"), name=c.case)
                 for c in accepted]
        _announce(on_step, f"dataset of {len(cases)} accepted case(s)")
        planning = planning or PlanningOptions(processes=1)
        inputs = _training_inputs(cases, source_folder, planning)
        inputs_file = folders.preprocessed / f"Dataset{DATASET_ID:03d}_annotation" / "mrseg_inputs.json"
        if inputs_file.is_file() and json.loads(inputs_file.read_text()) == inputs:
            _announce(on_step, "same cases, model and planning as the last preprocessing (a killed retrain): reused")
        else:
            inputs_file.unlink(missing_ok=True)
            # the new version keeps the classes (and values) of the model whose drafts were corrected
            labels = read_dataset(source_folder / "dataset.json").foreground
            build_dataset(cases, folders.raw, dataset_id=DATASET_ID, name="annotation", overwrite=True, labels=labels)
            _announce(on_step, "planning and preprocessing (network and spacing of the current model)")
            plan_and_preprocess(folders, DATASET_ID, planning, transfer_from=source_folder)
            write_bytes_atomic(inputs_file, json.dumps(inputs))  # only once preprocessing is whole
        options = replace(training or TrainingOptions(), init_from=str(source_folder), init_fold=_fold(source.fold),
                          validate=False)
        _announce(on_step, f"training from model v{source.version}")
        trained = train_fold(folders, DATASET_ID, "all", options)
        staging = models / f".v{number}.part"
        leave_out = ("*.png", "debug.json", "*.txt", "checkpoint_latest.pth", "checkpoint_best.pth", ".*.part")
        shutil.copytree(trained, staging, ignore=shutil.ignore_patterns(*leave_out))
        os.replace(staging, models / f"v{number}")
        version = ModelVersion(number, project.stored_path(models / f"v{number}"), now(), len(accepted), "all",
                               round(time.perf_counter() - clock, 1))
        with project.changing() as fresh:
            fresh.models.append(version)
        return version


def _training_inputs(cases: Sequence[Any], model_folder: Path, planning: Any) -> dict[str, Any]:
    """What a preprocessed training set was made from: each image and accepted label map (path,
    size, modification time), the starting model and the planning options."""
    def stamp(path: str) -> list[Any]:
        info = os.stat(path)
        return [str(Path(path).resolve()), info.st_size, info.st_mtime_ns]

    return {"cases": [[case.name, stamp(case.image), stamp(case.label)] for case in cases],
            "model": str(model_folder.resolve()), "planning": json.loads(json.dumps(asdict(planning)))}


def _fold(fold: str) -> int | str:
    return int(fold) if fold.isdigit() else fold


def _announce(callback: Callable[[str], None] | None, text: str) -> None:
    log.info("%s", text)
    if callback is not None:
        callback(text)


@contextlib.contextmanager
def _exclusive(project: Project, job: str) -> Iterator[None]:
    """One ``next`` (or one ``retrain``) per project at a time; the kernel frees the lock when its
    holder dies, so a killed command never blocks the next one."""
    project.folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(project.folder / f".{job}.lock")
    if not lock.acquire():
        owner = lock.owner()
        raise InputError(f"{project.folder}: another {job} is running{' (' + owner.describe() + ')' if owner else ''}"
                         "; wait for it")
    try:
        yield
    finally:
        lock.release()


def round_table(state: ProjectState) -> list[dict[str, Any]]:
    """One row per round (:data:`ROUND_COLUMNS`): its cases, accepted so far, mean draft Dice
    against the corrections, mean effort, the model that drafted it and what it was trained on."""
    rows = []
    total = 0
    for current in state.rounds:
        cases = [state.cases[name] for name in current.cases if name in state.cases]
        done = [c for c in cases if c.status == "accepted" and c.effort]
        total += len(done)
        dice = [c.effort["dice_mean"] for c in done if c.effort and c.effort.get("dice_mean") is not None]
        voxels = [c.effort["voxels_changed"] for c in done if c.effort]
        fraction = [c.effort["fraction_changed"] for c in done if c.effort]
        submitted = [c.submitted for c in done if c.submitted]
        hours = None
        if submitted:
            hours = round((_epoch(max(submitted)) - _epoch(current.started)) / 3600.0, 3)
        model = state.models[current.model] if current.model < len(state.models) else None
        rows.append({"round": current.round, "cases": len(cases), "accepted": len(done), "accepted_total": total,
                     "draft_dice_mean": round(float(np.mean(dice)), 4) if dice else None,
                     "effort_voxels_mean": round(float(np.mean(voxels)), 1) if voxels else None,
                     "effort_fraction_mean": round(float(np.mean(fraction)), 5) if fraction else None,
                     "model": f"v{current.model}", "model_trained_on": model.accepted_cases if model else None,
                     "order": current.order, "started": current.started, "hours": hours})
    return rows


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))


def write_status(project: Project) -> tuple[list[dict[str, Any]], list[Path]]:
    """Write ``PROJECT/rounds.csv`` and (with matplotlib) ``PROJECT/learning_curve.png``."""
    state = project.read()
    rows = round_table(state)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROUND_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    written = [write_bytes_atomic(project.folder / "rounds.csv", buffer.getvalue())]
    try:
        written.append(learning_curve(rows, project.folder / "learning_curve.png"))
    except ImportError:
        log.warning("no learning curve: matplotlib is not installed (pip install 'mrseg[report]')")
    return rows, written


def learning_curve(rows: Sequence[dict[str, Any]], path: Path, *, label: str = "") -> Path:
    """Draft Dice and effort against the accepted cases the drafting model was trained on."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [r for r in rows if r["draft_dice_mean"] is not None]
    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    dice_axis, effort_axis = figure.subplots(1, 2)
    x = [r["model_trained_on"] for r in done]
    dice_axis.plot(x, [r["draft_dice_mean"] for r in done], "o-", label=label or None)
    effort_axis.plot(x, [100 * r["effort_fraction_mean"] for r in done], "o-", label=label or None)
    for row in done:
        dice_axis.annotate(f"round {row['round']}", (row["model_trained_on"], row["draft_dice_mean"]), fontsize=7,
                           xytext=(3, -10), textcoords="offset points")
    dice_axis.set(xlabel="accepted cases the drafting model was trained on", ylabel="mean draft Dice vs correction",
                  title="Draft quality")
    effort_axis.set(xlabel="accepted cases the drafting model was trained on", ylabel="voxels changed (%)",
                    title="Correction effort")
    dice_axis.set_ylim(0, 1)  # the whole scale: noise on a tiny range must not look like a trend
    effort_axis.set_ylim(bottom=0)
    for axis in (dice_axis, effort_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    handle = io.BytesIO()
    figure.savefig(handle, format="png", dpi=110)
    return write_bytes_atomic(path, handle.getvalue())


def truth_file(truth: Path, case: str) -> Path:
    """The reference label map of ``case`` in ``truth``: ``CASE.nii.gz``, ``CASE_labels.nii.gz``
    (as ``mrseg phantom`` writes them) or another image suffix.

    Raises:
        InputError: none found.
    """
    for pattern in (f"{case}_labels.*", f"{case}.*", f"{case}_seg.*"):
        for path in sorted(truth.glob(pattern)):
            if path.is_file() and not path.name.endswith(".json"):
                return path
    raise InputError(f"{truth}: no reference label map for case {case} (expected {case}_labels.nii.gz or "
                     f"{case}.nii.gz)")


def simulate(project: Project, truth: Path, *, rounds: int, training: Any = None, planning: Any = None,
             cluster: Any = None, on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Bring the project to ``rounds`` rounds with an oracle annotator (the correction is the truth
    in ``truth``), fine-tuning the model on everything accepted before each new round; returns the
    round table. A rerun continues where a stopped one ended (a batch in correction is corrected,
    a missing retrain is done, unfinished drafts are finished).

    Raises:
        InputError: a case without its reference label map.
    """
    while True:
        state = project.read()
        waiting = state.with_status("in_correction")
        if waiting:
            for case in waiting:
                try:
                    submit(project, case.case, truth_file(truth, case.case))
                except MrsegError as err:
                    reject(project, case.case, str(err))
            if on_round is not None:
                on_round(round_table(project.read())[-1])
            continue
        if state.with_status("draft"):
            next_round(project, cluster=cluster)
            continue
        if len(state.rounds) >= rounds or not state.with_status("new"):
            break
        if state.model.version < len(state.rounds):
            retrain(project, training=training, planning=planning)
        next_round(project, cluster=cluster)
    return round_table(project.read())


__all__ = ["CORRECTION_NAMES", "DATASET_ID", "ROUND_COLUMNS", "correction_files", "init_project", "learning_curve",
           "next_round", "reject", "retrain", "round_table", "simulate", "submit", "truth_file", "write_status"]
