"""The size checks of an evaluation: an image the model cannot take, or one whose label is of another size, stops
the command before the first domain is evaluated, not after the domains ahead of it were computed.

:func:`check_eval_sizes` reads the first image of every ``data.val`` entry whole (its label's values too), then
the header of every other image and label file (no pixel is decoded: about 1 ms a file on a busy machine, where
decoding a 2048x1024 PNG takes one to two seconds), works out the size the model gets (the entry's ``prescale``
and ``resize``) and checks each size once: against the model's patch grid, the sliding window (``eval.crop``)
and the test-time-augmentation views (``eval.tta.scales``). A file that fails is then read as the evaluation
reads it and checked by the same code (:func:`check_eval_image`), so the message is the one the evaluation
gives. A generated dataset (``synthetic-*``) has no files: its first scene stands for the rest (all of one size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from dgseg.config import Config, ConfigError, DatasetSpec, domain_name
from dgseg.data.reading import DataError, header_size
from dgseg.engine.data import build_eval_set, eval_transform
from dgseg.image_size import SizeRule, image_size_problem, model_size_rule


def check_eval_image(image: torch.Tensor, path: str, rule: SizeRule | None, spec: DatasetSpec, domain: str) -> None:
    """Refuses an image ([3, H, W] as the model gets it) the model cannot take, naming the file, its size and the
    smallest the model takes; where the entry's ``prescale`` or ``resize`` changed the size, both sizes (as
    stored and as resized) and that key with its value."""
    h, w = image.shape[-2:]
    problem = None if rule is None else image_size_problem(h, w, rule)
    if problem is None:
        return
    changed = {k: v for k, v in (("prescale", spec.prescale), ("resize", spec.resize)) if v is not None}
    if changed:
        stored = _stored_size(path)
        keys = " and ".join(f"{k}: {v}" for k, v in changed.items())
        size = f"{w}x{h} px (WxH) after data.val {domain}'s {keys}"
        what = (f"image is {size}" if stored in (None, (h, w)) else
                f"image file is {stored[1]}x{stored[0]} px (WxH), {size}")
        problem = f"{image_size_problem(h, w, rule, what)}; give that entry a larger {' / '.join(changed)} or none"
    raise ValueError(f"{path}: {problem}")


def _stored_size(path: str) -> tuple[int, int] | None:
    """(H, W) of an image file as the datasets read it; None when it cannot be read (a generated scene)."""
    from dgseg.data.reading import read_image

    try:
        return read_image(path).shape[:2]
    except DataError:
        return None


def check_eval_sizes(model: nn.Module, cfg: Config, device: torch.device,
                     sets: dict[str, tuple[DatasetSpec, Dataset]] | None = None, before: str = "training") -> None:
    """The size checks of an evaluation on ``device``, made on every image of every ``data.val`` entry (or of
    ``sets``: domain -> (entry, its dataset)) before ``training`` or ``evaluating``: an image, sliding window
    (``eval.crop``) or test-time-augmentation view (``eval.tta.scales``) the model cannot take is refused now,
    naming the entry and the file (ConfigError), and so is a label of another size than its image under
    ``data.on_error: raise`` (DataError, as reading it would); under ``skip`` such a file is left to the
    evaluation, which leaves it out of the metric and records it under ``skipped``."""
    from dgseg.models.segmentor import default_slide_batch

    rule = model_size_rule(model)
    if rule is None:
        return
    if sets is None:
        sets = {domain_name(s, cfg.data.val): (s, build_eval_set(s, cfg.data.on_error, cfg)) for s in cfg.data.val}
    batch = default_slide_batch(device) if cfg.eval.batch_size is None else cfg.eval.batch_size
    for domain, (spec, dataset) in sets.items():
        for i in _to_read(dataset, spec, lambda h, w, spec=spec: _fits(model, cfg, rule, spec, batch, h, w)):
            which = "its first image" if i == 0 else f"its image {i + 1} of {len(dataset)}"
            try:
                item = dataset[i]
            except DataError as e:  # on_error=raise: a label of another size than its image
                raise DataError(f"data.val {domain} ({which}, checked before {before}): {e}") from e
            if "image" not in item or _stands_in(dataset, i, item):  # on_error=skip: a bad file, recorded
                continue
            try:
                check_eval_image(item["image"], item["path"], rule, spec, domain)
                _check_views(model, cfg, rule, spec, batch, *item["image"].shape[-2:])
            except ValueError as e:
                raise ConfigError(f"data.val {domain} ({which}, {item['path']}, checked before {before}): "
                                  f"{e}") from e


def _check_views(model: nn.Module, cfg: Config, rule: SizeRule, spec: DatasetSpec, batch: int, h: int, w: int
                 ) -> None:
    """Refuses (ValueError) an ``eval.tta.scales`` view, or a sliding window of one, that the model cannot take
    on an image of ``h`` x ``w`` px as the model gets it."""
    from dgseg.engine.tta import tta_view
    from dgseg.models.segmentor import check_slide

    views = [tta_view(rule, h, w, s) for s in cfg.eval.tta.scales] if cfg.eval.tta.enabled else [(h, w)]
    if (spec.mode or cfg.eval.mode) == "slide":
        for vh, vw in views:
            check_slide(model, vh, vw, 1, cfg.eval.crop, cfg.eval.stride, batch)


def _fits(model: nn.Module, cfg: Config, rule: SizeRule, spec: DatasetSpec, batch: int, h: int, w: int) -> bool:
    """Whether the model takes an image of ``h`` x ``w`` px as it gets it, its views and windows included."""
    try:
        _check_views(model, cfg, rule, spec, batch, h, w)
    except ValueError:
        return False
    return image_size_problem(h, w, rule) is None


def _to_read(dataset: Dataset, spec: DatasetSpec, fits: Callable[[int, int], bool]) -> Iterator[int]:
    """The indices of ``dataset`` to read and check: its first (read whole, as before any evaluation: a label it
    cannot read is refused up front too) and, of a dataset of files, the others whose headers show a problem (an
    image size the model gets that ``fits`` refuses, each size worked out once; a label of another size than its
    image, under ``on_error: raise``). A generated dataset has no files: its first scene stands for the rest."""
    yield from range(min(len(dataset), 1))
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return
    transform = eval_transform(spec)
    raising = getattr(dataset, "on_error", "raise") == "raise"
    checked: dict[tuple[int, int], bool] = {}
    for i, sample in enumerate(samples[1:], start=1):
        stored = header_size(sample.image)
        if stored is None:  # unreadable: reading it says so in its turn, as data.on_error says
            continue
        label = header_size(sample.label, oriented=False)
        if label is not None and label != stored:
            if raising:
                yield i
            continue  # on_error=skip: the evaluation leaves it out of the metric, recorded under `skipped`
        size = transform.image_size(*stored)
        if size not in checked:
            checked[size] = min(size) >= 1 and fits(*size)  # a prescale to no pixels: reading it says so
        if not checked[size]:
            yield i


def _stands_in(dataset: Dataset, index: int, item: dict) -> bool:
    """Whether ``item`` (``dataset[index]``) is another sample standing in for a bad one (on_error=skip)."""
    samples = getattr(dataset, "samples", None)
    return samples is not None and item["path"] != str(samples[index].image)
