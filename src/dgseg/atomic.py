"""Every file dgseg writes goes through here: a temp file in the target folder, then a rename.

The rename (``os.replace``) puts the new file at the name: an existing file there is replaced whole
(readers see the old or the new content, never a part), and a symlink there is replaced itself, never
followed, so a link planted at an output name cannot make dgseg write somewhere else. Where dgseg keeps what is
already there (``log.jsonl`` it appends to, ``run.json`` it merges, the folders of a run it writes into:
``checkpoints/``, ``examples/``, ``tb/``), a link is refused instead (:class:`LinkError`): replacing it would
lose the history it points at, and following it would write elsewhere. The temp file gets
the mode an ordinary ``open(name, "w")`` would (``0o666`` less the process umask, by
:func:`dgseg.fileio.output_temp`), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from dgseg.fileio import output_mode, output_temp

__all__ = ["write_temp", "write_atomic", "atomic_path", "publish", "append_line", "file_mode", "check_new_output",
           "check_out_folder", "OutputExistsError", "LinkError", "refuse_link", "own_folder"]


class OutputExistsError(FileExistsError):
    """An output file named on the command line (or its default) exists and ``--force`` was not given."""


def check_new_output(path: str | Path, force: bool = False, option: str = "--out") -> Path:
    """Before a command writes the single file ``path`` (``export --out``, ``text-embed --out``,
    ``predict --zip``): refuses a file that is already there (a symlink too, dangling or not) unless
    ``force``, naming it and ``--force``; refuses a folder always (``option`` takes a file name). A rename
    over an existing name would replace whatever the user kept there. Returns ``path``."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{path}: is a folder; {option} takes a file name")
    if not force and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path}: already exists; pass --force to replace it, or choose another {option}")
    at = _file_on_the_way(path.parents)  # a file among the folders above: nothing can be written there
    if at is not None:
        raise NotADirectoryError(f"{path}: is inside {at}, which is a file, not a folder; choose another {option}")
    return path


def check_out_folder(path: str | Path, option: str = "--out") -> Path:
    """Before a command writes into the folder ``path`` (a run folder, ``predict --out``, ``eval --out``):
    refuses a file at ``path`` or at a folder above it, which would stop the command only when it first
    writes (after the work), with an OS error that names no option. Returns ``path``."""
    path = Path(path)
    at = _file_on_the_way((path, *path.parents))
    if at is not None:
        what = "is a file" if at == path else f"is inside {at}, which is a file"
        raise NotADirectoryError(f"{path}: {what}; {option} takes a folder (a new one or an existing folder)")
    return path


def _file_on_the_way(folders) -> Path | None:
    """The first of ``folders`` (innermost first) that is a file or a symlink to no folder, before the first
    existing folder; ``None`` when the way is clear."""
    for at in folders:
        if at.is_dir():
            return None
        if at.exists() or at.is_symlink():
            return at
    return None


def _appeared(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{path}: appeared while dgseg was writing it and is kept; pass --force to replace "
                             "it, or choose another output name")


def publish(tmp: str | Path, path: str | Path, replace: bool = True) -> Path:
    """Puts the finished temp file ``tmp`` at ``path`` in one step. ``replace``: ``os.replace`` (an existing
    file or symlink there is replaced whole). Otherwise a hard link, which the OS refuses when ``path`` exists:
    a file that appeared since :func:`check_new_output` looked is kept and :class:`OutputExistsError` names it
    (on a file system without hard links the check and the rename are two steps). ``tmp`` is gone after."""
    tmp, path = Path(tmp), Path(path)
    if replace:
        os.replace(tmp, path)
        return path
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise _appeared(path) from None
    except OSError:  # no hard links here (some network and FUSE file systems): check, then rename
        if path.exists() or path.is_symlink():
            raise _appeared(path) from None
        os.replace(tmp, path)
        return path
    os.unlink(tmp)
    return path


class LinkError(ValueError):
    """dgseg was to append to, merge or write into a symbolic link: refused, never followed or replaced."""


def refuse_link(path: str | Path, holds: str) -> Path:
    """``path``, unless it is a symbolic link: then :class:`LinkError` naming it and what dgseg keeps there
    (``holds``), so nothing is written elsewhere and nothing the link leads to is lost."""
    path = Path(path)
    if path.is_symlink():
        raise LinkError(f"{path}: is a symbolic link; dgseg does not write through links (it keeps {holds} "
                        f"there: replace the link by a copy of what it points to, or use another output folder)")
    return path


def own_folder(path: str | Path, holds: str) -> Path:
    """Creates (if needed) a folder dgseg writes its own files into (a run's ``checkpoints/``, ``examples/``,
    ``tb/``): one that is a symbolic link is refused (:func:`refuse_link`). Returns it."""
    path = refuse_link(path, holds)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_mode() -> int:
    """``0o666`` less the process umask: the mode of a file made by ``open(name, "w")``."""
    return output_mode()


def _temp_name(final: Path) -> tuple[int, str]:
    fd, tmp = output_temp(final.parent, prefix=f".{final.name}.", suffix=".tmp")  # mode: the umask's
    return fd, str(tmp)


def write_temp(final: str | Path, write: Callable[[IO[bytes]], object], sync: bool = True) -> Path:
    """Writes a temp file beside ``final`` with ``write(f)`` (flushed, fsynced when ``sync``) and the
    umask's mode; returns its path for the caller to ``os.replace`` over ``final``. Removed on error."""
    final = Path(final)
    fd, tmp = _temp_name(final)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def write_atomic(path: str | Path, data: bytes | str | Callable[[IO[bytes]], object], sync: bool = True,
                 replace: bool = True) -> Path:
    """Writes ``data`` (bytes, text as UTF-8, or a ``write(f)`` callable) to ``path`` by temp file + rename.

    Creates the folder. A symlink at ``path`` is replaced by the file, never written through. With
    ``replace=False`` an existing ``path`` is kept and refused (:func:`publish`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    write = data if callable(data) else (lambda f: f.write(data))
    tmp = write_temp(path, write, sync)
    try:
        publish(tmp, path, replace)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """For writers that need a file name: yields a temp path beside ``path``; puts it at ``path``
    (:func:`publish`, with ``replace``) when the block ends without error, removes it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_name(path)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path, replace)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def append_line(path: str | Path, line: str) -> Path:
    """Appends ``line`` (a newline is added) to a text file by rewriting it atomically: a crash or a full
    disk leaves the old file whole, never a cut line. A symlink at ``path`` is refused (:class:`LinkError`):
    following it would write elsewhere, replacing it would restart the log without the lines it points to.

    A file whose last line is cut (from an earlier crash elsewhere) gets the new line on a line of its own.
    """
    path = refuse_link(path, "the log dgseg appends to")
    old = b""
    if path.is_file():
        old = path.read_bytes()
        if old and not old.endswith(b"\n"):
            old += b"\n"
    return write_atomic(path, old + line.rstrip("\n").encode() + b"\n")
