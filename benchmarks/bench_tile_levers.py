"""One MRSegmentator-sized tile forward pass under each CPU lever, side by side, plus the
machine's convolution throughput measured in the same run.

The network is the stand-in of ../shared/BASELINE.md (PlainConvUNet, 6 stages, 32–320
features, patch 56×192×160, 41 classes). Without ``--model`` it has random weights and a
random input: the cost is that of trained weights, but label agreement is pessimistic
(random logits are nearly uniform, so tiny differences flip the argmax). With ``--model DIR``
fold 0 of any nnU-Net model folder runs on the centre tile of ``--image`` (a scan, preprocessed
as mrseg does) or of a phantom MR: with trained weights (the published MRSegmentator weights,
say) that measures the bf16 label agreement that matters.

Every variant runs in its own process (the heap setting is process-wide and peak RSS is per
process). Columns: seconds per tile (best of two after a warm-up), speed-up against plain
float32 (what nnU-Net runs on the CPU), achieved GFLOP/s of the convolutions, minor page
faults per tile, the process's peak RSS, and the share of voxels whose argmax equals plain
float32's.

    python benchmarks/bench_tile_levers.py [--model DIR [--image SCAN]]
    python benchmarks/bench_tile_levers.py --profile    # where mrseg's default tile spends its time
    python benchmarks/bench_tile_levers.py --layers fp32  # each convolution alone against the whole tile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATCH = (56, 192, 160)
VARIANTS = {
    # name: (precision, reuse freed memory, channels_last_3d, lean forward, extra environment)
    "fp32 (as nnU-Net)": ("fp32", False, False, False, {}),
    "fp32 + THP_MEM_ALLOC_ENABLE": ("fp32", False, False, False, {"THP_MEM_ALLOC_ENABLE": "1"}),
    "fp32 channels_last_3d": ("fp32", False, True, False, {}),
    "fp32 + reuse freed memory": ("fp32", True, False, False, {}),
    "fp32 + lean forward": ("fp32", False, False, True, {}),
    "fp32 + reuse + lean (mrseg)": ("fp32", True, False, True, {}),
    "bf16": ("bf16", False, False, False, {}),
    "bf16 + reuse freed memory": ("bf16", True, False, False, {}),
    "bf16 + reuse + channels_last_3d": ("bf16", True, True, False, {}),
    "bf16 + reuse + lean (mrseg)": ("bf16", True, False, True, {}),
}


def stand_in_network():
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    torch.manual_seed(0)
    return PlainConvUNet(
        1, 6, [32, 64, 128, 256, 320, 320], nn.Conv3d,
        [[1, 3, 3]] + [[3, 3, 3]] * 5, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        [2] * 6, 41, [2] * 5, True, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True},
        None, None, nn.LeakyReLU, {"inplace": True}, deep_supervision=False,
    ).eval()


def forward_with_convolution_hook(network, tile, hook) -> None:  # type: ignore[no-untyped-def]
    """One forward pass with ``hook(module, inputs, output)`` called after every (transposed) convolution."""
    import torch

    handles = [m.register_forward_hook(hook) for m in network.modules()
               if isinstance(m, torch.nn.modules.conv._ConvNd)]
    try:
        with torch.inference_mode():
            network(tile)
    finally:
        for handle in handles:
            handle.remove()


def conv_flops(network, tile) -> float:
    """Floating-point operations of every convolution in one forward pass (2 per multiply-add)."""
    import torch

    total = [0.0]

    def count(module, _inputs, output):
        weight = module.weight
        if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
            total[0] += 2.0 * _inputs[0].numel() * weight.shape[1] * int(np.prod(weight.shape[2:]))
        else:
            total[0] += 2.0 * output.numel() * int(np.prod(weight.shape[1:]))

    forward_with_convolution_hook(network, tile, count)
    return total[0]


def conv_throughput(dtype_name: str) -> float:
    """GFLOP/s of the best of a few large single Conv3d layers (this machine's practical limit)."""
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for channels, shape in ((32, (56, 192, 160)), (64, (28, 96, 80)), (128, (28, 48, 40)), (256, (14, 24, 20))):
        conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(dtype).eval()
        x = torch.randn(1, channels, *shape, dtype=dtype)
        flops = 2.0 * x.numel() * channels * 27
        with torch.inference_mode():
            conv(x)
            start = time.perf_counter()
            conv(x)
            best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def centre_tile(model, image_path: Path | None) -> np.ndarray:
    """The centre patch of a scan (or an MR phantom), preprocessed for ``model`` as mrseg does."""
    from mrseg.inference.preprocess import preprocess
    from mrseg.io import read_image
    from mrseg.io.orientation import reorient

    if image_path is None:
        from mrseg.phantom.cases import make_case

        image = make_case(seed=7, modality="mr", sequence="t1_in", fov="abdomen", spacing=(1.5, 1.5, 3.0)).image
    else:
        image = read_image(image_path)
    image, _ = reorient(image, "LPS")
    data = preprocess([image.array] * model.num_input_channels, image.geometry.spacing_zyx, plans=model.plans,
                      configuration=model.configuration).data
    patch = model.configuration.patch_size
    start = [max((s - p) // 2, 0) for s, p in zip(data.shape[1:], patch)]
    tile = np.zeros((data.shape[0], *patch), np.float32)
    crop = data[(slice(None),) + tuple(slice(s, s + p) for s, p in zip(start, patch))]
    tile[(slice(None),) + tuple(slice(0, c) for c in crop.shape[1:])] = crop
    return tile


def run_variant(name: str, model: Path | None, image: Path | None, reference: Path) -> dict:
    """Runs inside the child process."""
    import torch

    from mrseg.inference.lean_unet import InferenceUNet
    from mrseg.inference.memory import reuse_freed_memory
    from mrseg.model.networks import store_convolutions_in

    precision, reuse, channels_last, lean, _ = VARIANTS[name]
    if model is None:
        network, tile = stand_in_network(), torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(1))
    else:
        from mrseg.model import available_folds, load_model

        loaded = load_model(model, folds=available_folds(model)[:1])
        network = loaded.build_networks("cpu")[0]
        tile = torch.from_numpy(centre_tile(loaded, image))[None]
    if precision == "bf16":
        store_convolutions_in(network, torch.bfloat16)  # as mrseg's Segmenter does
    if channels_last:
        network, tile = network.to(memory_format=torch.channels_last_3d), tile.to(memory_format=torch.channels_last_3d)
    forward = InferenceUNet(network) if lean else network
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    seconds, faults = [], []
    with reuse_freed_memory(reuse), torch.inference_mode(), autocast:
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            labels = forward(tile).float().argmax(1)[0].numpy().astype(np.uint8)
            seconds.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    if not reference.exists():
        np.save(reference, labels)
    agreement = float((labels == np.load(reference)).mean())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if precision == "bf16":  # count in float32: flops hooks see the same shapes either way
        network = network.float()
    flops = conv_flops(network, tile.float())
    best = min(seconds[1:])
    return {"seconds": best, "gflops": flops / best / 1e9, "tflop": flops / 1e12, "faults": faults[-1],
            "peak_rss_gb": peak, "agreement": agreement, "classes": int(len(np.unique(labels)))}


def profile_default_tile() -> None:
    """torch.profiler's operator table for one tile as mrseg runs it by default (bf16, heap reuse,
    lean forward), after a warm-up pass."""
    import torch

    from mrseg.inference.lean_unet import InferenceUNet
    from mrseg.inference.memory import reuse_freed_memory
    from mrseg.model.networks import store_convolutions_in

    network = stand_in_network().eval()
    store_convolutions_in(network, torch.bfloat16)
    tile = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(1))
    forward = InferenceUNet(network)
    with reuse_freed_memory(True), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        forward(tile)
        start = time.perf_counter()
        forward(tile)
        print(f"one bf16 lean tile: {time.perf_counter() - start:.2f} s")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            forward(tile)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def layer_table(precision: str) -> None:
    """Each convolution of the stand-in network timed alone at its own shape (best of three, after a
    warm-up), against one whole lean tile in ``precision``: the ceiling of every layer, and what
    the tile spends outside the convolutions."""
    import torch

    from mrseg.inference.lean_unet import InferenceUNet
    from mrseg.inference.memory import reuse_freed_memory
    from mrseg.model.networks import store_convolutions_in

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    network = stand_in_network().eval()
    tile = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(1))
    shapes: list[tuple[str, object, tuple[int, ...]]] = []

    def record(module, inputs, _output):  # type: ignore[no-untyped-def]
        shapes.append((type(module).__name__, module, tuple(inputs[0].shape)))

    forward_with_convolution_hook(network, tile, record)
    if dtype == torch.bfloat16:
        store_convolutions_in(network, torch.bfloat16)
    forward = InferenceUNet(network)
    with reuse_freed_memory(True), torch.inference_mode(), torch.autocast("cpu", dtype=dtype,
                                                                          enabled=dtype == torch.bfloat16):
        forward(tile)
        start = time.perf_counter()
        forward(tile)
        whole = time.perf_counter() - start
        print(f"{'layer':22s} {'input':>22s} {'weight':>18s} {'GFLOP':>7s} {'s':>6s} {'GFLOP/s':>8s}")
        total_s = total_flop = 0.0
        for kind, module, shape in shapes:
            x = torch.randn(shape, dtype=dtype)
            best = float("inf")
            for _ in range(4):
                begin = time.perf_counter()
                out = module(x)
                best = min(best, time.perf_counter() - begin)
            weight = module.weight  # type: ignore[attr-defined]
            if kind.startswith("ConvTranspose"):
                flop = 2.0 * x.numel() * weight.shape[1] * int(np.prod(weight.shape[2:]))
            else:
                flop = 2.0 * out.numel() * int(np.prod(weight.shape[1:]))
            del out, x
            total_s += best
            total_flop += flop
            print(f"{kind:22s} {'x'.join(map(str, shape[1:])):>22s} {'x'.join(map(str, weight.shape)):>18s} "
                  f"{flop / 1e9:7.1f} {best:6.3f} {flop / best / 1e9:8.0f}")
    print(f"{precision}: convolutions alone {total_s:.2f} s ({total_flop / total_s / 1e9:.0f} GFLOP/s); one lean tile "
          f"{whole:.2f} s ({total_flop / whole / 1e9:.0f} GFLOP/s); outside the convolutions {whole - total_s:.2f} s")


