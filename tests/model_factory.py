"""Small nnU-Net v2 model folders for tests: real plans, real checkpoints, trained weights.

Random weights give near-uniform logits, so label comparisons would be dominated by ties.
The networks here are trained for a few dozen steps on blob phantoms, which gives logits with
spatial structure and clear margins, like a real model's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NUM_LABELS = 5  # background + 4 blob classes

CT_INTENSITY = {"mean": 40.0, "std": 300.0, "percentile_00_5": -1000.0, "percentile_99_5": 1500.0,
                "median": 30.0, "min": -1024.0, "max": 3000.0}


def blob_phantom(
    shape: Sequence[int], spacing_zyx: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A body ellipsoid with four blob 'organs'; returns (image, labels), numpy (z, y, x).

    Outside the body the image is exactly 0 (so nnU-Net's non-zero cropping applies).
    """
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing_zyx)], indexing="ij")
    extent = [n * s / 2 for n, s in zip(shape, spacing_zyx)]
    body = sum((g / (0.9 * e)) ** 2 for g, e in zip(grids, extent)) <= 1.0
    image = np.where(body, 1.0 + 0.08 * rng.standard_normal(shape), 0.0)
    labels = np.zeros(shape, np.uint8)
    intensities = [2.2, 4.0, 3.0, 1.6]
    for label, value in enumerate(intensities, 1):
        centre = [rng.uniform(-0.35, 0.35) * e for e in extent]
        radii = [rng.uniform(0.3, 0.5) * e for e in extent]
        blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
        blob &= body
        image[blob] = value + 0.08 * rng.standard_normal(int(blob.sum()))
        labels[blob] = label
    return image.astype(np.float32), labels


def architecture(kind: str, *, old_format: bool = False) -> dict[str, Any]:
    """A tiny 3-stage U-Net configuration block (current or old plans format)."""
    kernels = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    if old_format:
        return {
            "UNet_class_name": kind,
            "UNet_base_num_features": 4,
            "unet_max_num_features": 16,
            "n_conv_per_stage_encoder": [1, 2, 2] if kind == "ResidualEncoderUNet" else [2, 2, 2],
            "n_conv_per_stage_decoder": [1, 1] if kind == "ResidualEncoderUNet" else [2, 2],
            "num_pool_per_axis": [1, 2, 2],
            "pool_op_kernel_sizes": strides,
            "conv_kernel_sizes": kernels,
        }
    blocks = {"n_conv_per_stage": [2, 2, 2]} if kind == "PlainConvUNet" else {"n_blocks_per_stage": [1, 2, 2]}
    return {
        "architecture": {
            "network_class_name": f"dynamic_network_architectures.architectures.unet.{kind}",
            "arch_kwargs": {
                "n_stages": 3,
                "features_per_stage": [4, 8, 16],
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": kernels,
                "strides": strides,
                **blocks,
                "n_conv_per_stage_decoder": [2, 2] if kind == "PlainConvUNet" else [1, 1],
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }
    }


def make_plans(
    *,
    kind: str = "PlainConvUNet",
    normalization: str = "ZScoreNormalization",
    use_mask_for_norm: bool = False,
    transpose: Sequence[int] = (0, 1, 2),
    patch_size: Sequence[int] = (16, 32, 32),
    spacing: Sequence[float] = (3.0, 1.5, 1.5),
    old_format: bool = False,
    configuration: str = "3d_fullres",
) -> dict[str, Any]:
    """A plans.json dictionary as nnU-Net's planner writes it (spacing/patch after transpose)."""
    config: dict[str, Any] = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": [40, 64, 64],
        "spacing": list(spacing),
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [use_mask_for_norm],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "batch_dice": False,
        **architecture(kind, old_format=old_format),
    }
    configurations: dict[str, Any] = {"3d_fullres": config}
    if configuration != "3d_fullres":  # e.g. MRSegmentator's 3d_fullres_bs8
        configurations[configuration] = {"inherits_from": "3d_fullres", "batch_size": 8}
    backward = [int(i) for i in np.argsort(transpose)]
    return {
        "dataset_name": "Dataset999_Blobs",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [40, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": backward,
        "configurations": configurations,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(CT_INTENSITY)},
    }


def make_dataset(num_labels: int = NUM_LABELS, channel: str = "MR") -> dict[str, Any]:
    labels = {"background": 0, **{f"class_{i}": i for i in range(1, num_labels)}}
    return {"channel_names": {"0": channel}, "labels": labels, "numTraining": 10, "file_ending": ".nii.gz"}


