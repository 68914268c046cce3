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


class InferenceUNet:
    """A dynamic-network-architectures U-Net whose forward pass keeps the least in memory.

    The same modules, weights and arithmetic (attributes are the wrapped network's); only what
    is kept alive differs from the package's forward pass:

    - each skip connection is released as soon as the decoder has used it (the package keeps
      all of them to the end);
    - plain blocks (convolution, dropout, normalisation, activation) run layer by layer, so a
      block's input is freed once its convolution has read it, instead of living on beside the
      convolution and normalisation outputs;
    - where a decoder stage's first convolution is large, the upsampling, the concatenation
      with the skip and that convolution run together slab by slab, so the joined volume never
      exists; elsewhere the concatenation is one buffer, the skip copied in and released before
      the upsampled half is written straight into it;
    - a large convolution (stride 1, same-size padding) runs in slabs along the first spatial
      axis, each with the rows its kernel reaches beyond the slab: oneDNN copies a
      convolution's whole input into its blocked layout, and the copy is then one slab's;
    - a transposed convolution whose kernel equals its stride (nnU-Net's upsampling) is one
      1×1×1 convolution per kernel offset written into that buffer, without the two
      output-sized temporaries of oneDNN's transposed convolution.

    Networks whose layout is not the U-Net's (encoder stages; decoder transposed convolutions,
    stages and segmentation layers; no deep supervision) run their own forward.
    """

    def __init__(self, network: Any) -> None:
        self.network = network
        encoder: Any = getattr(network, "encoder", None)
        decoder: Any = getattr(network, "decoder", None)
        self.lean = (
            encoder is not None and decoder is not None and hasattr(encoder, "stages")
            and not getattr(decoder, "deep_supervision", True)
            and all(hasattr(decoder, name) for name in ("transpconvs", "stages", "seg_layers"))
        )
        if self.lean:
            self.encoder_layers = [_layers(stage) for stage in encoder.stages]
            self.decoder_layers = [_layers(stage) for stage in decoder.stages]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.network, name)

    def __call__(self, x: Any) -> Any:
        import torch

        if not self.lean or torch.is_grad_enabled():
            return self.network(x)
        encoder, decoder = self.network.encoder, self.network.decoder
        if getattr(encoder, "stem", None) is not None:
            x = encoder.stem(x)
        skips = []
        for layers in self.encoder_layers:
            for layer in layers:
                x = _run(layer, x)
            skips.append(x)
        del x
        lower = skips.pop()
        for s, layers in enumerate(self.decoder_layers):
            skip = skips.pop()
            upsampling, first = decoder.transpconvs[s], layers[0]
            if _slabbed(first, skip, upsampling.out_channels + skip.shape[1]) and _kernel_is_stride(upsampling):
                x = _upsample_join_convolve(upsampling, lower, skip, first)  # no joined volume at all
                del skip, lower
                rest = layers[1:]
            else:
                up_channels = upsampling.out_channels
                joined = skip.new_empty((skip.shape[0], up_channels + skip.shape[1], *skip.shape[2:]))
                joined[:, up_channels:] = skip
                del skip  # the last reference: the encoder's stage output is freed here
                _upsample(upsampling, lower, out=joined[:, :up_channels])
                del lower
                x = joined
                del joined
                rest = layers
            for layer in rest:
                x = _run(layer, x)
            lower = x
            del x
        return _run(decoder.seg_layers[-1], lower)


def _layers(module: Any) -> list[Any]:
    """``module`` as the list of layers it runs one after another (plain conv blocks flattened)."""
    import torch
    from dynamic_network_architectures.building_blocks.simple_conv_blocks import (
        ConvDropoutNormReLU,
        StackedConvBlocks,
    )

    if type(module) is torch.nn.Sequential:
        return [layer for child in module for layer in _layers(child)]
    if type(module) is StackedConvBlocks:
        return _layers(module.convs)
    if type(module) is ConvDropoutNormReLU:
        return _layers(module.all_modules)
    return [module]


SLAB_BYTES = 16 * 2**20
"""Input or output size above which a convolution runs slab by slab (:func:`_run`)."""


def _same_size_convolution(layer: Any) -> bool:
    """A stride-1 ``Conv3d`` with zero padding that keeps the size (nnU-Net's convolutions)."""
    import torch

    return (
        type(layer) is torch.nn.Conv3d and layer.padding_mode == "zeros" and set(layer.stride) == {1}
        and isinstance(layer.padding, tuple)
        and all(k % 2 == 1 and p == (k - 1) // 2 * d
                for p, k, d in zip(layer.padding, layer.kernel_size, layer.dilation))
    )


def _convolution_bytes(layer: Any, x: Any, in_channels: int) -> int:
    """The larger of the input (``in_channels`` channels on ``x``'s grid) and the output of ``layer``."""
    voxels = x[0, 0].numel()
    return voxels * max(in_channels * x.element_size(), layer.out_channels * layer.weight.element_size())


def _slabbed(layer: Any, x: Any, in_channels: int) -> bool:
    """Whether ``layer`` on ``x`` (with ``in_channels`` channels) is large enough to run in slabs."""
    return _same_size_convolution(layer) and _convolution_bytes(layer, x, in_channels) > SLAB_BYTES