def channels_last_prototype(precision: str) -> None:
    """A prototype, not the engine: the stand-in network's forward with every stage at or above
    ``--cl-min-voxels`` output voxels in channels_last_3d (convolutions, transposed convolutions,
    the concatenation and the head), its instance normalisations on the (voxels, channels) view as the
    engine does them (``lean_unet._instance_norm_channels_last_``),
    against the network's own forward and mrseg's lean forward in the same process (fp32)."""
    import torch
    import torch.nn.functional as F

    from mrseg.inference.lean_unet import InferenceUNet, _instance_norm_channels_last_
    from mrseg.inference.memory import reuse_freed_memory

    network = stand_in_network().eval()
    tile = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(1))
    large = 56 * 96 * 80  # stages with at least this many voxels run channels_last

    def block(layer, x):  # type: ignore[no-untyped-def]
        cl = x[0, 0].numel() >= large and x.shape[1] > 1  # one input channel: oneDNN has no channels_last path
        x = layer.conv(x.contiguous(memory_format=torch.channels_last_3d) if cl else x.contiguous())
        if x.is_contiguous(memory_format=torch.channels_last_3d) and cl:
            x = _instance_norm_channels_last_(layer.norm, x)
        else:
            x = layer.norm(x.contiguous())
        return F.leaky_relu_(x, 0.01)

    def forward(x):  # type: ignore[no-untyped-def]
        skips = []
        for stage in network.encoder.stages:
            for layer in stage[0].convs:
                x = block(layer, x)
            skips.append(x)
        lower = skips.pop()
        for s, stage in enumerate(network.decoder.stages):
            skip = skips.pop()
            up = network.decoder.transpconvs[s]
            cl = skip[0, 0].numel() >= large
            lower = lower.contiguous(memory_format=torch.channels_last_3d) if cl else lower.contiguous()
            joined = torch.cat((up(lower), skip), 1)
            del lower, skip
            x = joined
            for layer in stage.convs:
                x = block(layer, x)
            lower = x
        head = network.decoder.seg_layers[-1]
        return head(lower).contiguous()

    with torch.inference_mode(), reuse_freed_memory(True):
        reference = network(tile)
        timings = {}
        for name, run in (("own forward", lambda: network(tile)), ("lean forward (mrseg)",
                                                                    lambda: InferenceUNet(network)(tile)),
                          ("channels_last full-res prototype", lambda: forward(tile))):
            run()
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                out = run()
                best = min(best, time.perf_counter() - start)
            timings[name] = best
            equal = float((out.argmax(1) == reference.argmax(1)).float().mean())
            diff = float((out - reference).abs().max())
            print(f"{precision} {name:34s} {best:6.2f} s/tile  max |logit diff| {diff:.2e}"
                  f"  argmax equal {100 * equal:.4f} %", flush=True)
            del out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (its first fold is used); default random weights")
    parser.add_argument("--image", type=Path, help="with --model: a scan to take the tile from (default a phantom)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="profile one default (bf16 lean) tile instead")
    parser.add_argument("--channels-last-prototype", action="store_true",
                        help="time a fp32 forward with the full-resolution stages in channels_last_3d (a prototype)")
    parser.add_argument("--layers", choices=("fp32", "bf16"),
                        help="time every convolution alone at its shape against one lean tile in this precision")
    args = parser.parse_args()
    if args.profile:
        profile_default_tile()
        return
    if args.layers:
        layer_table(args.layers)
        return
    if args.channels_last_prototype:
        channels_last_prototype("fp32")
        return
    if args.variant == "conv":
        print(json.dumps({"fp32": conv_throughput("float32"), "bf16": conv_throughput("bfloat16")}))
        return
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.model, args.image, args.reference)))
        return

    def child(variant: str, env: dict[str, str]) -> dict:
        command = [sys.executable, __file__, "--variant", variant, "--reference", str(reference)]
        if args.model:
            command += ["--model", str(args.model)] + (["--image", str(args.image)] if args.image else [])
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as work:
        reference = Path(work) / "reference.npy"
        rows = {name: child(name, VARIANTS[name][4]) for name in VARIANTS}
        conv = child("conv", {})
    import torch

    base = rows["fp32 (as nnU-Net)"]["seconds"]
    print(f"threads {torch.get_num_threads()}, tile {'x'.join(map(str, PATCH))}, "
          f"{rows['fp32 (as nnU-Net)']['tflop'] * 1000:.0f} GFLOP per forward, "
          f"weights {'first fold of ' + str(args.model) if args.model else 'random'}, "
          f"{rows['fp32 (as nnU-Net)']['classes']} classes in the float32 labels")
    print(f"best single Conv3d: fp32 {conv['fp32']:.0f} GFLOP/s, bf16 {conv['bf16']:.0f} GFLOP/s")
    print(f"{'variant':30s} {'s/tile':>7s} {'speed-up':>8s} {'GFLOP/s':>8s} {'faults':>9s} {'peak RSS GB':>11s} "
          f"{'argmax equal':>12s}")
    for name, row in rows.items():
        print(f"{name:30s} {row['seconds']:7.2f} {base / row['seconds']:8.2f} {row['gflops']:8.0f} "
              f"{row['faults']:9d} {row['peak_rss_gb']:11.2f} {100 * row['agreement']:11.3f}%")


if __name__ == "__main__":
    main()