def train_state_dict(plans: dict[str, Any], *, steps: int = 160, seed: int = 0) -> dict[str, Any]:
    """Train the plans' network briefly on z-scored blob phantoms; returns its state dict."""
    import torch

    from mrseg.model.networks import build_network
    from mrseg.model.plans import parse_plans

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = parse_plans(plans).configuration("3d_fullres")
    network = build_network(config.architecture, num_input_channels=1, num_output_channels=NUM_LABELS)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    patch = config.patch_size
    images, targets = [], []
    for _ in range(6):
        image, labels = blob_phantom(patch, config.spacing, rng)
        images.append((image - image.mean()) / image.std())  # as nnU-Net's z-score normalisation
        targets.append(labels.astype(np.int64))
    x_all, y_all = torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(targets))
    class_weights = torch.tensor([0.2] + [1.0] * (NUM_LABELS - 1))  # blobs are small: weigh them up
    network.train()
    for _ in range(steps):
        pick = torch.from_numpy(rng.choice(len(images), size=2, replace=False))
        loss = torch.nn.functional.cross_entropy(network(x_all[pick]), y_all[pick], weight=class_weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    copies: dict[int, Any] = {}  # keep keys that alias one parameter aliased in the copy
    return {k: copies.setdefault(v.data_ptr(), v.detach().clone()) for k, v in network.state_dict().items()}


def tiny_networks(count: int = 2, kind: str = "PlainConvUNet") -> list[Any]:
    """``count`` untrained tiny networks (seeds 0, 1, ...) of the plans' architecture, 5 output heads, in eval mode."""
    import torch

    from mrseg.model.networks import build_network
    from mrseg.model.plans import parse_plans

    plans = parse_plans(make_plans(kind=kind))
    config = plans.configuration("3d_fullres")
    built = []
    for seed in range(count):
        torch.manual_seed(seed)
        network = build_network(config.architecture, num_input_channels=1, num_output_channels=5).eval()
        built.append(network)
    return built


def perturbed(state: dict[str, Any], seed: int, scale: float = 0.05) -> dict[str, Any]:
    """A nearby set of weights standing in for another fold."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    done: dict[int, Any] = {}  # keys that alias one parameter get the same perturbed tensor
    for key, value in state.items():
        if value.is_floating_point():
            if value.data_ptr() not in done:
                done[value.data_ptr()] = value * (1 + scale * torch.randn(value.shape, generator=gen))
            value = done[value.data_ptr()]
        out[key] = value
    return out


def write_model_folder(
    folder: Path,
    plans: dict[str, Any],
    dataset: dict[str, Any],
    fold_weights: Sequence[dict[str, Any]],
    *,
    trainer_name: str = "nnUNetTrainer",
    mirror_axes: Sequence[int] | None = None,
    configuration: str = "3d_fullres",
    checkpoint_name: str = "checkpoint_final.pth",
) -> Path:
    """Write a standard nnU-Net v2 model folder, checkpoints shaped like nnU-Net's own.

    The checkpoints carry numpy scalars in their training log, as real ones do.
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for fold, weights in enumerate(fold_weights):
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        checkpoint = {
            "network_weights": weights,
            "optimizer_state": {},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)],
                        "ema_fg_dice": [np.float64(0.55)], "lrs": [0.01, 0.009]},
            "_best_ema": np.float64(0.55),
            "current_epoch": 2,
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                          "dataset_json": dataset, "device": torch.device("cpu")},
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": None if mirror_axes is None else tuple(mirror_axes),
        }
        torch.save(checkpoint, folder / f"fold_{fold}" / checkpoint_name)
    return folder


def build_model(
    folder: Path,
    *,
    weights: dict[str, Any] | None = None,
    num_folds: int = 2,
    plans_options: dict[str, Any] | None = None,
    **folder_options: Any,
) -> Path:
    """Plans + trained fold 0 + perturbed further folds, written to ``folder``."""
    plans = make_plans(**(plans_options or {}))
    if weights is None:
        weights = train_state_dict(plans)
    folds = [weights] + [perturbed(weights, seed=k) for k in range(1, num_folds)]
    channel = "CT" if (plans_options or {}).get("normalization") == "CTNormalization" else "MR"
    return write_model_folder(folder, plans, make_dataset(channel=channel), folds, **folder_options)


def model_of_classes(source: Path, folder: Path, classes: Sequence[str], *, fold: int | str = 0) -> Path:
    """A copy of the model folder ``source`` that predicts only ``classes`` (values 1, 2, ... in this
    order): its segmentation head keeps the background's and those classes' outputs, as a model
    trained on those classes alone has one of that size (a CT model with another label set). In
    an ensemble folder (the demo model) every member's head is cut the same way."""
    import shutil

    import torch

    from mrseg.model import ensemble_members

    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("validation", "crossval", "*.md"))
    members = ensemble_members(folder)
    checkpoints = [folder / f"fold_{fold}" / "checkpoint_final.pth",
                   *(path for member in members for path in sorted(member.glob("fold_*/checkpoint_final.pth")))]
    dataset = json.loads((folder / "dataset.json").read_text())
    keep = [0] + [dataset["labels"][name] for name in classes]
    dataset["labels"] = {"background": 0, **{name: value for value, name in enumerate(classes, start=1)}}
    for place in (folder, *members):
        (place / "dataset.json").write_text(json.dumps(dataset, indent=1))
    for checkpoint_file in checkpoints:
        checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
        weights = checkpoint["network_weights"]
        for key in [k for k in weights if ".seg_layers." in k]:
            weights[key] = weights[key][keep].clone()
        torch.save(checkpoint, checkpoint_file)
    return folder
