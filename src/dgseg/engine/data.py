"""Datasets and loaders of a config: training stream with per-sample seeded augmentation, eval sets."""

from __future__ import annotations

import random
import signal
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dgseg.config import Config, DatasetSpec
from dgseg.engine.distributed import EpochSampler


def spec_kwargs(spec: DatasetSpec) -> dict[str, Any]:
    """Dataset kwargs of a config entry (synthetic sizes only where given)."""
    kwargs: dict[str, Any] = {}
    if spec.generated:
        if spec.length is not None:
            kwargs["length"] = spec.length
        if spec.size is not None:
            kwargs["size"] = tuple(spec.size)
        kwargs["seed"] = spec.seed
        if spec.split_file is not None:
            raise ValueError(f"data entry {spec.name}: split_file {spec.split_file!r}: the generated benchmark has "
                             f"no files to select; use length (its number of scenes) instead")
    elif spec.split_file is not None:
        kwargs["split_file"] = spec.split_file
    return kwargs


class SeededSamples(Dataset):
    """Wraps a dataset so that sample ``(index, epoch)`` is augmented with RNGs seeded by
    ``(seed, epoch, index)``: the same crop/flip/colour whichever worker, rank or resumed run reads it."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, epoch = key
        # below 2**64 whatever the seed, epoch and index (torch.manual_seed overflows from 2**64 on); the same
        # value as before wherever it fitted, so runs resumed from older checkpoints see the same augmentation
        s = ((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**64
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
            item = self.dataset[index]
        random.setstate(py_state)
        np.random.set_state(np_state)
        return item


def collate(items: list[dict]) -> dict:
    """A batch; ``skipped`` lists the (path, reason) of the bad samples its items stand in for,
    ``unknown_labels`` the (label path, reason) of its labels whose unknown values were read as 255."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
        "path": [it["path"] for it in items],
        "skipped": [tuple(s) for it in items for s in it.get("skipped", ())],
        "unknown_labels": [tuple(s) for it in items for s in it.get("unknown_labels", ())],
    }


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group; the main process handles it
    (it saves a checkpoint and shuts the workers down), so a worker must not die of it first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_train_set(cfg: Config) -> Dataset:
    from torch.utils.data import ConcatDataset

    from dgseg.data import TrainTransform, build_dataset

    d = cfg.data
    transform = TrainTransform(
        crop_size=tuple(d.crop_size), scale=tuple(d.scale), ratio_range=tuple(d.ratio_range),
        keep_ratio=d.keep_ratio,
        cat_max_ratio=d.cat_max_ratio, flip_prob=d.flip_prob, photometric=d.photometric,
        short_edges=d.short_edges, max_long_edge=d.max_long_edge,
    )
    parts = [
        build_dataset(s.name, s.root, s.split, **_class_kwargs(cfg, s, transform, f"data.train[{i}]"),
                      **_error_kwargs(s, d.on_error, d.unknown_labels), **spec_kwargs(s))
        for i, s in enumerate(d.train)
    ]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def _class_kwargs(cfg: Config, spec: DatasetSpec, transform, where: str) -> dict:
    """transform (+ folder label mapping) that make the dataset yield the experiment's class indices."""
    from dgseg.data.class_remap import class_set_kwargs
    from dgseg.data.classes import ClassSetError, config_class_set

    try:
        return class_set_kwargs(spec, config_class_set(cfg), transform, where)
    except ClassSetError as e:
        from dgseg.data import DataError

        raise DataError(str(e)) from None


def _error_kwargs(spec: DatasetSpec, on_error: str, unknown_labels: str = "auto") -> dict:
    if spec.generated:  # no bad files, no unknown label values
        return {}
    from dgseg.data.datasets import unknown_labels_policy

    return {"on_error": on_error, "unknown_labels": unknown_labels_policy(spec.name, unknown_labels)}


def build_train_loader(cfg: Config, rank: int, world: int, start: int) -> tuple[DataLoader, Dataset]:
    """The endless training stream of process ``rank`` of ``world`` after its first ``start`` samples (those
    of the steps taken or skipped before)."""
    dataset = build_train_set(cfg)
    sampler = EpochSampler(len(dataset), seed=cfg.train.seed, rank=rank, world=world, start=start)
    loader = DataLoader(
        SeededSamples(dataset, cfg.train.seed), batch_size=cfg.train.batch_size, sampler=sampler,
        num_workers=cfg.data.num_workers, collate_fn=collate, drop_last=True,
        persistent_workers=cfg.data.num_workers > 0, pin_memory=torch.cuda.is_available(),
        worker_init_fn=ignore_interrupts if cfg.data.num_workers > 0 else None,
        # its own generator: creating the iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    return loader, dataset


def eval_transform(spec: DatasetSpec):
    """The :class:`~dgseg.data.EvalTransform` of an evaluation entry (its ``resize`` and ``prescale``)."""
    from dgseg.data import EvalTransform

    resize = tuple(spec.resize) if isinstance(spec.resize, list) else spec.resize
    return EvalTransform(resize=resize, prescale=spec.prescale)


def build_eval_set(spec: DatasetSpec, on_error: str = "raise", cfg: Config | None = None) -> Dataset:
    """An evaluation dataset; with ``cfg`` its labels are read in the experiment's class set (without:
    the dataset's own, e.g. the 19 Cityscapes classes)."""
    from dgseg.data import build_dataset

    transform = eval_transform(spec)
    kwargs = {"transform": transform} if cfg is None else _class_kwargs(cfg, spec, transform, f"eval {spec.name}")
    unknown = "auto" if cfg is None else cfg.data.unknown_labels
    return build_dataset(spec.name, spec.root, spec.split, **kwargs, **_error_kwargs(spec, on_error, unknown),
                         **spec_kwargs(spec))


def skipped_samples(dataset: Dataset) -> list[tuple[str, str]]:
    """Every (path, reason) a dataset (or a concatenation) skipped in this process: the files left out
    while listing, and with ``num_workers=0`` the samples skipped while reading (workers report theirs
    through the batches' ``skipped``)."""
    parts = getattr(dataset, "datasets", [dataset])
    return [s for p in parts for s in getattr(p, "skipped", [])]
