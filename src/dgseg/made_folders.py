"""A refused command leaves no folder behind that it made. The folders an output path needs (``--out``, the
``--zip`` file's) are noted before the command runs; when it raises, those of them that are still empty are
removed, innermost first. A folder that was there before is never touched, nor one that holds anything now
(``rmdir`` removes only an empty folder, never a file or a link), so nothing written is lost.

The commands check their inputs before they make folders where they can; this catches the refusals that
come later (an image too small for the model, found when its prediction is made)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

OUTPUT_OPTIONS = ("out", "zip")
"""The parsed arguments that name an output: a folder, or a file whose folders the command makes."""


def missing_folders(path: str | Path) -> list[Path]:
    """``path`` and the folders above it that are not there (nothing at the name, not even a link), innermost
    first: the folders that writing at ``path`` would make."""
    path = Path(path).absolute()
    missing = []
    for at in (path, *path.parents):
        if os.path.lexists(at):
            break
        missing.append(at)
    return missing


@contextlib.contextmanager
def no_folder_left_on_error(paths: Iterable[str | Path | None]) -> Iterator[None]:
    """Runs the block; when it raises, removes the folders of ``paths`` (None and '' skipped) that were not
    there when it began and are empty now (:func:`missing_folders`). Another process that made the same new
    folder meanwhile and left it empty would see it go: two commands writing into one new folder at once."""
    made = [missing_folders(p) for p in paths if p]
    try:
        yield
    except BaseException:
        for folders in made:
            for folder in folders:
                try:
                    folder.rmdir()
                except FileNotFoundError:  # never made (the output file itself, a folder the refusal came before)
                    continue
                except OSError:  # holds something (or is a file now): kept, and so are the folders above it
                    break
        raise


def output_paths(args: Any) -> list[Any]:
    """The output paths among parsed command-line ``args`` (:data:`OUTPUT_OPTIONS`; absent ones None)."""
    return [getattr(args, name, None) for name in OUTPUT_OPTIONS]
