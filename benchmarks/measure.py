"""How a benchmark case measures: peak memory above a baseline, wall and CPU time, saved activations.

Memory. On CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). On CPU: the process's peak resident
set (``ru_maxrss``) minus its resident set right after the imports, before the model exists, so the
figure holds what CUDA's counter would (weights, gradients, optimizer state, activations) plus the
allocator's slack; ``model_mib`` is what building the model added (mostly its fp32 weights).
"""

from __future__ import annotations

import os
import time

from dgseg.machine import peak_rss_mb


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = peak_rss_mb()
    if peak is None:
        raise RuntimeError("benchmarks: measuring CPU memory needs Python's resource module (Linux, macOS); "
                           "it is missing on this platform: run the cases on CUDA or on Linux/macOS")
    return round(peak * 2**20)


class Memory:
    """Peak memory of this process above a baseline taken at construction (see the module docstring)."""

    def __init__(self, device) -> None:
        import torch

        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.base = 0
        else:
            self.base = _rss_bytes()
        self.device = device

    def current(self) -> float:
        import torch

        now = torch.cuda.memory_allocated(self.device) if self.cuda else _rss_bytes()
        return (now - self.base) / 2**20

    def peak(self) -> float:
        import torch

        now = torch.cuda.max_memory_allocated(self.device) if self.cuda else _peak_rss_bytes()
        return (now - self.base) / 2**20


class Clock:
    """Wall and process CPU time (all threads); synchronises CUDA first."""

    def __init__(self, device) -> None:
        self.device = device

    def __call__(self) -> tuple[float, float]:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter(), time.process_time()


class SavedActivations:
    """Bytes autograd saves for the backward pass (the activation memory), counted once per storage.

    Saved tensors that share a parameter's storage (weights kept for the backward) are left out: they are
    the model's own memory. A ``torch.autograd.graph.saved_tensors_hooks`` pair that returns the tensor
    itself: nothing is copied or kept alive longer.
    """

    def __init__(self, model) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: dict[int, int] = {}

    def pack(self, t):
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.params and t.device.type != "meta":
                self.seen[ptr] = max(self.seen.get(ptr, 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without a storage (sparse, nested, ...)
            pass
        return t

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    @property
    def mib(self) -> float:
        return sum(self.seen.values()) / 2**20
