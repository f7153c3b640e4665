"""What this CPU is and how fast it is: its name and flags, whether it computes bf16 natively,
and reference speeds (matrix product and convolution GFLOP/s) that timings are quoted beside.

Hosts of the same nominal size differ a lot: a 2-core AMD EPYC (Zen 3, AVX2 only) ran a bf16
matrix product at 0.3 GFLOP/s (emulated) and fp32 at 97, while AVX512-BF16 and AMX hosts run
bf16 at 2-4x their fp32 speed. So bf16 is the CPU default only where it is native.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import torch

# /proc/cpuinfo flags of native bf16 arithmetic: x86 AVX512-BF16 and AMX, Arm's BF16 extension
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name (for reports), or the architecture when it cannot be read."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def native_bf16() -> bool:
    """True where the CPU does bf16 arithmetic in hardware; elsewhere oneDNN emulates it, 10x
    to 300x slower than fp32 (measured on a Zen 3 EPYC)."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags())


def _rate(fn, flops: float, seconds: float) -> float:
    """GFLOP/s of `fn` (doing `flops` each call): one warm-up call, then as many calls as fit
    in `seconds` (at least one), so a slow path cannot stall the probe for minutes."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * flops / elapsed / 1e9


def matmul_gflops(dtype: torch.dtype = torch.bfloat16, size: int = 1024, seconds: float = 1.0) -> float:
    """A square matrix product's speed in `dtype` on this host's current threads."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    return _rate(lambda: a @ b, 2 * size**3, seconds)


def conv_gflops(dtype: torch.dtype = torch.bfloat16, channels_last: bool = True, batch: int = 64,
                width: int = 64, size: int = 32, seconds: float = 1.0) -> float:
    """A 3x3 'same' convolution's forward speed (width -> width channels, size x size images),
    the bulk of a CIFAR net's work, under autocast to `dtype` (fp32: no autocast)."""
    conv = torch.nn.Conv2d(width, width, 3, padding=1, bias=False)
    x = torch.randn(batch, width, size, size)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    amp = dtype != torch.float32

    @torch.no_grad()
    def run():
        with torch.autocast("cpu", dtype=dtype, enabled=amp):
            conv(x)

    return _rate(run, 2 * batch * width * width * 9 * size * size, seconds)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this OS
        return os.cpu_count() or 1


def reference_speeds(seconds: float = 1.0) -> dict[str, float | str | bool]:
    """The host's name and reference GFLOP/s, recorded beside every timing a benchmark writes."""
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "native_bf16": native_bf16(),
            "matmul_fp32_gflops": round(matmul_gflops(torch.float32, seconds=seconds), 1),
            "matmul_bf16_gflops": round(matmul_gflops(torch.bfloat16, seconds=seconds), 1),
            "conv_fp32_gflops": round(conv_gflops(torch.float32, seconds=seconds), 1),
            "conv_bf16_gflops": round(conv_gflops(torch.bfloat16, seconds=seconds), 1)}
