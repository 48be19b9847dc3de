"""A run folder belongs to one run: a new run does not write into an old one unless told to.

A folder holds a run when it has any of :data:`RUN_FILES` (a folder among them only with files in it).
``dgseg train`` into such a folder without ``--resume`` is refused (it would append to the old log, merge
the old run's facts into its ``run.json``, overwrite the config, move ``latest`` and leave the old
checkpoints behind), and so is ``dgseg import-rein`` (it would replace the run's checkpoint of the same
iteration and move ``latest``); ``--force`` first moves the old run's files into ``previous-<UTC time>/``
inside the folder, so nothing is lost.

``--resume`` appends to the run's ``log.jsonl``, merges its ``run.json`` and writes into its
``checkpoints/``, ``examples/`` and ``tb/``: :func:`refuse_links` refuses a run folder where any of these is
a symbolic link before anything is built (:class:`dgseg.atomic.LinkError`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dgseg.atomic import check_out_folder

RUN_FILES = ("checkpoints", "log.jsonl", "config.yaml", "curves.png", "run.json", "eval.json", "eval.md",
             "examples", "tb", "corruptions.json", "corruptions.md", "corruptions.png", "summary.json")
"""What dgseg writes at the top of a run folder (moved aside together by ``--force``): ``dgseg train``
(``checkpoints/``, ``log.jsonl``, ``config.yaml``, ``curves.png``, ``run.json``, ``eval.*``, ``examples/``,
TensorBoard's ``tb/``), ``dgseg eval --checkpoint RUN [--corruptions]`` (``eval.*``, ``corruptions.*``) and
``dgseg demo`` / ``dgseg bench`` (``summary.json``)."""

KEPT = {"log.jsonl": "the log every start of the run appends to", "run.json": "the facts of every start of the run",
        "checkpoints": "the run's checkpoints", "examples": "the run's example predictions",
        "tb": "the run's TensorBoard events"}
"""The entries of a run folder that a resumed run appends to, merges or writes into: never through a link."""


class RunFolderError(FileExistsError):
    """``dgseg train`` or ``import-rein`` was pointed at a folder that already holds a run."""


def holds_run(out_dir: str | Path) -> list[str]:
    """The run files found in ``out_dir`` (empty: the folder is free for a new run)."""
    out = Path(out_dir)
    found = []
    for name in RUN_FILES:
        p = out / name
        if p.is_dir() and any(p.iterdir()):
            found.append(name + "/")
        elif p.is_file() or p.is_symlink():
            found.append(name)
    return found


def refuse_links(out_dir: str | Path) -> None:
    """Refuses (:class:`dgseg.atomic.LinkError`, naming it) a run folder whose ``log.jsonl``, ``run.json``,
    ``checkpoints/``, ``examples/`` or ``tb/`` is a symbolic link; the run folder itself may be one."""
    from dgseg.atomic import refuse_link

    for name, holds in KEPT.items():
        refuse_link(Path(out_dir) / name, holds)


def claim_run_folder(out_dir: str | Path, force: bool = False, command: str = "train") -> Path | None:
    """Makes ``out_dir`` ready for a new run. Returns the folder the old run was moved to (``force``), or
    None when there was none; raises :class:`RunFolderError` when it holds a run and ``force`` is False
    (``command``: ``train``, which can also continue the run, or ``import-rein``)."""
    out = check_out_folder(out_dir)
    found = holds_run(out)
    if not found:
        return None
    if not force:
        start = ("Continue it with --resume, train into a new folder with --out" if command == "train"
                 else "Choose a new folder with --out")
        if command == "train" and "checkpoints/" not in found:
            start = "It has no checkpoint to continue (--resume needs one): train into a new folder with --out"
        raise RunFolderError(
            f"{out}: already holds a run ({', '.join(found)}). {start}, or pass --force to move the old run's "
            "files into a previous-<time>/ folder inside it first"
        )
    return move_aside(out, [out / name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()])


def trained_iterations(log: Path) -> int | None:
    """The last training iteration a run's ``log.jsonl`` records (0 when it records none or is absent); None
    when a line is not a JSON record, or a training record's ``iter`` is not a whole number (how far the run
    got cannot be told)."""
    from dgseg.viz import read_log

    if not log.exists():
        return 0
    records, bad = read_log(log)
    return None if bad else _last_step(records)


def _last_step(records: list[dict]) -> int | None:
    """The last training iteration among a log's records (0: none); None for an ``iter`` not a whole number."""
    try:
        return max((int(r["iter"]) for r in records if "loss" in r and "iter" in r), default=0)
    except (TypeError, ValueError):
        return None


FAILED_START = "failed_before_first_step"
"""The ``log.jsonl`` key :func:`dgseg.engine.train.train` writes when it fails before its first step ends."""
UNTRAINED = {"config.yaml", "run.json", "log.jsonl", "tb/"}
"""What a start writes before its first training step (the first batch is read after them)."""


def untrained_start(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds only a start that failed before its first step: ``run.json`` (dgseg's own
    record of the start), at most ``config.yaml``, ``tb/`` and a ``log.jsonl``, whose records hold no training
    step and the failure (:data:`FAILED_START`, e.g. a data error in the first batch). Such a folder has nothing
    to resume and nothing to lose: ``dgseg train`` moves it aside (into ``previous-<time>/``) instead of
    refusing it. A start without that record may still be running (its first log line comes only after
    ``train.log_interval`` steps), or was killed: refused as any run."""
    from dgseg.viz import read_log

    out = Path(out_dir)
    found = set(holds_run(out))
    if not ("run.json" in found and "log.jsonl" in found and found <= UNTRAINED):
        return False
    records, bad = read_log(out / "log.jsonl")
    return not bad and _last_step(records) == 0 and any(FAILED_START in r for r in records)  # the log read once


def move_aside(out: Path, entries: list[Path]) -> Path:
    """Moves ``entries`` (files and folders directly inside ``out``) into a new ``previous-<UTC time>/`` folder
    inside ``out`` (a second one in the same second gets ``.2``, ...); returns that folder."""
    archive = out / time.strftime("previous-%Y%m%d-%H%M%S", time.gmtime())
    n = 1
    while archive.exists():
        n += 1
        archive = archive.with_name(f"{archive.name.split('.')[0]}.{n}")
    archive.mkdir()
    for entry in entries:
        os.replace(entry, archive / entry.name)
    return archive
