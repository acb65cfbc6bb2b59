"""Training precision: `auto | fp32 | bf16`, resolved once per run and said with its reason.

bf16 means autocast: parameters, gradients and the optimiser state stay float32 (the master
weights), matrix products run in bfloat16. The numerically sensitive parts stay float32 under it:
the SSD scan and its states (`kernels/ssd.fp32_island`), A_log and dt (computed in float32 by the
mixer), the norm statistics (RMSNorm computes in float32), and the loss (`masked_cross_entropy`).

`auto` picks bf16 on CUDA and on CPUs that multiply bf16 in hardware (AMX or AVX512-BF16: measured
6.8x the fp32 matmul rate on such a Xeon), fp32 elsewhere (on AVX2-only CPUs bf16 is emulated and
slower than fp32). The CPU features are read at run time from the kernel (/proc/cpuinfo), never
assumed.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from codemill.errors import UserError
from codemill.training.config import PRECISIONS

_FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's bf16 matrix features this machine reports (empty when none, or not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return tuple(flag for flag in _FAST_BF16_FLAGS if flag in flags)


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def autocast(self, device: torch.device):
        """The context a forward pass runs under."""
        if self.name == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def resolve_precision(setting: str, device: torch.device) -> Precision:
    if setting not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, got {setting!r}")
    if setting != "auto":
        return Precision(setting, "as configured")
    if device.type == "cuda":
        return Precision("bf16", "auto: a CUDA device")
    flags = cpu_bf16_flags()
    if device.type == "cpu" and flags:
        return Precision("bf16", f"auto: this CPU multiplies bf16 in hardware ({', '.join(flags)})")
    return Precision("fp32", "auto: this CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated)")
