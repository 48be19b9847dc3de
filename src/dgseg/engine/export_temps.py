"""The temp folders of ONNX exports (:func:`dgseg.engine.onnx_files.write_onnx`): each export holds a lock in
its own while it runs, and the next export to the same name removes those whose export is gone.

An export that is killed (out of memory, a second Ctrl-C, a scheduler) cannot remove its temp folder, which
may hold gigabytes, beside the user's output. A folder is removed only when that is safe: its lock file is
there, names this kernel (by its boot id; the host name where there is none) and nobody holds its ``flock``.
The kernel drops a process's locks when it dies, however it dies, so a running export's folder is never
removed; a lock is only judged by the kernel it was taken on, since on a network file system another
machine's locks may not be seen. Every other folder of that name (an older dgseg's without a lock file,
another machine's, one where locks are not supported) is kept and named."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

__all__ = ["LOCK", "clear_leftovers", "hold"]

LOCK = "export.lock"
"""The file in an export's temp folder that the export holds locked while it runs; it holds the kernel id."""


def kernel_id() -> str:
    """The running kernel: its boot id (one per boot of one machine; containers on it share it and its locks),
    or the host name where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def hold(work: Path) -> int | None:
    """Locks :data:`LOCK` in the temp folder ``work`` for as long as the returned descriptor is open (None where
    locks are not supported: the folder is then never judged). The file is written and locked under another
    name, then renamed, so it never shows unlocked."""
    try:
        import fcntl

        fd = os.open(work / f"{LOCK}.new", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except (ImportError, OSError):
        return None
    try:
        os.write(fd, kernel_id().encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(work / f"{LOCK}.new", work / LOCK)
    except OSError:  # no lock file then: the folder is kept by the next export, not judged
        os.close(fd)
        return None
    return fd


def temp_folders(out_file: str | Path) -> list[Path]:
    """The export temp folders of ``out_file`` beside it: ``.<name>.XXXXXXXX.tmp`` (``tempfile.mkdtemp``'s 8
    random characters), folders, not links."""
    out_file = Path(out_file)
    if not out_file.parent.is_dir():
        return []
    name = re.compile(rf"\.{re.escape(out_file.name)}\.[a-z0-9_]{{8}}\.tmp")
    return [p for p in sorted(out_file.parent.iterdir())
            if name.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]


def clear_leftovers(out_file: str | Path) -> tuple[list[Path], list[Path]]:
    """Removes the temp folders of earlier exports to ``out_file`` whose export is gone (see the module).
    Returns (those removed, those kept)."""
    removed, kept = [], []
    for folder in temp_folders(out_file):
        if _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
        (kept if os.path.lexists(folder) else removed).append(folder)
    return removed, kept


def _abandoned(folder: Path) -> bool:
    """Whether the export that made ``folder`` is gone: its lock file names this kernel and can be locked now."""
    try:
        import fcntl

        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except (ImportError, OSError):  # no lock file (an older dgseg's, or a link there): not judged
        return False
    try:
        if os.read(fd, 256).decode(errors="replace") != kernel_id():  # another machine's (or before a reboot)
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: that export is running
        return False
    finally:
        os.close(fd)
    return True
