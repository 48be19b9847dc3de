"""Mixed precision: which autocast mode a run actually uses on its device, and the context for it."""

from __future__ import annotations

import contextlib
import warnings

import torch

from dgseg.machine import cpu_has_fast_bf16

AMP_MODES = ("none", "bf16", "fp16")

_SAID: set[str] = set()
"""The fallback warnings this process has issued. Python's own once-per-location memory is not enough: any
``warnings.catch_warnings`` or filter change on the way (a subprocess call, a library's import) clears it, and
training's setup and the evaluation after it each said it again."""


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, stacklevel=3)  # the line that resolved the precision


def resolve_amp(amp: str, device: torch.device, training: bool = True) -> str:
    """The autocast mode to use for ``amp`` (none | bf16 | fp16) on ``device``.

    - fp16 needs CUDA: training elsewhere is an error; evaluation falls back to float32.
    - bf16 on a CPU or a GPU without native bf16 (before Ampere) falls back to float32, with a warning that
      says why, once per process (not once for training and again for every evaluation).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp={amp!r}: expected one of {', '.join(AMP_MODES)}")
    if amp == "fp16" and device.type != "cuda":
        if training:
            raise ValueError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 (or none) on CPU")
        return "none"
    if amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        _say_once("train.amp=bf16: this CPU has no native bf16 (no AVX512-BF16/AMX), where bf16 runs several "
                  "times slower than float32; running in float32 instead")
        return "none"
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        _say_once(f"train.amp=bf16: {torch.cuda.get_device_name(device)} has no native bf16 (it needs compute "
                  "capability 8.0, Ampere, or newer), where bf16 is emulated and slow; running in float32 instead "
                  "(train.amp=fp16 is the mixed precision of this GPU)")
        return "none"
    return amp


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for an already resolved ``amp`` (none | bf16 | fp16)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
