"""Mixed precision: which autocast mode a run actually uses on its device, and the context for it."""

from __future__ import annotations

import contextlib
import warnings

import torch

from dgseg.machine import cpu_has_fast_bf16

AMP_MODES = ("none", "bf16", "fp16")


def resolve_amp(amp: str, device: torch.device, training: bool = True) -> str:
    """The autocast mode to use for ``amp`` (none | bf16 | fp16) on ``device``.

    - fp16 needs CUDA: training elsewhere is an error; evaluation falls back to float32.
    - bf16 on a CPU or a GPU without native bf16 (before Ampere) falls back to float32, with a warning that
      says why. It is issued from this function's own line (stacklevel 1), so Python's default filter shows
      it once per process, not once for training and again for every evaluation.
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
            stacklevel=1,
        )
        return "none"
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        warnings.warn(
            f"train.amp=bf16: {torch.cuda.get_device_name(device)} has no native bf16 (it needs compute capability "
            "8.0, Ampere, or newer), where bf16 is emulated and slow; running in float32 instead (train.amp=fp16 "
            "is the mixed precision of this GPU)",
            stacklevel=1,
        )
        return "none"
    return amp


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for an already resolved ``amp`` (none | bf16 | fp16)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
