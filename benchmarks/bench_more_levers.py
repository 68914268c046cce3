"""One MRSegmentator-sized tile under further levers: torch.compile, ONNX Runtime, batching tiles.

Run each variant in its own process (peak RSS is per process); ``onnxruntime-fp32`` needs
``pip install -c constraints.txt onnxruntime onnx onnxscript`` (not a dependency of mrseg):

    for v in batch1-bf16 batch2-bf16 onnxruntime-fp32 package-fp32 compile-bf16; do
        python benchmarks/bench_more_levers.py $v --model /tmp/mrseglike; done
"""
import os
import resource
import sys
import time

import torch

import mrseg.model.networks as nm
from mrseg.inference.lean_unet import InferenceUNet
from mrseg.inference.memory import reuse_freed_memory
from mrseg.model import load_model

variant = sys.argv[1]
model_dir = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "/tmp/mrseglike"
torch.set_num_threads(2)
loaded = load_model(model_dir, folds=[0])
net = loaded.build_networks("cpu")[0].eval()
patch = loaded.configuration.patch_size
tile = torch.randn(1, 1, *patch, generator=torch.Generator().manual_seed(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def timed(fn, n=4):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times

extra = ""
if variant == "lean-bf16":
    nm.store_convolutions_in(net, torch.bfloat16)
    lean = InferenceUNet(net)
    def fn():
        with reuse_freed_memory(), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return lean(tile)
    out, times = timed(fn)
    per = min(times)
elif variant == "compile-bf16":
    t0 = time.perf_counter()
    compiled = torch.compile(net)
    def fn():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return compiled(tile)
    out, times = timed(fn, 4)
    per = min(times[1:])
    extra = f"first call (compile) {times[0]:.1f} s"
elif variant == "compile-fp32":
    compiled = torch.compile(net)
    def fn():
        with torch.inference_mode():
            return compiled(tile)
    out, times = timed(fn, 3)
    per = min(times[1:])
    extra = f"first call (compile) {times[0]:.1f} s"
elif variant == "package-fp32":
    def fn():
        with torch.inference_mode():
            return net(tile)
    out, times = timed(fn, 3)
    per = min(times)
elif variant == "onnxruntime-fp32":
    import onnxruntime as ort
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "mrseg_tile_network.onnx")
    if not os.path.exists(path):
        torch.onnx.export(net, (tile,), path, dynamo=True, external_data=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out, times = timed(lambda: session.run(None, {name: tile.numpy()})[0], 3)
    per = min(times)
    with torch.inference_mode():
        ref = net(tile)
    extra = f"max |diff| vs torch fp32 {abs(torch.from_numpy(out) - ref).max().item():.2e}"
elif variant.startswith("batch2-bf16"):
    nm.store_convolutions_in(net, torch.bfloat16)
    tiles = torch.cat([tile, torch.flip(tile, (2,))])
    def fn():
        with reuse_freed_memory(), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(tiles)
    out, times = timed(fn, 3)
    per = min(times) / 2
elif variant == "batch1-bf16":
    nm.store_convolutions_in(net, torch.bfloat16)
    def fn():
        with reuse_freed_memory(), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(tile)
    out, times = timed(fn, 3)
    per = min(times)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{variant:18s} {per:6.2f} s/tile  peak RSS {peak / 1024:5.2f} GB (model loaded {base / 1024:.2f})",
      extra, flush=True)
