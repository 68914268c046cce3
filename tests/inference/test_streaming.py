"""Lean inference: logits streamed slab by slab, labels exported slab by slab, the memory-lean forward pass.

Each is held to the whole-volume computation it replaces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model_factory
from mrseg.inference.export import SlabExport, exports_in_slabs, logits_to_labels
from mrseg.inference.preprocess import Preprocessed
from mrseg.inference.resample import new_shape_for_spacing
from mrseg.inference.sliding_window import iter_logit_slabs, predict_logits, stream_axis
from mrseg.model import networks as network_module
from mrseg.model.networks import InferenceUNet, build_network
from mrseg.model.plans import parse_plans

PATCH = (8, 16, 12)


def tiny_networks(count: int = 2, kind: str = "PlainConvUNet") -> list:
    plans = parse_plans(model_factory.make_plans(kind=kind))
    config = plans.configuration("3d_fullres")
    built = []
    for seed in range(count):
        torch.manual_seed(seed)
        network = build_network(config.architecture, num_input_channels=1, num_output_channels=5).eval()
        built.append(network)
    return built


def test_stream_axis_is_where_a_tile_spans_least():
    assert stream_axis((80, 256, 256), (56, 192, 160)) == 2
    assert stream_axis((150, 273, 273), (56, 192, 160)) == 0
    assert stream_axis((40, 20, 20), (56, 192, 160)) == 0  # padded axes count as one tile


@pytest.mark.parametrize("axis", [0, 1, 2, None])
@pytest.mark.parametrize("shape", [(21, 37, 30), (6, 40, 13)])  # the second is padded on two axes
def test_slabs_tile_the_volume_and_equal_the_whole_volume_logits(axis, shape):
    data = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32))
    options = dict(patch_size=PATCH, num_heads=5, step=0.5, precision="fp32", accumulator="float32")
    networks = tiny_networks()
    whole = predict_logits(data, networks, **options)
    assert tuple(whole.shape) == (5, *shape)
    chosen = stream_axis(shape, PATCH) if axis is None else axis
    covered = 0
    for lo, hi, slab in iter_logit_slabs(data, networks, axis=axis, **options):
        assert lo == covered and hi > lo  # in order, no gaps, no overlaps
        covered = hi
        expected = whole.narrow(chosen + 1, lo, hi - lo)
        assert slab.shape == expected.shape
        torch.testing.assert_close(slab, expected, rtol=1e-5, atol=1e-6)  # the tile order may differ
    assert covered == shape[chosen]


def test_tiles_are_reported_once_each():
    data = torch.zeros((1, 21, 37, 30))
    seen = []
    slabs = iter_logit_slabs(data, tiny_networks(1), patch_size=PATCH, num_heads=5, step=0.5, axis=1,
                             on_tile=lambda done, total: seen.append((done, total)))
    for _ in slabs:
        pass
    total = seen[-1][1]
    assert seen == [(k, total) for k in range(1, total + 1)]


def export_case(transpose, spacing, shape_before, bbox):
    plans = parse_plans(model_factory.make_plans(transpose=transpose))
    config = plans.configuration("3d_fullres")
    spacing_t = tuple(spacing[a] for a in transpose)
    shape_after = tuple(hi - lo for lo, hi in bbox)
    net_shape = new_shape_for_spacing(shape_after, spacing_t, config.spacing)
    case = Preprocessed(data=np.zeros((1, *net_shape), np.float32), spacing=spacing_t,
                        shape_before_cropping=shape_before, bbox=bbox)
    return plans, config, case


EXPORTS = {
    "trilinear": ((0, 1, 2), (2.0, 1.2, 1.7), (18, 40, 30), ((0, 18), (5, 36), (2, 30))),
    "trilinear, transposed": ((1, 2, 0), (1.0, 1.0, 2.5), (25, 22, 9), ((0, 25), (0, 22), (0, 9))),
    "same grid": ((0, 1, 2), (3.0, 1.5, 1.5), (12, 20, 16), ((1, 12), (0, 20), (3, 15))),
    "separate z (gathered)": ((2, 0, 1), (4.0, 1.1, 0.9), (30, 20, 36), ((2, 27), (1, 19), (3, 33))),
}


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("name", list(EXPORTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_slab_export_equals_the_whole_volume_export(name, axis, dtype):
    plans, config, case = export_case(*EXPORTS[name])
    assert exports_in_slabs(case, config) == (name != "separate z (gathered)")
    net_shape = case.data.shape[1:]
    logits = torch.from_numpy(np.random.default_rng(3).standard_normal((6, *net_shape)).astype(dtype))
    whole = logits_to_labels(logits, case, plans=plans, configuration=config)
    export = SlabExport(case, plans=plans, configuration=config, num_heads=6, axis=axis)
    cuts = sorted({0, 1, net_shape[axis] // 3, net_shape[axis] // 3 + 1, net_shape[axis]})  # one-row slabs too
    for lo, hi in zip(cuts, cuts[1:]):
        export.add(lo, hi, logits.narrow(axis + 1, lo, hi - lo))
    assert np.array_equal(export.finish(), whole)


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lean_forward_equals_the_package_forward(kind, precision, monkeypatch):
    monkeypatch.setattr(network_module, "SLAB_BYTES", 4096)  # every convolution runs in slabs
    monkeypatch.setattr(network_module, "SLAB_BYTES_FLOAT32", 4096)
    (network,) = tiny_networks(1, kind)
    if precision == "bf16":
        network_module.store_convolutions_in(network, torch.bfloat16)
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
        monkeypatch.setattr(network_module, "SLAB_BYTES", 4096)
        monkeypatch.setattr(network_module, "SLAB_BYTES_FLOAT32", 4096)
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
    monkeypatch.setattr(network_module, "SLAB_BYTES", 4096)
    monkeypatch.setattr(network_module, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(0)
    layer = torch.nn.Conv3d(4, 4, kernel, padding=kernel // 2)
    x = torch.randn(1, 4, 19, 10, 9)
    with torch.inference_mode():
        expected = layer(x)
        out = network_module._run(layer, x.clone(), reuse_input=False)
        owned = x.clone()
        over = network_module._run(layer, owned, reuse_input=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert over.data_ptr() == owned.data_ptr()  # written over its input: no second volume
    assert torch.equal(over, out)


@pytest.mark.parametrize("stride", [(1, 2, 2), (2, 2, 2), (2, 1, 1)])
def test_strided_convolution_in_slabs_equals_the_whole_convolution(stride, monkeypatch):
    monkeypatch.setattr(network_module, "SLAB_BYTES", 4096)
    monkeypatch.setattr(network_module, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(2)
    layer = torch.nn.Conv3d(3, 5, 3, stride=stride, padding=1)
    for depth in (17, 18):  # odd and even depths end differently under a stride of 2
        x = torch.randn(1, 3, depth, 12, 10)
        with torch.inference_mode():
            expected = layer(x)
            slabs: list[int] = []
            ours = network_module._run(layer, x)
            network_module._run(layer, x, sink=lambda z0, z1, part: slabs.append(z1 - z0))
        assert len(slabs) > 1 and sum(slabs) == expected.shape[2]
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_instance_norm_equals_the_layer(dtype, monkeypatch):
    monkeypatch.setattr(network_module, "SLAB_BYTES", 4096)
    monkeypatch.setattr(network_module, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(3)
    layer = torch.nn.InstanceNorm3d(6, eps=1e-5, affine=True)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(1, 6, 9, 14, 11) * 3 + 2).to(dtype)
    with torch.inference_mode():
        expected = layer(x)
        owned = x.clone()
        ours = network_module._run(layer, owned, reuse_input=True)
        untouched = network_module._run(layer, x)
    assert ours.data_ptr() == owned.data_ptr() and torch.equal(untouched, expected)
    assert torch.equal(ours, expected)  # channels are normalised on their own: the same values


def test_decoder_step_over_its_skip_equals_the_joined_convolution(monkeypatch):
    monkeypatch.setattr(network_module, "SLAB_BYTES", 4096)
    monkeypatch.setattr(network_module, "SLAB_BYTES_FLOAT32", 4096)
    torch.manual_seed(1)
    upsampling = torch.nn.ConvTranspose3d(8, 4, (1, 2, 2), stride=(1, 2, 2))
    layer = torch.nn.Conv3d(8, 4, 3, padding=1)
    lower, skip = torch.randn(1, 8, 13, 5, 4), torch.randn(1, 4, 13, 10, 8)
    with torch.inference_mode():
        expected = layer(torch.cat((upsampling(lower), skip), 1))
        owned = skip.clone()
        over = network_module._upsample_join_convolve(upsampling, lower, owned, layer, reuse_skip=True)
    assert over.data_ptr() == owned.data_ptr()
    torch.testing.assert_close(over, expected, rtol=1e-5, atol=1e-5)


def test_lean_forward_leaves_training_alone():
    (network,) = tiny_networks(1)
    lean = InferenceUNet(network)
    tile = torch.randn(1, 1, 8, 16, 12)
    assert torch.equal(lean(tile), network(tile))  # gradients enabled: the package's own forward
    assert lean.encoder is network.encoder  # attributes are the network's
