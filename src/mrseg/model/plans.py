"""nnU-Net v2 ``plans.json`` and ``dataset.json``, parsed once into frozen, validated values.

Both the current plans format (``architecture`` block with ``network_class_name`` and
``arch_kwargs``) and the older one (``UNet_class_name``, ``UNet_base_num_features``, ...) are
read; the older one is converted into the current form exactly as nnU-Net itself converts it.
Configuration inheritance (``inherits_from``, e.g. ``3d_fullres_bs8``) is resolved here too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrseg.errors import ModelError

_OLD_ARCHITECTURE_NAMES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
}


@dataclass(frozen=True)
class Resampling:
    """A resampling function named in the plans and its keyword arguments."""

    function: str
    order: int
    order_z: int
    force_separate_z: bool | None
    is_seg: bool = False


@dataclass(frozen=True)
class Architecture:
    """The network class and its constructor arguments (import names still as strings)."""

    class_name: str
    kwargs: dict[str, Any] = field(hash=False)
    requires_import: tuple[str, ...] = ()

    @property
    def short_name(self) -> str:
        return self.class_name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Configuration:
    """One resolved nnU-Net configuration (``3d_fullres`` and the like)."""

    name: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    resampling_data: Resampling
    resampling_probabilities: Resampling
    architecture: Architecture
    previous_stage: str | None = None

    @property
    def is_3d(self) -> bool:
        return len(self.patch_size) == 3


@dataclass(frozen=True)
class IntensityProperties:
    """Foreground intensity statistics of one input channel (used by CT normalisation)."""

    mean: float
    std: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class Plans:
    """What inference needs from ``plans.json``."""

    dataset_name: str
    plans_name: str
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    configurations: dict[str, Configuration] = field(hash=False)
    intensity_properties: dict[int, IntensityProperties] = field(hash=False)

    def configuration(self, name: str) -> Configuration:
        try:
            return self.configurations[name]
        except KeyError:
            raise ModelError(
                f"configuration {name!r} is not in plans {self.plans_name!r}; "
                f"available: {', '.join(self.configurations)}"
            ) from None


@dataclass(frozen=True)
class DatasetInfo:
    """What inference needs from ``dataset.json``: input channels and output labels."""

    channel_names: tuple[str, ...]
    labels: dict[str, int] = field(hash=False)
    file_ending: str = ".nii.gz"

    @property
    def num_segmentation_heads(self) -> int:
        """Output channels of the network: background plus every predicted label."""
        return len(self.labels) - (1 if "ignore" in self.labels else 0)

    @property
    def foreground(self) -> dict[str, int]:
        """Predicted foreground labels (the training-only ``ignore`` label excluded)."""
        return {name: value for name, value in self.labels.items() if value != 0 and name != "ignore"}


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"{path} is missing; an nnU-Net v2 model folder needs it") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{path} is not valid JSON ({err}); restore the file from the model archive") from err
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return data


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ModelError(f"{where} lacks the key {key!r}; is this an nnU-Net v2 file?")
    return mapping[key]


def _resampling(config: dict[str, Any], which: str, where: str) -> Resampling:
    function = str(_require(config, f"resampling_fn_{which}", where))
    kwargs = dict(config.get(f"resampling_fn_{which}_kwargs", {}))
    return Resampling(
        function=function,
        order=int(kwargs.get("order", 3)),  # nnU-Net's function default when the plans omit it
        order_z=int(kwargs.get("order_z", 0)),
        force_separate_z=kwargs.get("force_separate_z", False),
        is_seg=bool(kwargs.get("is_seg", False)),
    )


def _architecture(config: dict[str, Any], where: str) -> Architecture:
    if "architecture" in config:
        arch = config["architecture"]
        return Architecture(
            class_name=str(_require(arch, "network_class_name", where)),
            kwargs=dict(_require(arch, "arch_kwargs", where)),
            requires_import=tuple(arch.get("_kw_requires_import", ())),
        )
    # The older plans format: rebuild the architecture block the way nnU-Net does.
    old_name = str(_require(config, "UNet_class_name", where))
    if old_name not in _OLD_ARCHITECTURE_NAMES:
        raise ModelError(
            f"{where}: architecture {old_name!r} is not supported; known: {', '.join(_OLD_ARCHITECTURE_NAMES)}"
        )
    old_keys = ("n_conv_per_stage_encoder", "n_conv_per_stage_decoder", "patch_size", "UNet_base_num_features",
                "unet_max_num_features", "conv_kernel_sizes", "pool_op_kernel_sizes")
    old = {key: _require(config, key, where) for key in old_keys}
    n_stages = len(old["n_conv_per_stage_encoder"])
    dim = len(old["patch_size"])
    base, cap = int(old["UNet_base_num_features"]), int(old["unet_max_num_features"])
    blocks_key = "n_conv_per_stage" if old_name == "PlainConvUNet" else "n_blocks_per_stage"
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(base * 2**i, cap) for i in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": old["conv_kernel_sizes"],
        "strides": old["pool_op_kernel_sizes"],
        blocks_key: old["n_conv_per_stage_encoder"],
        "n_conv_per_stage_decoder": old["n_conv_per_stage_decoder"],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return Architecture(_OLD_ARCHITECTURE_NAMES[old_name], kwargs, ("conv_op", "norm_op", "dropout_op", "nonlin"))


def _resolve(raw: dict[str, Any], name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in seen:
        raise ModelError(f"plans.json: configuration inheritance loops through {' -> '.join((*seen, name))}")
    config = dict(raw[name])
    parent = config.get("inherits_from")
    if parent is None:
        return config
    if parent not in raw:
        raise ModelError(f"plans.json: configuration {name!r} inherits from unknown {parent!r}")
    merged = _resolve(raw, parent, (*seen, name))
    merged.update(config)
    return merged


def parse_plans(data: dict[str, Any], *, where: str = "plans.json") -> Plans:
    """Turn a plans dictionary into :class:`Plans`; raises :class:`ModelError` when unusable."""
    raw_configs = _require(data, "configurations", where)
    configurations = {}
    for name in raw_configs:
        config = _resolve(raw_configs, name)
        here = f"{where} configuration {name!r}"
        configurations[name] = Configuration(
            name=name,
            patch_size=tuple(int(p) for p in _require(config, "patch_size", here)),
            spacing=tuple(float(s) for s in _require(config, "spacing", here)),
            normalization_schemes=tuple(_require(config, "normalization_schemes", here)),
            use_mask_for_norm=tuple(bool(u) for u in _require(config, "use_mask_for_norm", here)),
            resampling_data=_resampling(config, "data", here),
            resampling_probabilities=_resampling(config, "probabilities", here),
            architecture=_architecture(config, here),
            previous_stage=config.get("previous_stage"),
        )
    raw_intensity = data.get("foreground_intensity_properties_per_channel")
    if raw_intensity is None:
        raw_intensity = data.get("foreground_intensity_properties_by_modality", {})
    intensity = {}
    for channel, p in raw_intensity.items():
        here = f"{where} foreground intensity properties of channel {channel}"
        intensity[int(channel)] = IntensityProperties(
            mean=float(_require(p, "mean", here)),
            std=float(_require(p, "std", here)),
            percentile_00_5=float(_require(p, "percentile_00_5", here)),
            percentile_99_5=float(_require(p, "percentile_99_5", here)),
        )
    forward = tuple(int(t) for t in data.get("transpose_forward", (0, 1, 2)))
    backward = tuple(int(t) for t in data.get("transpose_backward", (0, 1, 2)))
    if sorted(forward) != [0, 1, 2] or sorted(backward) != [0, 1, 2]:
        raise ModelError(f"{where}: transpose_forward/backward must be permutations of 0, 1, 2")
    return Plans(
        dataset_name=str(data.get("dataset_name", "")),
        plans_name=str(data.get("plans_name", "")),
        transpose_forward=forward,  # type: ignore[arg-type]
        transpose_backward=backward,  # type: ignore[arg-type]
        configurations=configurations,
        intensity_properties=intensity,
    )


def parse_dataset(data: dict[str, Any], *, where: str = "dataset.json") -> DatasetInfo:
    """Turn a dataset dictionary into :class:`DatasetInfo`."""
    channels = data.get("channel_names", data.get("modality"))
    if channels is None:
        raise ModelError(f"{where} lacks 'channel_names'; is this an nnU-Net v2 dataset.json?")
    labels_raw = _require(data, "labels", where)
    labels: dict[str, int] = {}
    for name, value in labels_raw.items():
        if isinstance(value, (list, tuple)):
            raise ModelError(
                f"{where}: label {name!r} is a region ({value}); region-based models are not supported yet"
            )
        labels[str(name)] = int(value)
    if "ignore" in labels and labels["ignore"] != max(labels.values()):
        raise ModelError(f"{where}: the 'ignore' label must have the highest value")
    if sorted(labels.values()) != list(range(len(labels))):
        raise ModelError(f"{where}: labels must be consecutive integers from 0, got {sorted(labels.values())}")
    ordered = sorted(channels.items(), key=lambda kv: int(kv[0]))
    return DatasetInfo(
        channel_names=tuple(str(v) for _, v in ordered),
        labels=dict(sorted(labels.items(), key=lambda kv: kv[1])),
        file_ending=str(data.get("file_ending", ".nii.gz")),
    )


def read_plans(path: str | os.PathLike[str]) -> Plans:
    path = Path(path)
    return parse_plans(_load_json(path), where=str(path))


def read_dataset(path: str | os.PathLike[str]) -> DatasetInfo:
    path = Path(path)
    return parse_dataset(_load_json(path), where=str(path))
