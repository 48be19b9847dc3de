"""Files dgseg writes: temp files with the mode any other output gets; safetensors bytes that do not vary.

``tempfile.mkstemp`` creates files with mode 0600 whatever the umask, so a checkpoint or cache file renamed
into place from such a temp file would be private while every other output (PNGs, JSON, logs) follows the
process umask. :func:`output_temp` creates the temp file and then sets the mode ``open()`` would have given:
``0o666 & ~umask``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

__all__ = ["output_mode", "output_temp", "safetensors_bytes", "safetensors_header_variants"]


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (a brief window other threads could see)
    os.umask(old)
    return old


def output_mode() -> int:
    """The permission bits a new output file gets: ``0o666`` less the process umask (e.g. 0o644)."""
    return 0o666 & ~_umask()


def output_temp(folder: str | Path, prefix: str = "", suffix: str = ".tmp") -> tuple[int, Path]:
    """``(fd, path)`` of a new temp file in ``folder`` (opened for writing, exclusive, never through a
    symlink), with mode :func:`output_mode`; the caller writes it and renames it into place."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where mkstemp's file is an ordinary writable one
            os.fchmod(fd, output_mode())
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)



def safetensors_header_variants(raw: bytes, orders: Callable[[list[str]], Iterable[list[str]]]) -> list[bytes]:
    """The 8-byte length + header of a safetensors file rewritten with its ``__metadata__`` entries in each
    key order ``orders(keys)`` yields (``raw``: the file's first bytes, header included; the tensor data that
    follows is unchanged by this). [] when the file has no metadata or its header cannot be reproduced byte
    for byte (compact JSON padded with spaces, as safetensors writes it)."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n].decode("utf-8"))  # dicts keep the file's key order

    def encode(meta_keys: list[str]) -> bytes:
        items = {k: ({m: header[k][m] for m in meta_keys} if k == "__metadata__" else v) for k, v in header.items()}
        text = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return raw[:8] + text + b" " * (n - len(text)) if len(text) <= n else b""

    meta = header.get("__metadata__")
    if not meta or encode(list(meta)) != raw[:8 + n]:
        return []
    return [encode(list(keys)) for keys in orders(list(meta))]


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes with the metadata entries in sorted key order: the same tensors and metadata
    give the same bytes in every process (safetensors writes its metadata map in an order that varies from
    process to process)."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    if not metadata or len(metadata) == 1:
        return raw
    n = int.from_bytes(raw[:8], "little")
    variants = safetensors_header_variants(raw[:8 + n], lambda keys: [sorted(keys)])
    if not variants:
        raise RuntimeError("safetensors wrote a header dgseg cannot reproduce; metadata order is not fixed")
    return variants[0] + raw[8 + n:]
