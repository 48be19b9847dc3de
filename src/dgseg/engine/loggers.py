"""Training log backends (``train.log_backends``): ``log.jsonl`` always, TensorBoard when asked.

Every record the training loop logs goes to ``log.jsonl`` unchanged (curves, resume and ``dgseg report``
read it). With ``tensorboard`` the same record becomes scalars in ``RUN/tb/``: every loss, ``lr``,
``grad_norm``, ``images_per_s`` (throughput) and ``val/<domain>/mIoU``; evaluations add a few
prediction images per domain (image | ground truth | prediction). The event files are written atomically,
each flush a new file (:mod:`dgseg.engine.tb_events`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dgseg.atomic import append_line

TENSORBOARD_EXTRA = "pip install 'dgseg[tensorboard]'  (or: pip install tensorboard)"


def require_log_backends(backends: Sequence[str]) -> None:
    """Raises RuntimeError (the install hint) when a backend of ``train.log_backends`` needs a missing package:
    called before a run folder is touched, so the command can be rerun as it was once the package is there."""
    if "tensorboard" not in backends:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package)
    except ImportError as exc:
        raise RuntimeError(f"train.log_backends includes tensorboard, but the tensorboard package is missing: "
                           f"{TENSORBOARD_EXTRA}") from exc


def _tensorboard_writer(log_dir: Path):
    require_log_backends(("tensorboard",))
    from dgseg.engine.tb_events import AtomicEventWriter

    return AtomicEventWriter(log_dir)


def scalars(record: Mapping, batch_size: int = 1) -> dict[str, float]:
    """The TensorBoard scalars of one ``log.jsonl`` record (tag -> value)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "iter" or isinstance(value, bool):
            continue
        if key == "eval" and isinstance(value, Mapping):
            for domain, res in value.items():
                miou = res.get("mIoU") if isinstance(res, Mapping) else res
                if isinstance(miou, (int, float)):
                    out[f"val/{domain}/mIoU"] = float(miou)
        elif key == "time_per_iter" and isinstance(value, (int, float)) and value > 0:
            out["train/time_per_iter"] = float(value)
            out["train/images_per_s"] = batch_size / float(value)
        elif isinstance(value, (int, float)):
            out[f"train/{key}"] = float(value)
    return out


class RunLogger:
    """``log(record)`` appends to ``log.jsonl`` (one line, by atomic rewrite: never a cut line, never through a
    symlink) and mirrors it to the other backends."""

    def __init__(self, out_dir: str | Path, backends: Sequence[str] = ("jsonl",), batch_size: int = 1,
                 enabled: bool = True) -> None:
        self.path = Path(out_dir) / "log.jsonl"
        self.batch_size = batch_size
        self.enabled = enabled
        self.tb = _tensorboard_writer(Path(out_dir) / "tb") if enabled and "tensorboard" in backends else None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            append_line(self.path, json.dumps(record))
        except OSError as e:  # a full disk: the log is not worth the run (a checkpoint failure says more)
            print(f"warning: could not write to {self.path} ({e.strerror or e}); record lost: {json.dumps(record)}",
                  file=sys.stderr)
        if self.tb is not None and "iter" in record:
            for tag, value in scalars(record, self.batch_size).items():
                self.tb.add_scalar(tag, value, int(record["iter"]))
            if self.tb.flush_due():
                self.flush()

    def images(self, step: int, examples: Mapping[str, Sequence[Mapping]], palette: np.ndarray) -> None:
        """Prediction images of an evaluation: per domain, each example as image | label | prediction."""
        if self.tb is None:
            return
        from dgseg.viz import colorize

        for domain, items in examples.items():
            for k, ex in enumerate(items):
                row = np.concatenate([ex["image"], colorize(ex["label"], palette), colorize(ex["pred"], palette)],
                                     axis=1)
                self.tb.add_image(f"predictions/{domain}/{k}", row, step)
        self.flush()

    def flush(self) -> None:
        """Writes the pending TensorBoard events (one new event file); a failed write (a full disk) is a
        warning, not the end of the run: the events stay pending for the next flush."""
        if self.tb is None:
            return
        try:
            self.tb.flush()
        except OSError as e:
            print(f"warning: could not write TensorBoard events to {self.tb.log_dir} ({e.strerror or e}); "
                  f"kept for the next flush", file=sys.stderr)

    def close(self) -> None:
        self.flush()
