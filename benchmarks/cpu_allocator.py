"""Benchmark: CPU training throughput of the `fast` net under different memory allocators.

Why nnlab.allocator exists: glibc maps every block above 32 MiB afresh and unmaps it on free,
so each training step of a large batch page-faults its activations in again. This measures
bf16 channels-last training steps of the `fast` net in a fresh process per setting:

- glibc as it comes (`train.retain_memory=false`);
- glibc told to keep freed memory (nnlab.allocator, the default);
- tcmalloc and jemalloc through LD_PRELOAD, when the system has them
  (Debian: libtcmalloc-minimal4, libjemalloc2).

    python benchmarks/cpu_allocator.py [--batches 1024 2000] [--steps 6]

Prints a table and writes benchmarks/results/cpu_allocator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

PRELOADS = {
    "tcmalloc (LD_PRELOAD)": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "jemalloc (LD_PRELOAD)": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
}

PROBE = """
import json, resource, sys, time
import torch
from nnlab import models
from nnlab.allocator import retain_freed_memory
batch, steps, retain = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
if retain:
    assert retain_freed_memory()
torch.manual_seed(0)
net = models.create("fast", "image", {}, in_channels=3, num_classes=10, image_size=(32, 32))
net = net.to(memory_format=torch.channels_last)
opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))

def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

step(); step()  # warm-up: oneDNN primitives, the heap's first growth
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"images_per_s": batch * steps / seconds,
                  "user_s": after.ru_utime - before.ru_utime,
                  "system_s": after.ru_stime - before.ru_stime,
                  "page_faults": after.ru_minflt - before.ru_minflt,
                  "peak_rss_mib": after.ru_maxrss / 1024}))
"""


def measure(batch: int, steps: int, retain: bool, preload: str | None) -> dict:
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    out = subprocess.run([sys.executable, "-c", PROBE, str(batch), str(steps), str(int(retain))],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 2000])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", default="benchmarks/results/cpu_allocator.json")
    args = parser.parse_args()
    settings = [("glibc default", False, None), ("glibc, memory kept (nnlab)", True, None)]
    settings += [(name, False, path) for name, path in PRELOADS.items() if Path(path).is_file()]
    rows = []
    for batch in args.batches:
        for name, retain, preload in settings:
            row = {"allocator": name, "batch": batch, "steps": args.steps,
                   **measure(batch, args.steps, retain, preload)}
            rows.append(row)
            Console(stderr=True).print(f"batch {batch}, {name}: {row['images_per_s']:,.0f} images/s")
    table = Table(title="fast net, bf16 channels-last training steps on CPU")
    for col in ("batch", "allocator", "images/s", "user s", "system s", "page faults", "peak MiB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["batch"]), r["allocator"], f"{r['images_per_s']:,.0f}",
                      f"{r['user_s']:.1f}", f"{r['system_s']:.1f}", f"{r['page_faults']:,}",
                      f"{r['peak_rss_mib']:,.0f}")
    Console(width=140).print(table)
    result = {"rows": rows, "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
