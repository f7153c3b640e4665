"""Device, precision and memory-format choices, made once per run from the config.

On CUDA the defaults are bf16 autocast and channels-last (tensor cores want both); on CPU
they are fp32 and contiguous, since bf16 there changes numbers and must be asked for; a CPU
run that asks for bf16 gets channels-last with it. `fp64` keeps weights and inputs in
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


def make_runtime(cfg: TrainConfig) -> Runtime:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    on_cuda = device.type == "cuda"
    if not on_cuda and cfg.retain_memory:
        retain_freed_memory()
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if on_cuda else "fp32")
    amp = torch.bfloat16 if precision == "bf16" else None
    # oneDNN's bf16 convolutions want NHWC too: about 2x the images/s of NCHW on this CPU
    # (fast net, widths 48/128/192: 1,028 -> 2,039 images/s)
    channels_last = cfg.channels_last == "on" or (
        cfg.channels_last == "auto" and (on_cuda or amp is not None))
    dtype = torch.float64 if precision == "fp64" else torch.float32
    return Runtime(device=device, amp_dtype=amp, channels_last=channels_last, dtype=dtype)


def cpu_name() -> str:
    """The CPU's model name (for reports), or the architecture when it cannot be read."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
