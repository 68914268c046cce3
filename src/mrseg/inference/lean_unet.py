"""The lean U-Net forward pass used for inference: nnU-Net's modules and weights, least memory.

:class:`InferenceUNet` wraps a network built by :func:`mrseg.model.networks.build_network` and
runs the same modules with the same arithmetic, keeping as little alive as it can (skips freed
as they are used, large convolutions in slabs along the first spatial axis, in-place
normalisation, the segmentation head handed to the caller's sums slab by slab). It is inference
code: the segmenter wraps each fold's network in it and the sliding window
(:mod:`mrseg.inference.sliding_window`) runs it with a ``sink``; :mod:`mrseg.model` builds and
loads networks and knows nothing of how they are run.

Named after what it is, a lean U-Net, rather than a generic ``forward``: it streamlines only the
U-Net layout of dynamic-network-architectures (other networks run their own forward pass).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


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
    - a large zero-padded convolution (strided ones too) runs in slabs along the first spatial
      axis, each with the input rows its kernel reaches: oneDNN copies a convolution's whole
      input into its blocked layout, and the copy is then one slab's;
    - where the caller gives its input up, a convolution whose output has the input's shape
      writes it over the input (:class:`_SlabWriter`), the fused decoder step writes over the
      skip, and a large instance normalisation runs in place (:func:`_instance_norm_`);
    - a transposed convolution whose kernel equals its stride (nnU-Net's upsampling) is one
      1×1×1 convolution per kernel offset written into that buffer, without the two
      output-sized temporaries of oneDNN's transposed convolution;
    - given a ``sink``, the segmentation layer's output is handed over slab by slab instead of
      being returned whole, so the caller can add it to its sums without the tile's logits
      (over 100 MB on the MRSegmentator-sized network) ever existing at once;
    - in float32, the activations of the large (high-resolution) stages are kept channels-last
      (``torch.channels_last_3d``, :data:`CHANNELS_LAST_VOXELS`): oneDNN convolves them without
      reordering each layer's input into its blocked layout, about twice as fast for the
      32-channel full-resolution convolutions, and their instance normalisations run on a
      (voxels, channels) view (:func:`_instance_norm_channels_last_`).

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

    def __call__(self, x: Any, sink: Callable[[int, int, Any], None] | None = None) -> Any:
        """The network's output for ``x``, or None after passing it to ``sink`` in slabs.

        ``sink(z0, z1, part)`` receives the output rows ``[z0, z1)`` along the first spatial
        axis, ``part`` being ``(batch, classes, z1 - z0, ...)``; the slabs cover the output once,
        in order. Without the lean forward pass the sink gets the whole output as one slab.
        """
        import torch

        if not self.lean or torch.is_grad_enabled():
            out = self.network(x)
            if sink is None:
                return out
            sink(0, out.shape[2], out)
            return None
        encoder, decoder = self.network.encoder, self.network.decoder
        if getattr(encoder, "stem", None) is not None:
            x = encoder.stem(x)
        skips = []
        for layers in self.encoder_layers:
            for i, layer in enumerate(layers):
                x = _run(layer, x, reuse_input=i > 0)  # a stage's first input is the last skip or the tile
            skips.append(x)
        del x
        owners = [skip.untyped_storage().data_ptr() for skip in skips]
        lower = skips.pop()
        for s, layers in enumerate(self.decoder_layers):
            skip = skips.pop()
            upsampling, first = decoder.transpconvs[s], layers[0]
            if _slabbed(first, skip, upsampling.out_channels + skip.shape[1]) and _kernel_is_stride(upsampling):
                owned = owners.count(skip.untyped_storage().data_ptr()) == 1  # no other skip shares it
                x = _upsample_join_convolve(upsampling, lower, skip, first, reuse_skip=owned)  # no joined volume
                del skip, lower
                rest = layers[1:]
            else:
                up_channels = upsampling.out_channels
                joined = _empty((skip.shape[0], up_channels + skip.shape[1], *skip.shape[2:]), like=skip)
                joined[:, up_channels:] = skip
                del skip  # the last reference: the encoder's stage output is freed here
                _upsample(upsampling, lower, out=joined[:, :up_channels])
                del lower
                x = joined
                del joined
                rest = layers
            for layer in rest:
                x = _run(layer, x, reuse_input=True)
            lower = x
            del x
        return _run(decoder.seg_layers[-1], lower, sink=sink)


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


SLAB_BYTES = 8 * 2**20
"""Input or output size above which a 16-bit (bf16/fp16) convolution runs slab by slab (:func:`_run`)."""

SLAB_BYTES_FLOAT32 = 32 * 2**20
"""The same for float32 (exact mode). Measured on one 56×192×160 tile of the MRSegmentator-like
network, 2 cores: 8 MiB slabs 11.6–12.8 s, 32 MiB 6.4–6.6 s, 128 MiB 6.5–6.7 s, no slabs
8.5–9.5 s; in bf16, 8 MiB and 16 MiB slabs take the same time and 8 MiB holds less memory."""


CHANNELS_LAST_VOXELS = 56 * 96 * 80
"""Voxels per channel from which float32 activations on the CPU are kept channels-last.

