"""The lean U-Net forward pass (:mod:`mrseg.inference.lean_unet`), held to the package's forward
pass and to the whole-volume convolutions it replaces."""

from __future__ import annotations

import pytest
import torch

from model_factory import tiny_networks
from mrseg.inference import lean_unet
from mrseg.inference.lean_unet import InferenceUNet
from mrseg.model.networks import store_convolutions_in


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lean_forward_equals_the_package_forward(kind, precision, monkeypatch):
    monkeypatch.setattr(lean_unet, "SLAB_BYTES", 4096)  # every convolution runs in slabs
    monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", 4096)
    (network,) = tiny_networks(1, kind)
    if precision == "bf16":
        store_convolutions_in(network, torch.bfloat16)
    tile = torch.randn(1, 1, 12, 32, 28, generator=torch.Generator().manual_seed(0))
    lean = InferenceUNet(network)
    assert lean.lean
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        expected, ours = network(tile).float(), lean(tile).float()
    tolerance = dict(rtol=1e-4, atol=1e-4) if precision == "fp32" else dict(rtol=0.05, atol=0.05)
    torch.testing.assert_close(ours, expected, **tolerance)
    assert (ours.argmax(1) == expected.argmax(1)).float().mean() > 0.99


@pytest.mark.parametrize("slabbed", [True, False])
def test_lean_forward_hands_its_output_to_a_sink_in_order(slabbed, monkeypatch):
    if slabbed:
        monkeypatch.setattr(lean_unet, "SLAB_BYTES", 4096)
        monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", 4096)
    (network,) = tiny_networks(1)
    lean = InferenceUNet(network)
    tile = torch.randn(1, 1, 12, 32, 28, generator=torch.Generator().manual_seed(1))
    slabs: list[tuple[int, int, torch.Tensor]] = []
    with torch.inference_mode():
        whole = lean(tile)
        assert lean(tile, sink=lambda z0, z1, part: slabs.append((z0, z1, part.clone()))) is None
    assert [z0 for z0, _, _ in slabs] == [0] + [z1 for _, z1, _ in slabs[:-1]]  # in order, no gaps
    assert slabs[-1][1] == tile.shape[2] and (len(slabs) > 1) == slabbed
    assert torch.equal(torch.cat([part for _, _, part in slabs], 2), whole)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_slabbed_convolution_over_its_own_input_equals_the_whole_convolution(kernel, monkeypatch):
    monkeypatch.setattr(lean_unet, "SLAB_BYTES", 4096)
    monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(0)
    layer = torch.nn.Conv3d(4, 4, kernel, padding=kernel // 2)
    x = torch.randn(1, 4, 19, 10, 9)
    with torch.inference_mode():
        expected = layer(x)
        out = lean_unet._run(layer, x.clone(), reuse_input=False)
        owned = x.clone()
        over = lean_unet._run(layer, owned, reuse_input=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert over.data_ptr() == owned.data_ptr()  # written over its input: no second volume
    assert torch.equal(over, out)


@pytest.mark.parametrize("stride", [(1, 2, 2), (2, 2, 2), (2, 1, 1)])
def test_strided_convolution_in_slabs_equals_the_whole_convolution(stride, monkeypatch):
    monkeypatch.setattr(lean_unet, "SLAB_BYTES", 4096)
    monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(2)
    layer = torch.nn.Conv3d(3, 5, 3, stride=stride, padding=1)
    for depth in (17, 18):  # odd and even depths end differently under a stride of 2
        x = torch.randn(1, 3, depth, 12, 10)
        with torch.inference_mode():
            expected = layer(x)
            slabs: list[int] = []
            ours = lean_unet._run(layer, x)
            lean_unet._run(layer, x, sink=lambda z0, z1, part: slabs.append(z1 - z0))
        assert len(slabs) > 1 and sum(slabs) == expected.shape[2]
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_instance_norm_equals_the_layer(dtype, monkeypatch):
    monkeypatch.setattr(lean_unet, "SLAB_BYTES", 4096)
    monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(3)
    layer = torch.nn.InstanceNorm3d(6, eps=1e-5, affine=True)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(1, 6, 9, 14, 11) * 3 + 2).to(dtype)
    with torch.inference_mode():
        expected = layer(x)
        owned = x.clone()
        ours = lean_unet._run(layer, owned, reuse_input=True)
        untouched = lean_unet._run(layer, x)
    assert ours.data_ptr() == owned.data_ptr() and torch.equal(untouched, expected)
    assert torch.equal(ours, expected)  # channels are normalised on their own: the same values


def test_decoder_step_over_its_skip_equals_the_joined_convolution(monkeypatch):
    monkeypatch.setattr(lean_unet, "SLAB_BYTES", 4096)
    monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(1)
    upsampling = torch.nn.ConvTranspose3d(8, 4, (1, 2, 2), stride=(1, 2, 2))
    layer = torch.nn.Conv3d(8, 4, 3, padding=1)
    lower, skip = torch.randn(1, 8, 13, 5, 4), torch.randn(1, 4, 13, 10, 8)
    with torch.inference_mode():
        expected = layer(torch.cat((upsampling(lower), skip), 1))
        owned = skip.clone()
        over = lean_unet._upsample_join_convolve(upsampling, lower, owned, layer, reuse_skip=True)
    assert over.data_ptr() == owned.data_ptr()
    torch.testing.assert_close(over, expected, rtol=1e-5, atol=1e-5)


def test_lean_forward_leaves_training_alone():
    (network,) = tiny_networks(1)
    lean = InferenceUNet(network)
    tile = torch.randn(1, 1, 8, 16, 12)
    assert torch.equal(lean(tile), network(tile))  # gradients enabled: the package's own forward
    assert lean.encoder is network.encoder  # attributes are the network's


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("slab_bytes", [4096, 2**40])
def test_channels_last_forward_equals_the_package_forward(kind, slab_bytes, monkeypatch):
    """Every grid channels-last (the threshold at one voxel), slabbed and whole."""
    monkeypatch.setattr(lean_unet, "CHANNELS_LAST_VOXELS", 1)
    monkeypatch.setattr(lean_unet, "SLAB_BYTES_FLOAT32", slab_bytes)
    (network,) = tiny_networks(1, kind)
    tile = torch.randn(1, 1, 12, 32, 28, generator=torch.Generator().manual_seed(4))
    lean = InferenceUNet(network)
    layouts: list[tuple[int, bool]] = []  # (input channels, channels-last) of each convolution module run

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, torch.nn.Conv3d):
            x = args[0]
            channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
            layouts.append((x.shape[1], channels_last))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        with torch.inference_mode():
            expected = network(tile)
            layouts.clear()
            whole = lean(tile)
            slabs: list[torch.Tensor] = []
            lean(tile, sink=lambda z0, z1, part: slabs.append(part.clone()))
    finally:
        hook.remove()
    torch.testing.assert_close(whole, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.cat(slabs, 2), whole)
    assert all(part.is_contiguous() for part in slabs)  # the head's output channel-major, for the sums
    if slab_bytes > 2**30 and kind == "PlainConvUNet":
        # Unslabbed, the plain layers run as modules: every one of more than one input channel channels-last.
        # (Residual encoder blocks run as whole modules in the default layout; only their decoder is.)
        assert len(layouts) > 2 and all(channels_last for channels, channels_last in layouts if channels > 1), layouts


