"""Mixed precision: which autocast mode a run actually uses on its device, and the context for it."""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings

import torch

from dgseg.machine import cpuinfo_field

AMP_MODES = ("none", "bf16", "fp16")


X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AVX512-BF16 or AMX on x86, oneDNN's answer elsewhere (on Arm
    it checks the BF16 extension).

    Without it, PyTorch emulates bf16: a bf16 linear layer runs about 6x and a 3x3 convolution over
    200x slower than in float32 (measured on an AVX2 AMD EPYC), so bf16 autocast would only cost time.
    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) says yes on any x86 CPU with
    AVX-512, where bf16 is emulated too: on an Intel Xeon with AVX-512 but no AVX512-BF16 (2026-12-03), bf16
    autocast ran the ViT-S/14 forward and backward 2.2-3.6x and a 3x3 convolution 3.7x slower than float32.
    So on x86 the CPU's own flags decide.
    """
    if platform.machine().lower() in X86_MACHINES:
        avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        if avx512_bf16 is not None and amx is not None:
            return bool(avx512_bf16() or amx())
        return bool(set(cpuinfo_field("flags").split()) & {"avx512_bf16", "amx_bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: str, device: torch.device, training: bool = True) -> str:
    """The autocast mode to use for ``amp`` (none | bf16 | fp16) on ``device``.

    - fp16 needs CUDA: training elsewhere is an error; evaluation falls back to float32.
    - bf16 on a CPU without native bf16 falls back to float32, with a warning that says why.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp={amp!r}: expected one of {', '.join(AMP_MODES)}")
    if amp == "fp16" and device.type != "cuda":
        if training:
            raise ValueError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 (or none) on CPU")
        return "none"
    if amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn(
            "train.amp=bf16: this CPU has no native bf16 (no AVX512-BF16/AMX), where bf16 runs several "
            "times slower than float32; running in float32 instead",
            stacklevel=2,
        )
        return "none"
    return amp


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for an already resolved ``amp`` (none | bf16 | fp16)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