Measured on the MRSegmentator-sized network (fp32, 2 cores, bench_tile_levers.py
``--channels-last-prototype``): channels-last halves the time of the 32-channel convolutions at
56×192×160 and of the 64-channel ones at 56×96×80; below that the deep, many-channel layers
already run near the machine's peak in oneDNN's blocked layout and gain nothing. In bf16
channels-last was slower, so bf16 never uses it."""


def _grid_layout(shape: Any, like: Any) -> Any:
    """The memory layout of activations of ``shape`` with ``like``'s type and device.

    ``torch.channels_last_3d`` for float32 CPU activations (outside autocast) of more than one
    channel and at least :data:`CHANNELS_LAST_VOXELS` voxels per channel, else the default.
    """
    import torch

    channels_last = (
        len(shape) == 5 and shape[0] == 1 and shape[1] > 1 and like.dtype == torch.float32
        and like.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
        and int(shape[2]) * int(shape[3]) * int(shape[4]) >= CHANNELS_LAST_VOXELS
    )
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def _memory_format(x: Any) -> Any:
    """``torch.channels_last_3d`` for a channels-last tensor (of more than one channel), else the default."""
    import torch

    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _empty(shape: tuple[int, ...], *, like: Any, layout: Any = None) -> Any:
    """An uninitialised tensor of ``shape`` with ``like``'s type and device, in ``layout`` (default: ``like``'s)."""
    import torch

    return torch.empty(
        shape, dtype=like.dtype, device=like.device,
        memory_format=_memory_format(like) if layout is None else layout,
    )


def _in_layout_for(x: Any) -> Any:
    """``x`` in the layout of its grid (:func:`_grid_layout`); ``x`` itself when it is."""
    if x.shape[1] == 1:  # one channel: both layouts are the same memory
        return x
    wanted = _grid_layout(x.shape, x)
    return x if x.is_contiguous(memory_format=wanted) else x.contiguous(memory_format=wanted)


def _slab_bytes(x: Any) -> int:
    """The slab budget for a tensor of ``x``'s element type."""
    return SLAB_BYTES if x.element_size() <= 2 else SLAB_BYTES_FLOAT32


def _slabbable_convolution(layer: Any) -> bool:
    """A ``Conv3d`` with zero padding given as numbers (nnU-Net's convolutions, strided ones too)."""
    import torch

    return (
        type(layer) is torch.nn.Conv3d and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)
    )


def _convolution_bytes(layer: Any, x: Any, in_channels: int) -> int:
    """The larger of the input (``in_channels`` channels on ``x``'s grid) and the output of ``layer``
    (bounded by its size on the input's grid)."""
    voxels = x[0, 0].numel()
    return voxels * max(in_channels * x.element_size(), layer.out_channels * layer.weight.element_size())


def _slabbed(layer: Any, x: Any, in_channels: int) -> bool:
    """Whether ``layer`` on ``x`` (with ``in_channels`` channels) is large enough to run in slabs."""
    return _slabbable_convolution(layer) and _convolution_bytes(layer, x, in_channels) > _slab_bytes(x)


