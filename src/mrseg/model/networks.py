"""Network construction from the plans' architecture block, through explicit registries.

Only the U-Net architectures of dynamic-network-architectures are imported: importing the
package's other architectures (Primus) pulls in timm and torchvision, and PyPI's torchvision
is a CUDA build that cannot load beside a CPU-only torch.
"""

from __future__ import annotations

from typing import Any, Callable

from mrseg.errors import ModelError
from mrseg.model.plans import Architecture


def _unet_classes() -> dict[str, Callable[..., Any]]:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    return {"PlainConvUNet": PlainConvUNet, "ResidualEncoderUNet": ResidualEncoderUNet}


def _building_blocks() -> dict[str, Any]:
    from torch import nn

    blocks: list[Any] = [
        nn.Conv1d, nn.Conv2d, nn.Conv3d,
        nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
        nn.GroupNorm, nn.LayerNorm,
        nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
        nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU,
    ]
    return {block.__name__: block for block in blocks}


NETWORK_NAMES = ("PlainConvUNet", "ResidualEncoderUNet")
"""Architectures this package can build (the class name, whatever module path the plans give)."""


def build_network(
    architecture: Architecture,
    *,
    num_input_channels: int,
    num_output_channels: int,
) -> Any:
    """Instantiate the plans' network without deep supervision, as nnU-Net does for inference.

    Raises:
        ModelError: unknown architecture or building block, or arguments it rejects.
    """
    classes = _unet_classes()
    network_class = classes.get(architecture.short_name)
    if network_class is None:
        raise ModelError(
            f"plans.json names the architecture {architecture.class_name!r}; supported: "
            f"{', '.join(NETWORK_NAMES)}"
        )
    blocks = _building_blocks()
    kwargs = dict(architecture.kwargs)
    for key in architecture.requires_import:
        value = kwargs.get(key)
        if value is None:
            continue
        block = blocks.get(str(value).rsplit(".", 1)[-1])
        if block is None:
            raise ModelError(
                f"plans.json sets {key}={value!r}, which is not a supported building block; "
                f"supported: {', '.join(sorted(blocks))}"
            )
        kwargs[key] = block
    try:
        return network_class(
            input_channels=num_input_channels,
            num_classes=num_output_channels,
            deep_supervision=False,
            **kwargs,
        )
    except TypeError as err:
        raise ModelError(f"cannot build {architecture.short_name} from plans.json: {err}") from err


def store_convolutions_in(network: Any, dtype: Any) -> Any:
    """Convert the weights of every (transposed) convolution of ``network`` to ``dtype``, in place.

    For networks run under autocast to ``dtype``: autocast then has nothing to convert or cache,
    and the normalisation parameters stay in float32.
    """
    import torch

    for module in network.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            module.to(dtype)
    return network
