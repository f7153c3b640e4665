"""Training throughput of every image model on this CPU, beside what the hardware can do.

For each model and mode (fp32 NCHW, fp32 channels-last, bf16 autocast channels-last, and bf16 or
fp32 + torch.compile for the models named by --compile), times training steps (forward,
cross-entropy, backward, Adam step) on random 32x32 images, and reports images/s, the model's
FLOPs per training image (counted by torch.utils.flop_counter over forward + backward), the
GFLOP/s achieved, and the host's own reference speeds measured in the same run: a square
matrix product and a 64-channel 3x3 convolution, fp32 and bf16. The gap between a model's
GFLOP/s and the convolution reference is what better kernels could still win; the reference
is the ceiling budgets are designed around.

    python benchmarks/image_throughput.py [--models classic-cnn,resnet18] [--batch 128]
        [--seconds 6] [--compile classic-cnn-gap-bn] [--bf16-anyway]

bf16 is skipped on CPUs without native bf16 (AVX512-BF16 / AMX), where oneDNN emulates it at
a tenth of fp32's speed or less, unless --bf16-anyway. Writes
benchmarks/results/image_throughput.json (rows keyed by host, model and mode; rows of other
hosts are kept).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nnlab import models
from nnlab.host import native_bf16, reference_speeds

RESULTS = Path(__file__).resolve().parent / "results" / "image_throughput.json"
MODES = ("fp32", "fp32-cl", "bf16-cl", "compile")


def build(name: str) -> torch.nn.Module:
    return models.create(name, "image", {}, in_channels=3, num_classes=10, image_size=(32, 32))


def flops_per_image(name: str, batch: int = 16) -> float:
    """Forward + backward FLOPs of one training image (fp32, counted, not timed)."""
    model = build(name).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def images_per_second(name: str, mode: str, batch: int, seconds: float, compile_dtype: str) -> float:
    torch.manual_seed(0)
    model = build(name).train()
    channels_last = mode != "fp32"
    amp = mode == "bf16-cl" or (mode == "compile" and compile_dtype == "bf16")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if mode == "compile" else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2 if mode != "compile" else 3):  # warm-up (compile: the first steps compile)
        step()
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.names("image")))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--compile", default="classic-cnn-gap-bn,fast",
                        help="models also timed under torch.compile (each compiles for a minute)")
    parser.add_argument("--bf16-anyway", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    host = reference_speeds()
    native = native_bf16()
    compile_dtype = "bf16" if native or args.bf16_anyway else "fp32"
    print(f"host: {host['cpu']}, {host['threads']} threads, native bf16: {native}; "
          f"matmul fp32 {host['matmul_fp32_gflops']} / bf16 {host['matmul_bf16_gflops']} GFLOP/s, "
          f"3x3 conv fp32 {host['conv_fp32_gflops']} / bf16 {host['conv_bf16_gflops']} GFLOP/s")
    rows = []
    header = f"{'model':<24}{'MFLOP/img':>10}" + "".join(f"{m:>16}" for m in MODES)
    print(header + "   (images/s, GFLOP/s)")
    for name in args.models.split(","):
        flops = flops_per_image(name)
        cells = []
        for mode in MODES:
            if mode == "bf16-cl" and not (native or args.bf16_anyway):
                cells.append(f"{'emulated':>16}")
                continue
            if mode == "compile" and name not in args.compile.split(","):
                cells.append(f"{'-':>16}")
                continue
            rate = images_per_second(name, mode, args.batch, args.seconds, compile_dtype)
            rows.append({"host": host["cpu"], "model": name, "mode": mode if mode != "compile"
                         else f"compile-{compile_dtype}-cl", "batch": args.batch,
                         "images_per_s": round(rate, 1), "mflop_per_image": round(flops / 1e6, 1),
                         "gflops": round(rate * flops / 1e9, 1)})
            cells.append(f"{rate:>9,.0f} {rate * flops / 1e9:>5.0f}")
        print(f"{name:<24}{flops / 1e6:>10.1f}" + "".join(cells), flush=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"hosts": {}, "rows": []}
    measured = {(r["host"], r["model"], r["mode"]) for r in rows}
    saved["rows"] = [r for r in saved["rows"] if (r["host"], r["model"], r["mode"]) not in measured]
    saved["rows"] += rows
    saved["hosts"][host["cpu"]] = host
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