def _output_depth(layer: Any, depth: int) -> int:
    """Output rows along axis 2 for ``depth`` input rows."""
    s, p, k, d = layer.stride[0], layer.padding[0], layer.kernel_size[0], layer.dilation[0]
    return (depth + 2 * p - d * (k - 1) - 1) // s + 1


def _input_rows(layer: Any, z0: int, z1: int) -> tuple[int, int]:
    """The input rows ``[lo, hi)`` along axis 2 that output rows ``[z0, z1)`` read (past the edges included)."""
    s, p, k, d = layer.stride[0], layer.padding[0], layer.kernel_size[0], layer.dilation[0]
    return z0 * s - p, (z1 - 1) * s - p + d * (k - 1) + 1


def _slabs(layer: Any, x: Any, in_channels: int) -> Iterator[tuple[int, int, int, int]]:
    """Slabs of ``layer``'s output on ``x`` (``in_channels`` channels): ``(z0, z1, lo, hi)`` with output
    rows ``[z0, z1)`` and the input rows ``[lo, hi)`` they read, clipped to the input."""
    depth, out_depth = x.shape[2], _output_depth(layer, x.shape[2])
    rows = _slab_rows(layer, x, in_channels)
    for z0 in range(0, out_depth, rows):
        z1 = min(z0 + rows, out_depth)
        need_lo, need_hi = _input_rows(layer, z0, z1)
        yield z0, z1, max(need_lo, 0), min(need_hi, depth)