def test_bf16_and_small_grids_stay_in_the_default_layout(monkeypatch):
    x = torch.randn(1, 4, 6, 8, 8)
    monkeypatch.setattr(lean_unet, "CHANNELS_LAST_VOXELS", 6 * 8 * 8)
    assert lean_unet._grid_layout(x.shape, x) == torch.channels_last_3d
    assert lean_unet._grid_layout((1, 4, 6, 8, 7), x) == torch.contiguous_format  # fewer voxels
    assert lean_unet._grid_layout((1, 1, 6, 8, 8), x) == torch.contiguous_format  # one channel
    assert lean_unet._grid_layout(x.shape, x.bfloat16()) == torch.contiguous_format
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lean_unet._grid_layout(x.shape, x) == torch.contiguous_format  # bf16 runs faster blocked


def test_channels_last_instance_norm_equals_the_layer():
    torch.manual_seed(5)
    layer = torch.nn.InstanceNorm3d(6, eps=1e-5, affine=True)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(1, 6, 9, 14, 11) * 3 + 2).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        expected = layer(x.contiguous())
        owned = x.clone(memory_format=torch.channels_last_3d)
        ours = lean_unet._run(layer, owned, reuse_input=True)
    assert ours.data_ptr() == owned.data_ptr()  # in place
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_pointwise_product_equals_the_convolution():
    torch.manual_seed(6)
    head = torch.nn.Conv3d(8, 5, 1)
    x = torch.randn(1, 8, 5, 7, 6).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        assert lean_unet._pointwise_channels_last(head, x)
        ours = lean_unet._pointwise_product(head, x)
        torch.testing.assert_close(ours, head(x.contiguous()), rtol=1e-5, atol=1e-5)
    assert ours.is_contiguous()
    assert not lean_unet._pointwise_channels_last(torch.nn.Conv3d(8, 5, 3, padding=1), x)
