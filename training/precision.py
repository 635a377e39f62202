"""Mixed precision for training: when bf16 autocast pays, and the context that applies it.

On a CPU, bf16 is only faster where the hardware multiplies bf16 natively (AVX512-BF16 or AMX);
elsewhere oneDNN emulates it and a step gets slower, so it is switched on only when the CPU flags
say so. Measured in ``benchmarks/cpu_training_speed.py`` (figures in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

#: CPU flags (as ``/proc/cpuinfo`` spells them) of native bf16 arithmetic.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags_have_native_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists AVX512-BF16 or AMX-BF16 among the CPU flags."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and any(flag in value.split() for flag in NATIVE_BF16_FLAGS):
            return True
    return False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on a CPU with native bf16 (AVX512-BF16 / AMX) that torch's oneDNN backend can use.
    False where that cannot be told (no ``/proc/cpuinfo``, e.g. macOS) or oneDNN is missing."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return cpu_flags_have_native_bf16(cpuinfo)


def bf16_enabled(device: torch.device | str, on_gpu: bool, on_cpu: bool) -> bool:
    """Whether forward passes on ``device`` run under bf16 autocast: on CUDA when ``on_gpu``; on a
    CPU when ``on_cpu`` and the CPU has native bf16."""
    kind = torch.device(device).type
    if kind == "cuda":
        return on_gpu
    return kind == "cpu" and on_cpu and cpu_has_native_bf16()


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``enabled``, else a no-op context."""
    kind = torch.device(device).type
    if not enabled or kind not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(kind, torch.bfloat16)