def _slab_rows(layer: Any, x: Any, in_channels: int) -> int:
    """Output rows per slab along axis 2: about :func:`_slab_bytes` each, at least four halos deep."""
    size = _convolution_bytes(layer, x, in_channels)
    return max(1, int(_output_depth(layer, x.shape[2]) * _slab_bytes(x) // size), 4 * layer.padding[0])


def _convolve_slab(layer: Any, piece: Any, lo: int, z0: int, z1: int) -> Any:
    """``layer`` on input rows ``[lo, lo + len(piece))`` giving output rows ``[z0, z1)``; zeros past the edges."""
    import torch

    need_lo, need_hi = _input_rows(layer, z0, z1)
    hi = lo + piece.shape[2]
    if lo > need_lo or hi < need_hi:
        piece = torch.nn.functional.pad(piece, (0, 0, 0, 0, lo - need_lo, need_hi - hi))
    if _pointwise_channels_last(layer, piece):
        return _pointwise_product(layer, piece)
    return torch.nn.functional.conv3d(
        piece, layer.weight, layer.bias, layer.stride, (0, *layer.padding[1:]), layer.dilation,
        layer.groups,
    )


def _pointwise_channels_last(layer: Any, x: Any) -> bool:
    """Whether ``layer`` is a plain 1×1×1 ``Conv3d`` (a segmentation head) and ``x`` channels-last."""
    import torch

    return (
        type(layer) is torch.nn.Conv3d and set(layer.kernel_size) == {1} and set(layer.stride) == {1}
        and isinstance(layer.padding, tuple) and set(layer.padding) == {0} and layer.groups == 1
        and x.shape[0] == 1 and _memory_format(x) == torch.channels_last_3d
    )


def _pointwise_product(layer: Any, x: Any) -> Any:
    """A 1×1×1 convolution of a channels-last ``x`` as one matrix product, the output channel-major.

    The (voxels, channels) view of ``x`` times the weights gives each output channel contiguous:
    what the caller's per-class sums read, where a channels-last output would make every
    class's pass read the whole slab.
    """
    import torch

    channels, grid = x.shape[1], x.shape[2:]
    voxels = x.permute(0, 2, 3, 4, 1).reshape(-1, channels).t()  # (channels, voxels), a view
    weight = layer.weight.reshape(layer.out_channels, channels)
    out = torch.mm(weight, voxels) if layer.bias is None else torch.addmm(layer.bias[:, None], weight, voxels)
    return out.reshape(1, layer.out_channels, *grid)


def _run(
    layer: Any, x: Any, *, sink: Callable[[int, int, Any], None] | None = None, reuse_input: bool = False
) -> Any:
    """``layer(x)``; a large zero-padded ``Conv3d`` slab by slab along axis 2.

    Each output slab is the convolution of the input rows it reaches (zeros past the edges, as
    the full convolution pads; a strided convolution reads its own rows), so every output voxel
    sums the same products as the whole convolution does. With a ``sink`` the slabs go to
    ``sink(z0, z1, part)`` as they are made and nothing is returned. With ``reuse_input`` (the
    caller holds no other reference to ``x``) the output may be written over ``x`` (see
    :class:`_SlabWriter`). Large instance normalisations of an ``x`` the caller gives up run in
    place (:func:`_instance_norm_`, :func:`_instance_norm_channels_last_`). A convolution's input
    is first put in the layout of its grid (:func:`_in_layout_for`).
    """
    import torch

    if reuse_input and (normalised := _normalised_in_place(layer, x)) is not None:
        return normalised
    if isinstance(layer, torch.nn.Conv3d):
        converted = _in_layout_for(x)
        reuse_input = reuse_input or converted is not x  # a converted copy is the caller's to give up
        x = converted
    if not _slabbed(layer, x, x.shape[1]):
        out = _pointwise_product(layer, x) if _pointwise_channels_last(layer, x) else layer(x)
        if sink is None:
            return out
        sink(0, x.shape[2], out)
        return None
    writer = _SlabWriter(_output_depth(layer, x.shape[2]), reusable=x if reuse_input else None)
    for z0, z1, lo, hi in _slabs(layer, x, x.shape[1]):
        part = _convolve_slab(layer, x[:, :, lo:hi], lo, z0, z1)
        if sink is not None:
            sink(z0, z1, part)
        else:
            writer.add(z0, z1, part)  # the rows this slab read below z1 - halo are not read again
        del part
    return None if sink is not None else writer.finish()


def _normalised_in_place(layer: Any, x: Any) -> Any:
    """``layer(x)`` written over ``x`` where ``layer`` is a plain instance normalisation of one
    instance: channels-last ``x`` by :func:`_instance_norm_channels_last_`, a large contiguous one
    by :func:`_instance_norm_`; None where neither applies (the caller runs the layer)."""
    import torch

    if type(layer) is not torch.nn.InstanceNorm3d or layer.track_running_stats or x.shape[0] != 1:
        return None
    if _memory_format(x) == torch.channels_last_3d:
        return _instance_norm_channels_last_(layer, x)
    if x.is_contiguous() and x.numel() * x.element_size() > _slab_bytes(x):
        return _instance_norm_(layer, x)
    return None


def _instance_norm_(layer: Any, x: Any) -> Any:
    """``layer(x)`` written over ``x``, a few channels at a time.

    Instance normalisation treats every channel on its own, so torch's kernel on a group of
    channels gives exactly the whole layer's values for them; the only extra memory is one
    group's output.
    """
    import torch

    channels = x.shape[1]
    step = max(1, int(_slab_bytes(x) // (x[0, 0].numel() * x.element_size())))
    for c0 in range(0, channels, step):
        c1 = min(c0 + step, channels)
        x[:, c0:c1] = torch.nn.functional.instance_norm(
            x[:, c0:c1],
            weight=layer.weight[c0:c1] if layer.affine else None,
            bias=layer.bias[c0:c1] if layer.affine else None,
            eps=layer.eps,
        )
    return x


NORM_CHUNK_VOXELS = 1 << 16
"""Voxels per chunk of the squared deviations in :func:`_instance_norm_channels_last_` (8 MiB at 32 channels)."""


def _instance_norm_channels_last_(layer: Any, x: Any) -> Any:
    """``layer(x)`` written over a channels-last ``x``, on its (voxels, channels) view.

    torch's instance normalisation of a channels-last tensor is three times slower than of a
    contiguous one; on the (voxels, channels) view, which is the channels-last memory itself,
    the per-channel statistics are column sums. Two passes as torch's kernel: the mean, then
    the mean squared deviation from it (biased variance), a chunk of voxels at a time; torch's
    float32 sums are pairwise, so the values differ from the layer's by float32 rounding only.
    """
    import torch

    channels = x.shape[1]
    view = x.permute(0, 2, 3, 4, 1).reshape(-1, channels)  # a view: no copy for channels-last memory
    count = view.shape[0]
    mean = view.sum(0).div_(count)
    squares = torch.zeros_like(mean)
    for chunk in torch.split(view, NORM_CHUNK_VOXELS):
        squares += (chunk - mean).square_().sum(0)
    scale = torch.rsqrt(squares.div_(count).add_(layer.eps))
    if layer.affine:
        scale *= layer.weight
    shift = -mean * scale
    if layer.affine:
        shift += layer.bias
    torch.addcmul(shift, view, scale, out=view)  # one pass: elementwise, so writing over its input is safe
    return x


class _SlabWriter:
    """Collects a convolution's output slabs along axis 2, over its input where that is allowed.

    A slab's output rows ``[z0, z1)`` may overwrite the input rows ``[z0, z1)`` only once no
    later slab reads them: the next slab reads down to ``z1 - halo``. So over the input each
    slab is held back and written once the next one has been computed (slabs are at least a
    halo deep), and the output costs no memory beyond a slab when it has the input's shape and
    type; otherwise it goes to a new tensor at once.
    """

    def __init__(self, depth: int, *, reusable: Any = None) -> None:
        self.depth, self.reusable = depth, reusable
        self.out: Any = None
        self.in_place = False
        self.pending: tuple[int, int, Any] | None = None

    def add(self, z0: int, z1: int, part: Any) -> None:
        if self.out is None:
            shape = (part.shape[0], part.shape[1], self.depth, *part.shape[3:])
            x = self.reusable
            layout = _grid_layout(shape, part)  # a layout change costs nothing here: the slabs are copied in anyway
            self.in_place = (
                x is not None and tuple(x.shape) == shape and x.dtype == part.dtype
                and x.is_contiguous(memory_format=layout)
            )
            self.out = x if self.in_place else _empty(shape, like=part, layout=layout)
            self.reusable = None
        if not self.in_place:
            self.out[:, :, z0:z1] = part
            return
        self.flush()
        self.pending = (z0, z1, part)

    def flush(self) -> None:
        """Write the held-back slab: call once the slab after it has read its input."""
        if self.pending is not None:
            z0, z1, part = self.pending
            self.out[:, :, z0:z1] = part
            self.pending = None

    def finish(self) -> Any:
        self.flush()
        return self.out


def _upsample_join_convolve(upsampling: Any, lower: Any, skip: Any, layer: Any, *, reuse_skip: bool = False) -> Any:
    """``layer(cat(upsampling(lower), skip))`` slab by slab, never holding the joined volume.

    Each slab upsamples just the lower-resolution rows it needs (``upsampling`` has kernel ==
    stride, so output rows depend only on their own input row), joins them with the skip rows
    and convolves; the same products per output voxel as the whole-volume computation. With
    ``reuse_skip`` (no one else holds ``skip``) the output is written over the skip, whose
    shape it has in nnU-Net's decoders, as each slab's rows stop being read.
    """
    stride = upsampling.stride[0]
    writer = _SlabWriter(_output_depth(layer, skip.shape[2]), reusable=skip if reuse_skip else None)
    for z0, z1, lo, hi in _slabs(layer, skip, upsampling.out_channels + skip.shape[1]):
        first, last = lo // stride, -(-hi // stride)
        up = _upsampled(upsampling, lower[:, :, first:last])[:, :, lo - first * stride : hi - first * stride]
        rows = skip[:, :, lo:hi]
        piece = _empty((rows.shape[0], up.shape[1] + rows.shape[1], *rows.shape[2:]), like=rows)  # the skip's layout
        piece[:, : up.shape[1]] = up
        piece[:, up.shape[1] :] = rows
        del up, rows
        writer.flush()  # this slab's skip rows are copied: the slab before may overwrite its own
        part = _convolve_slab(layer, piece, lo, z0, z1)
        del piece
        writer.add(z0, z1, part)
        del part
    return writer.finish()


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
            out = _empty((part.shape[0], part.shape[1], *(s * k for s, k in zip(x.shape[2:], layer.stride))), like=part)
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
