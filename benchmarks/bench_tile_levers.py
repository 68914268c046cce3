"""Time one MRSegmentator-sized tile forward pass under different CPU levers, side by side.

The network is the stand-in described in ../shared/BASELINE.md (PlainConvUNet, 6 stages,
32–320 features, patch 56×192×160, 41 classes) with random weights: the cost is the same as
trained weights, but label agreement here is pessimistic (random logits are near-uniform).

    python benchmarks/bench_tile_levers.py
"""

from __future__ import annotations

import time

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn


def network() -> nn.Module:
    torch.manual_seed(0)
    return PlainConvUNet(
        1, 6, [32, 64, 128, 256, 320, 320], nn.Conv3d,
        [[1, 3, 3]] + [[3, 3, 3]] * 5, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        [2] * 6, 41, [2] * 5, True, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True},
        None, None, nn.LeakyReLU, {"inplace": True}, deep_supervision=False,
    ).eval()


def timed(fn):
    fn()  # warm-up
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    net, x = network(), torch.randn(1, 1, 56, 192, 160)
    rows = []
    with torch.inference_mode():
        base, ref = timed(lambda: net(x))
        rows.append(("fp32 (baseline)", base, 1.0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t, out = timed(lambda: net(x))
        rows.append(("bf16 autocast", t, float((out.float().argmax(1) == ref.argmax(1)).float().mean())))
        net_cl, x_cl = net.to(memory_format=torch.channels_last_3d), x.to(memory_format=torch.channels_last_3d)
        t, out = timed(lambda: net_cl(x_cl))
        rows.append(("fp32 channels_last_3d", t, float((out.argmax(1) == ref.argmax(1)).float().mean())))
    print(f"threads {torch.get_num_threads()}, tile 56x192x160")
    print(f"{'variant':24s} {'seconds':>8s} {'speed-up':>9s} {'argmax agreement':>17s}")
    for name, seconds, agree in rows:
        print(f"{name:24s} {seconds:8.2f} {base / seconds:9.2f} {agree:17.4f}")


if __name__ == "__main__":
    main()
