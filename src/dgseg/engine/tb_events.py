"""TensorBoard event files written atomically (``train.log_backends: [jsonl, tensorboard]``).

TensorBoard's own ``SummaryWriter`` appends to one open event file for the whole run, so a crash can leave
a cut record and the file is written through whatever the name points at. dgseg's writer keeps the events
in memory and every flush writes them as one new, complete event file by temp file + rename
(:func:`dgseg.atomic.write_atomic`); a written file is never opened again. TensorBoard reads every event
file of a folder in name order, so the files of one writer are named
``events.out.tfevents.<start time>.<host>.<pid>.<seq>`` with a zero-padded ``seq``, and a resumed run's
writer (a later start time) sorts after them.

A flush happens at :meth:`AtomicEventWriter.flush`, which :class:`dgseg.engine.loggers.RunLogger` calls after
each evaluation's images, at each checkpoint, at the end of the run and, for scalars, when ``flush_secs``
have passed since the last one (:meth:`AtomicEventWriter.flush_due`) (TensorBoard's ``SummaryWriter``
default, 120 s): a run makes about one small file per two minutes plus one per evaluation and checkpoint. The record
framing is TFRecord's (length, masked CRC-32C of the length, data, masked CRC-32C of the data); the
events are TensorBoard's ``Event`` protos, the summaries made by ``torch.utils.tensorboard.summary``.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import numpy as np

from dgseg.atomic import own_folder, write_atomic
from dgseg.engine.run_folder import KEPT

FLUSH_SECS = 120.0
"""Seconds between time-driven flushes (``torch.utils.tensorboard.SummaryWriter``'s ``flush_secs``)."""


def record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC-32C of it, the data, masked CRC-32C of the data."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class AtomicEventWriter:
    """``add_scalar`` / ``add_image`` / ``flush`` / ``close`` like ``SummaryWriter``, each flush one new
    event file written by temp file + rename."""

    def __init__(self, log_dir: str | Path, flush_secs: float = FLUSH_SECS) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from torch.utils.tensorboard import summary

        self._event, self._summary = Event, summary
        self.log_dir = own_folder(log_dir, KEPT["tb"])  # a symbolic link is refused
        self.prefix = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self.flush_secs = flush_secs
        self.files: list[Path] = []
        self._pending: list[bytes] = []
        self._last_flush = time.monotonic()

    def _add(self, step: int, summary) -> None:
        event = self._event(wall_time=time.time(), step=int(step), summary=summary)
        self._pending.append(record(event.SerializeToString()))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._add(step, self._summary.scalar(tag, float(value)))

    def flush_due(self) -> bool:
        """Whether ``flush_secs`` have passed since the last flush."""
        return time.monotonic() - self._last_flush >= self.flush_secs

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """``image``: H x W x 3 uint8."""
        self._add(step, self._summary.image(tag, image, dataformats="HWC"))

    def flush(self) -> Path | None:
        """Writes the pending events as the next event file; returns it (None when nothing was pending). When
        the write fails (a full disk) the events stay pending for the next flush."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return None
        version = self._event(wall_time=time.time(), file_version="brain.Event:2")
        path = self.log_dir / f"{self.prefix}.{len(self.files):06d}"
        write_atomic(path, record(version.SerializeToString()) + b"".join(self._pending))
        self._pending = []
        self.files.append(path)
        return path

    def close(self) -> None:
        self.flush()
