"""What machine a measurement ran on (for reports and benchmarks)."""

from __future__ import annotations

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


def machine_line() -> str:
    """One line: CPU (and whether it computes bf16 natively, which decides a CPU run's precision and speed),
    cores, GPU, torch and Python versions."""
    import torch

    from dgseg.engine.precision import X86_MACHINES, cpu_has_fast_bf16

    native = "AVX-512 BF16" if platform.machine().lower() in X86_MACHINES else "native bf16"
    bf16 = native if cpu_has_fast_bf16() else "no native bf16"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()} ({bf16}), {os.cpu_count()} cores, {device}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")
