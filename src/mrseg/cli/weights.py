"""``mrseg weights``: list, install, import, verify and remove models in the model store; average or ensemble
model folders, or extract one network of an ensemble."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "weights",
        help="list, install, import, verify and remove models in the weights store; average, ensemble or extract "
             "model folders",
        description=(
            "The weights store ($MRSEG_HOME, default ~/.mrseg) holds models by name. 'install' downloads a "
            "published model (progress, resume, retries), checks its sha256 and installs it atomically; "
            "'import' installs a zip or model folder you already have (offline). $MRSEG_MIRROR is the base URL "
            "of a mirror serving the published archives by file name; $MRSEG_OFFLINE=1 forbids downloads. "
            "'average' writes the weight-space average of model folders fine-tuned from one model (a model "
            "and its fine-tune: WiSE-FT; several fine-tunes: a model soup) as a new model folder. 'ensemble' "
            "writes one model folder that runs several models, each on its own grid, and averages their class "
            "probabilities (nnU-Net's ensembling of configurations); 'extract' writes one network of such a folder as "
            "a model folder of its own."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the published, bundled and imported models and whether they are installed")
    install = actions.add_parser("install", help="download, verify and install a published model")
    install.add_argument("name", help="published model name (base, body_comp)")
    install.add_argument("--url", help="download from this URL instead (the published sha256 is still checked)")
    install.add_argument("--force", action="store_true", help="reinstall over an existing install")
    imported = actions.add_parser("import", help="install a model from a local zip archive or model folder")
    imported.add_argument("source", metavar="ZIP_OR_DIR")
    imported.add_argument("--name", help="store name (default: the published name its sha256 matches)")
    imported.add_argument("--force", action="store_true", help="replace a model of that name")
    for action, text in (("path", "print an installed model's folder"),
                         ("verify", "re-check every file of an installed model against its install record"),
                         ("remove", "delete an installed model")):
        actions.add_parser(action, help=text).add_argument("name")
    average = actions.add_parser("average", help="average the weights of model folders fine-tuned from one model")
    average.add_argument("folders", nargs="+", metavar="MODEL_DIR",
                         help="two or more model folders with the same labels, folds and plans")
    average.add_argument("--out", required=True, metavar="DIR", help="the new model folder (must not exist)")
    average.add_argument("--shares", type=float, nargs="+", metavar="W",
                         help="one weight per folder, divided by their sum (default: equal)")
    ensemble = actions.add_parser("ensemble", help="one model folder that averages the probabilities of several models")
    ensemble.add_argument("folders", nargs="+", metavar="MODEL_DIR",
                          help="two or more model folders with the same labels and input channels (any grid); "
                               "the first is the folder's own model, nnU-Net loads it alone")
    ensemble.add_argument("--out", required=True, metavar="DIR", help="the new model folder (must not exist)")
    ensemble.add_argument("--half", action="store_true",
                          help="store the weights in float16 (half the size; they still run in float32)")
    ensemble.add_argument("--describe", action="append", metavar="TEXT",
                          help="how a folder's network was made, written to mrseg_ensemble.json in place of its path; "
                               "repeat once per folder, in order (for a folder that is shipped)")

    extract = actions.add_parser("extract", help="write one network of an ensemble folder as a model folder of its own")
    extract.add_argument("folder", metavar="ENSEMBLE_DIR")
    extract.add_argument("--out", required=True, metavar="DIR", help="the new model folder (must not exist)")
    extract.add_argument("--member", metavar="NAME",
                         help="a member (as mrseg_ensemble.json names it, e.g. members/4mm, or 4mm); default: the "
                              "folder's own network, the one nnU-Net loads alone")


def run(args: argparse.Namespace) -> int:
    from mrseg.errors import MrsegError
    from mrseg.model import store

    try:
        if args.action == "list":
            for entry in store.list_models():
                where = str(entry.folder) if entry.folder else ""
                print(f"{entry.name:<12} {entry.status:<14} {entry.description}  {where}".rstrip())
        elif args.action == "install":
            print(store.install(args.name, url=args.url, force=args.force))
        elif args.action == "import":
            print(store.import_model(args.source, name=args.name, force=args.force))
        elif args.action == "path":
            print(store.model_path(args.name))
        elif args.action == "verify":
            problems = store.verify(args.name)
            for problem in problems:
                log.error("%s: %s", args.name, problem)
            if problems:
                log.error("%s is damaged; reinstall it with 'mrseg weights install %s --force' (or import it again)",
                          args.name, args.name)
                return 1
            print(f"{args.name}: every file matches its install record")
        elif args.action == "remove":
            print(f"removed {store.remove(args.name)}")
        elif args.action == "average":
            from mrseg.training.averaging import average_models  # only here: training is heavier to import

            print(average_models(args.folders, out=args.out, shares=args.shares))
        elif args.action == "ensemble":
            from mrseg.model.ensemble import make_ensemble

            print(make_ensemble(args.folders, out=args.out, half=args.half, descriptions=args.describe))
        elif args.action == "extract":
            from mrseg.model.ensemble import extract_network

            print(extract_network(args.folder, out=args.out, member=args.member))
    except MrsegError as err:
        log.error("%s", err)
        return 2
    return 0
