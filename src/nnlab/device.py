"""Device, precision and memory-format choices, made once per run from the config.

On CUDA the defaults are bf16 autocast and channels-last (tensor cores want both). On CPU a
model that gains from them (a convolution net, registered with `conv=True`) gets the same
where the CPU has native bf16 (AVX512-BF16 or AMX: about 2x the fp32 images/s, with accuracy parity in
benchmarks/image_throughput.py), and fp32 elsewhere, where bf16 is emulated and 10x slower
or worse; its channels-last default holds in fp32 too (1.6x a 3x3 convolution's fp32 speed on
a Zen 3 EPYC). Text tasks stay fp32 and contiguous on CPU. `fp64` keeps weights and inputs in
float64: slow, but its rounding is about 1e9 times smaller, for numerical checks whose
answer must not depend on which kernel a CPU picks (e.g. that 2 DDP ranks take the steps
of one process).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from nnlab.allocator import retain_freed_memory
from nnlab.config import TrainConfig
from nnlab.errors import NnlabError
from nnlab.host import native_bf16


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    channels_last: bool
    dtype: torch.dtype = torch.float32  # of the weights and of float inputs (fp64 for checks)

    @property
    def precision(self) -> str:
        """What the run computes in, for summaries and the console: bf16, fp32 or fp64."""
        if self.amp_dtype is not None:
            return "bf16"
        return "fp64" if self.dtype == torch.float64 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        # under torchrun, each rank's current device is its own GPU (set by distributed.init)
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NnlabError(f"train.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NnlabError(f"train.device: {name!r} asked for, but CUDA is not available here")
    return device


def make_runtime(cfg: TrainConfig, conv_net: bool = False) -> Runtime:
    """The run's device, precision and layout. `conv_net`: the run's model is a convolution
    net (its registry entry's `conv`), which wants bf16 and channels-last on a CPU that
    computes bf16 natively."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    on_cuda = device.type == "cuda"
    if not on_cuda and cfg.retain_memory:
        retain_freed_memory()
    if cfg.precision != "auto":
        precision = cfg.precision
    else:
        precision = "bf16" if on_cuda or (conv_net and native_bf16()) else "fp32"
    amp = torch.bfloat16 if precision == "bf16" else None
    # oneDNN's convolutions want NHWC: about 2x the bf16 images/s of NCHW on an AVX512-BF16 CPU
    # (fast net, widths 48/128/192: 1,028 -> 2,039 images/s), 1.6x in fp32 on an AVX2 one
    channels_last = cfg.channels_last == "on" or (
        cfg.channels_last == "auto" and (on_cuda or amp is not None or conv_net))
    dtype = torch.float64 if precision == "fp64" else torch.float32
    return Runtime(device=device, amp_dtype=amp, channels_last=channels_last, dtype=dtype)
