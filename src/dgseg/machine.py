"""What machine a measurement ran on (for reports and benchmarks)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


def cpuinfo_field(name: str) -> str:
    """The value of the first ``name`` line of /proc/cpuinfo ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_family_model() -> str:
    """"family F model M" of an x86 CPU from /proc/cpuinfo ("" elsewhere). A virtual machine's model name can
    be as bare as "AMD EPYC"; the family and model tell its generations apart (family 25 is AMD Zen 3/4, 26 is
    Zen 5), and they matter for bf16 results: CPUs of different kinds round bf16 differently, and the
    demo's Rein row moved by 6 points between two "AMD EPYC (AVX-512 BF16)" machines (README, The demo)."""
    family, model = cpuinfo_field("cpu family"), cpuinfo_field("model")
    return f"family {family} model {model}" if _is_x86() and family and model else ""


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


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
    import torch

    if _is_x86():
        avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        if avx512_bf16 is not None and amx is not None:
            return bool(avx512_bf16() or amx())
        return bool(set(cpuinfo_field("flags").split()) & {"avx512_bf16", "amx_bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, Slurm, a container's cpuset), which
    can be fewer than the machine's (``os.cpu_count``); the machine's count where there is no mask (macOS)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB (``ru_maxrss`` counts KiB on Linux, bytes on macOS); None
    where Python has no ``resource`` module (Windows), which the reports print as "-"."""
    import sys

    try:
        import resource
    except ImportError:
        return None

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def machine_line() -> str:
    """One line: CPU (its x86 family and model, and whether it computes bf16 natively, which decides a CPU
    run's precision and speed), cores, GPU, torch and Python versions."""
    import torch

    native = "AVX-512 BF16" if _is_x86() else "native bf16"
    bf16 = native if cpu_has_fast_bf16() else "no native bf16"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cores, usable = os.cpu_count(), usable_cores()
    shown = f"{cores} cores" + (f" ({usable} usable)" if usable != cores else "")
    kind = ", ".join(filter(None, [cpu_family_model(), bf16]))
    return (f"{cpu_model()} ({kind}), {shown}, {device}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")
