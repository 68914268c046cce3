"""``mrseg train``: plan, preprocess and train with nnU-Net v2."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

LOSSES = ("dice_ce", "dice_topk10")  # mrseg.training.nnunet.LOSSES, without importing the training stack

log = logging.getLogger("mrseg")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train",
        help="plan, preprocess and train with nnU-Net v2 (folds, cross-validation, transfer learning)",
        description=(
            "Plan and preprocess a raw dataset with nnU-Net's default planner (plus the overrides "
            "below), train the folds with nnU-Net's own trainer (nnUNetTrainerNoMirroring unless "
            "--mirroring) and, when every fold validated, write a per-class Dice table of all "
            "validation cases to MODEL/crossval and decide nnU-Net's postprocessing on them "
            "(MODEL/crossval_results_folds_<folds>/postprocessing.json, applied by 'mrseg segment'). "
            "The result is a standard nnU-Net v2 model folder that 'mrseg segment --model' and "
            "nnU-Net's predictor load."
        ),
    )
    p.add_argument("--id", type=int, required=True, metavar="N", help="dataset id (mrseg dataset build --id)")
    p.add_argument("--root", metavar="DIR",
                   help="folder holding nnUNet_raw, nnUNet_preprocessed and nnUNet_results (default: the "
                        "$nnUNet_raw, $nnUNet_preprocessed, $nnUNet_results variables)")
    p.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"], metavar="K",
                   help="folds to train, 0-4 or 'all' (default: all five, cross-validation)")
    p.add_argument("--epochs", type=int, default=1000, help="epochs (default 1000)")
    p.add_argument("--iterations", type=int, default=250, metavar="N", help="training batches per epoch (default 250)")
    p.add_argument("--val-iterations", type=int, default=50, metavar="N",
                   help="validation batches per epoch (default 50)")
    p.add_argument("--lr", type=float, default=1e-2, help="initial learning rate (default 0.01)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--mirroring", action="store_true",
                   help="mirror augmentation (off by default: left/right structures must not swap)")
    p.add_argument("--loss", choices=LOSSES, default="dice_ce",
                   help="nnU-Net's loss: dice_ce (default) or dice_topk10 (Dice plus the cross-entropy of the "
                        "hardest 10 %% of voxels, for classes of a few voxels)")
    p.add_argument("--class-weight", nargs=2, action="append", default=[], metavar=("CLASS", "WEIGHT"),
                   help="weigh this class's voxels so in the cross-entropy term (others 1), for a class the "
                        "network gives up on; repeatable")
    p.add_argument("--scale-augmentation", type=float, nargs=3, metavar=("P", "LOW", "HIGH"),
                   help="zoom augmentation: share of patches zoomed and the factor range (default nnU-Net's: 0.2 "
                        "0.7 1.4; larger factors show smaller structures)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="target spacing in mm")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), help="patch size")
    p.add_argument("--base-features", type=int, metavar="N", help="features of the first stage (default 32)")
    p.add_argument("--max-features", type=int, metavar="N", help="largest number of features (default 320)")
    p.add_argument("--batch-size", type=int, metavar="N", help="batch size (default: the planner's)")
    p.add_argument("--memory-target", type=float, metavar="GB", help="the planner's GPU memory target (default 8)")
    p.add_argument("--processes", type=int, default=2, metavar="N", help="preprocessing processes (default 2)")
    p.add_argument("--augmentation-processes", type=int, default=0, metavar="N",
                   help="data augmentation worker processes (default 0: in the training process)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from this nnU-Net model folder's weights (transfer learning); the plans copy its "
                        "network, patch size and spacing (--spacing trains at another one)")
    p.add_argument("--init-fold", type=int, default=0, metavar="K", help="fold of --init-from to start from")
    p.add_argument("--no-plan", action="store_true", help="reuse the existing plans and preprocessed data")
    p.add_argument("--no-validate", action="store_true", help="skip the validation predictions and the Dice table")
    p.add_argument("--resume", action="store_true",
                   help="continue each fold's interrupted run from its checkpoint_latest.pth (with --no-plan; "
                        "folds already trained are kept)")
    p.add_argument("--save-every", type=int, default=50, metavar="N",
                   help="write checkpoint_latest.pth every N epochs (default 50)")


def run(args: argparse.Namespace) -> int:
    import os

    from mrseg.errors import MrsegError
    from mrseg.training.crossval import run_cross_validation
    from mrseg.training.nnunet import NnunetFolders, PlanningOptions, TrainingOptions, class_weights_from_pairs

    if args.root:
        folders = NnunetFolders.under(args.root)
    else:
        names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            log.error("give --root DIR or set %s", ", ".join(f"${n}" for n in missing))
            return 2
        folders = NnunetFolders(*(Path(os.environ[n]) for n in names))
    planning = PlanningOptions(
        spacing=tuple(args.spacing) if args.spacing else None,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        base_features=args.base_features, max_features=args.max_features, batch_size=args.batch_size,
        memory_target_gb=args.memory_target, processes=args.processes,
    )
    try:
        class_weights = class_weights_from_pairs(args.class_weight)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    folds: list[int | str] = [f if f == "all" else int(f) for f in args.folds]

    def fold_done(fold: int | str, model: Path) -> None:
        log.warning("fold %s trained: %s", fold, model)

    try:
        training = TrainingOptions(
            epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations_per_epoch=args.val_iterations,
            initial_lr=args.lr, device=args.device, seed=args.seed, mirroring=args.mirroring,
            augmentation_processes=args.augmentation_processes, init_from=args.init_from, init_fold=args.init_fold,
            validate=not args.no_validate, resume=args.resume, save_every=args.save_every, loss=args.loss,
            class_weights=class_weights,
            scale_augmentation=tuple(args.scale_augmentation) if args.scale_augmentation else None,
        )
        result = run_cross_validation(folders, args.id, folds=folds, planning=planning, training=training,
                                      plan=not args.no_plan, on_fold=fold_done)
    except MrsegError as err:
        log.error("%s", err)
        return 2
    if result.report is not None:
        for name, value in result.mean_dice.items():
            log.warning("%-32s mean Dice %.3f", name, value)
        log.warning("validation report: %s", result.report)
    if result.postprocessing is not None:
        log.warning("postprocessing decided on the validation cases (applied when the model is used): %s",
                    result.postprocessing)
    log.warning("model folder: %s", result.model_folder)
    return 0
