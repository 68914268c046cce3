"""``mrseg annotate init|next|submit|reject|retrain|status|simulate``: parse, call
:mod:`mrseg.annotation`, print."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "annotate", help="human-in-the-loop annotation rounds: draft, correct, retrain, repeat",
        description=("Build a labelled dataset the way MRSegmentator's was made: draft a batch with the current "
                     "model, correct the drafts in ITK-SNAP or 3D Slicer, submit them, fine-tune the model on "
                     "everything accepted, repeat."))
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    init = actions.add_parser("init", help="start a project")
    init.add_argument("project", metavar="PROJECT", help="project folder (created)")
    init.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_FILE",
                      help="image files, folders or glob patterns to annotate")
    init.add_argument("--model", help="starting model folder or name, e.g. a CT model (default: "
                                      "$MRSEG_WEIGHTS_PATH, else base)")
    init.add_argument("--batch", type=int, default=50, help="cases per round (default 50)")
    init.add_argument("--classes", nargs="+", metavar="CLASS", help="keep only these classes in the drafts")
    init.add_argument("--order", choices=("random", "uncertain"), default="random",
                      help="random, or most uncertain first (the whole pool is scored each round)")
    init.add_argument("--seed", type=int, default=0, help="seed of the random order (default 0)")
    init.add_argument("--step", type=float, default=0.5, help="sliding-window step of the drafts (default 0.5)")

    nxt = actions.add_parser("next", help="choose the next batch, predict drafts, export them for correction")
    nxt.add_argument("project", metavar="PROJECT")
    nxt.add_argument("--batch", type=int, help="cases in this round (default: the project's)")
    nxt.add_argument("--workers", type=int, metavar="N", help="Dask workers that predict (default: one per core)")

    submit = actions.add_parser("submit", help="take corrected label maps back")
    submit.add_argument("project", metavar="PROJECT")
    submit.add_argument("corrections", nargs="+", metavar="CASE_OR_DIR",
                        help="case names, case folders holding corrected.nii.gz or corrected.seg.nrrd, corrected files "
                             "named after their case, or folders of them")

    reject = actions.add_parser("reject", help="take a case out of the loop")
    reject.add_argument("project", metavar="PROJECT")
    reject.add_argument("case", metavar="CASE")
    reject.add_argument("--reason", default="rejected by the annotator", help="why (kept in the project)")

    retrain = actions.add_parser("retrain", help="fine-tune on every accepted case: the next model version")
    retrain.add_argument("project", metavar="PROJECT")
    _add_training_options(retrain)

    status = actions.add_parser("status", help="rounds, draft quality, effort, learning curve")
    status.add_argument("project", metavar="PROJECT")

    simulate = actions.add_parser("simulate", help="the whole loop with an oracle annotator (known truth)")
    simulate.add_argument("project", metavar="PROJECT", help="an initialised project")
    simulate.add_argument("--truth", required=True, metavar="DIR",
                          help="reference label maps, CASE_labels.nii.gz or CASE.nii.gz")
    simulate.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    simulate.add_argument("--workers", type=int, metavar="N", help="Dask workers that predict (default: one per core)")
    _add_training_options(simulate)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=50, help="epochs per retrain (default 50)")
    p.add_argument("--iterations", type=int, default=50, metavar="N", help="batches per epoch (default 50)")
    p.add_argument("--lr", type=float, default=1e-2, help="initial learning rate (default 0.01)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--processes", type=int, default=1, metavar="N", help="preprocessing processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError

    try:
        return int(ACTIONS[args.action](args))
    except MrsegError as err:
        log.error("%s", err)
        return 2


def _init(args: argparse.Namespace) -> int:
    from mrseg.annotation import Settings, init_project
    from mrseg.model.store import resolve_model_folder

    model = resolve_model_folder(args.model, install_missing=True)
    state = init_project(Path(args.project), args.images, model, settings=Settings(
        batch=args.batch, order=args.order, classes=args.classes, seed=args.seed, step=args.step))
    print(f"project {args.project}: {len(state.cases)} case(s), model v0 = {model}, batch {args.batch}, "
          f"order {args.order}")
    return 0


def _next(args: argparse.Namespace) -> int:
    from mrseg.annotation import Project, next_round
    from mrseg.cohort import ClusterSpec

    project = Project(args.project)
    current = next_round(project, cluster=ClusterSpec(workers=args.workers), batch=args.batch)
    state = project.read()
    print(f"round {current.round}: {len(current.cases)} draft(s) by model v{current.model} in "
          f"{project.round_folder(current.round)}")
    for name in current.cases:
        case = state.cases[name]
        sure = f", uncertainty {case.uncertainty:.3f}" if case.uncertainty is not None else ""
        print(f"  {case.status:<13} {name}{sure}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from mrseg.annotation import Project, correction_files, submit
    from mrseg.errors import MrsegError

    project = Project(args.project)
    failed = 0
    for case, path in correction_files(project, project.read(), args.corrections):
        try:
            effort = submit(project, case, path)
        except MrsegError as err:
            log.error("%s", err)
            failed += 1
            continue
        dice = f"{effort['dice_mean']:.3f}" if effort["dice_mean"] is not None else "-"
        added = f", added {', '.join(effort['classes_added'])}" if effort["classes_added"] else ""
        print(f"accepted {case}: {effort['voxels_changed']} voxels changed, draft Dice {dice}{added}")
    return 1 if failed else 0


def _reject(args: argparse.Namespace) -> int:
    from mrseg.annotation import Project, reject

    reject(Project(args.project), args.case, args.reason)
    print(f"rejected {args.case}")
    return 0


def _training(args: argparse.Namespace) -> tuple[Any, Any]:
    from mrseg.training import PlanningOptions, TrainingOptions

    return (TrainingOptions(epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=1,
                            initial_lr=args.lr, device=args.device, seed=args.seed, save_every=10**6),
            PlanningOptions(processes=args.processes))


def _retrain(args: argparse.Namespace) -> int:
    from mrseg.annotation import Project, retrain

    training, planning = _training(args)
    project = Project(args.project)
    version = retrain(project, training=training, planning=planning, on_step=lambda text: print(text, file=sys.stderr))
    print(f"model v{version.version}: trained on {version.accepted_cases} accepted case(s) in {version.seconds} s, "
          f"{project.resolved_path(version.folder)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from mrseg.annotation import Project, write_status
    from mrseg.annotation.project import STATUSES

    project = Project(args.project)
    state = project.read()
    counts = ", ".join(f"{sum(c.status == s for c in state.cases.values())} {s}" for s in STATUSES)
    print(f"{project.folder}: {len(state.cases)} case(s): {counts}; model v{state.model.version} "
          f"(trained on {state.model.accepted_cases})")
    rows, files = write_status(project)
    _print_rounds(rows)
    for path in files:
        print(f"  {path}")
    return 0


def _print_rounds(rows: list[dict[str, Any]]) -> None:
    print(f"{'round':>5} {'cases':>5} {'accepted':>8} {'total':>5} {'draft Dice':>10} {'changed %':>9} model")
    for r in rows:
        dice = f"{r['draft_dice_mean']:.3f}" if r["draft_dice_mean"] is not None else "-"
        changed = f"{100 * r['effort_fraction_mean']:.2f}" if r["effort_fraction_mean"] is not None else "-"
        print(f"{r['round']:>5} {r['cases']:>5} {r['accepted']:>8} {r['accepted_total']:>5} {dice:>10} {changed:>9} "
              f"{r['model']} (trained on {r['model_trained_on']})")


def _simulate(args: argparse.Namespace) -> int:
    from mrseg.annotation import Project, simulate, write_status
    from mrseg.cohort import ClusterSpec

    training, planning = _training(args)
    project = Project(args.project)
    rows = simulate(project, Path(args.truth), rounds=args.rounds, training=training, planning=planning,
                    cluster=ClusterSpec(workers=args.workers),
                    on_round=lambda row: print(f"round {row['round']}: draft Dice {row['draft_dice_mean']}, "
                                               f"{row['effort_voxels_mean']} voxels changed", file=sys.stderr))
    _print_rounds(rows)
    write_status(project)
    return 0


ACTIONS = {"init": _init, "next": _next, "submit": _submit, "reject": _reject, "retrain": _retrain,
           "status": _status, "simulate": _simulate}