def _slab_rows(layer: Any, x: Any, in_channels: int) -> int:
    """Rows per slab along axis 2: about ``SLAB_BYTES`` each, at least four halos deep."""
    size = _convolution_bytes(layer, x, in_channels)
    return max(1, int(x.shape[2] * SLAB_BYTES // size), 4 * layer.padding[0])


def _convolve_slab(layer: Any, piece: Any, lo: int, hi: int, z0: int, z1: int) -> Any:
    """``layer`` on input rows ``[lo, hi)`` giving output rows ``[z0, z1)``; zeros stand in past the edges."""
    import torch

    halo = layer.padding[0]
    if lo > z0 - halo or hi < z1 + halo:
        piece = torch.nn.functional.pad(piece, (0, 0, 0, 0, lo - (z0 - halo), (z1 + halo) - hi))
    return torch.nn.functional.conv3d(
        piece, layer.weight, layer.bias, 1, (0, *layer.padding[1:]), layer.dilation, layer.groups
    )


def _run(layer: Any, x: Any) -> Any:
    """``layer(x)``; a large stride-1 ``Conv3d`` with same-size zero padding slab by slab along axis 2.

    Each output slab is the convolution of its input rows plus the ``padding`` rows on either
    side (zeros past the edges, as the full convolution pads), so every output voxel sums the
    same products as the whole convolution does.
    """
    if not _slabbed(layer, x, x.shape[1]):
        return layer(x)
    depth, halo, rows = x.shape[2], layer.padding[0], _slab_rows(layer, x, x.shape[1])
    out = None
    for z0 in range(0, depth, rows):
        z1 = min(z0 + rows, depth)
        lo, hi = max(z0 - halo, 0), min(z1 + halo, depth)
        part = _convolve_slab(layer, x[:, :, lo:hi], lo, hi, z0, z1)
        if out is None:
            out = part.new_empty((part.shape[0], part.shape[1], depth, *part.shape[3:]))
        out[:, :, z0:z1] = part
        del part
    return out


def _upsample_join_convolve(upsampling: Any, lower: Any, skip: Any, layer: Any) -> Any:
    """``layer(cat(upsampling(lower), skip))`` slab by slab, never holding the joined volume.

    Each slab upsamples just the lower-resolution rows it needs (``upsampling`` has kernel ==
    stride, so output rows depend only on their own input row), joins them with the skip rows
    and convolves; the same products per output voxel as the whole-volume computation.
    """
    import torch

    depth, halo = skip.shape[2], layer.padding[0]
    stride = upsampling.stride[0]
    rows = _slab_rows(layer, skip, upsampling.out_channels + skip.shape[1])
    out = None
    for z0 in range(0, depth, rows):
        z1 = min(z0 + rows, depth)
        lo, hi = max(z0 - halo, 0), min(z1 + halo, depth)
        first, last = lo // stride, -(-hi // stride)
        up = _upsampled(upsampling, lower[:, :, first:last])[:, :, lo - first * stride : hi - first * stride]
        piece = torch.cat((up, skip[:, :, lo:hi]), 1)
        del up
        part = _convolve_slab(layer, piece, lo, hi, z0, z1)
        del piece
        if out is None:
            out = part.new_empty((part.shape[0], part.shape[1], depth, *part.shape[3:]))
        out[:, :, z0:z1] = part
        del part
    return out


def _kernel_is_stride(layer: Any) -> bool:
    """A plain transposed convolution whose kernel equals its stride (nnU-Net's upsampling)."""
    import torch

    return (
        isinstance(layer, torch.nn.ConvTranspose3d) and tuple(layer.kernel_size) == tuple(layer.stride)
        and layer.groups == 1 and set(layer.padding) == {0} and set(layer.output_padding) == {0}
        and set(layer.dilation) == {1}
    )


def _upsampled(layer: Any, x: Any) -> Any:
    """``layer(x)`` in a new tensor (:func:`_upsample`)."""
    out = None
    for where, part in _offset_parts(layer, x):
        if out is None:
            out = part.new_empty((part.shape[0], part.shape[1], *(s * k for s, k in zip(x.shape[2:], layer.stride))))
        out[where] = part
    return out


def _offset_parts(layer: Any, x: Any) -> Any:
    """For each kernel offset of a kernel == stride transposed convolution: where its output voxels go
    (an index into the output) and their values."""
    import itertools

    import torch

    for offset in itertools.product(*(range(k) for k in layer.kernel_size)):
        weight = layer.weight[(slice(None), slice(None)) + tuple(offset)].t().contiguous()[..., None, None, None]
        where = (slice(None), slice(None)) + tuple(slice(o, None, k) for o, k in zip(offset, layer.stride))
        yield where, torch.nn.functional.conv3d(x, weight, layer.bias)


def _upsample(layer: Any, x: Any, *, out: Any) -> None:
    """Write ``layer(x)`` into ``out``; a transposed convolution with kernel == stride offset by offset.

    With kernel equal to stride every output voxel takes exactly one kernel offset, so the
    output is, for each offset, a 1×1×1 convolution of the input with that offset's weights,
    written to every stride-th voxel. Same arithmetic, a fraction of the memory.
    """
    if not _kernel_is_stride(layer):
        out[...] = layer(x)
        return
    for where, part in _offset_parts(layer, x):
        out[where] = part
        del part
