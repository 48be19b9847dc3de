"""Evaluation: several target domains in one run, per-domain per-class IoU, mean over targets, rPD."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from dgseg import strict_json
from dgseg.atomic import write_atomic
from dgseg.config import Config, DatasetSpec, TTAConfig, domain_name
from dgseg.engine.data import build_eval_set
from dgseg.engine.distributed import is_main, model_device
from dgseg.engine.eval_sizes import check_eval_image, check_eval_sizes
from dgseg.engine.precision import autocast, resolve_amp
from dgseg.image_size import model_size_rule
from dgseg.metrics import SegMetric, format_table, mean_domains, mean_miou, per_class_table


@torch.no_grad()
def predict_labels(model: nn.Module, image: torch.Tensor, size: tuple[int, int], mode: str, crop: int,
                   stride: int, batch: int | None, amp: str = "none", tta: TTAConfig | None = None) -> torch.Tensor:
    """Train-ID prediction [B, H, W] at ``size`` (the label's native resolution) for a normalised batch;
    with ``tta.enabled``, the argmax of the probabilities averaged over its views (engine/tta.py)."""
    if tta is not None and tta.enabled:
        from dgseg.engine.tta import tta_probabilities

        return tta_probabilities(model, image, size, tta.scales, tta.flip, mode, crop, stride, batch, amp).argmax(1)
    with autocast(image.device, amp):
        scores = model.predict(image, mode=mode, crop=crop, stride=stride, batch=batch)
    if tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
    return scores.argmax(1)


def evaluate_domain(model: nn.Module, spec: DatasetSpec, cfg: Config, device: torch.device, rank: int = 0,
                    world: int = 1, progress: bool = True, amp: str = "none", examples: list | None = None,
                    dataset: Dataset | None = None, desc: str | None = None, domain: str | None = None) -> dict:
    """``SegMetric.compute()`` of one domain plus its ``confusion`` matrix (rows: ground truth), ``images`` (the
    number scored) and, with ``data.on_error=skip``, ``skipped``: every file left out of the metric as
    ``{"file", "reason"}``, those left out while pairing images with labels marked ``"while": "listing files"``
    (every rank's). With an ``examples`` list, the first ``eval.examples`` predictions are appended to it.
    ``dataset``: evaluate it instead of the entry's own (items as :func:`build_eval_set`'s). ``domain``: the
    entry's table label, shown in the progress bar and warnings (default: its label among ``data.val``)."""
    dataset = build_eval_set(spec, cfg.data.on_error, cfg) if dataset is None else dataset
    domain = domain or domain_name(spec, cfg.data.val if spec in cfg.data.val else [spec])
    metric = SegMetric(num_classes=cfg.model.num_classes)
    mode = spec.mode or cfg.eval.mode
    rule = model_size_rule(model)
    indices = range(rank, len(dataset), world)
    bar = tqdm(indices, desc=desc or f"eval {domain}", disable=not (progress and is_main()), leave=False)
    scored = 0
    skipped: dict[str, str] = {}
    ignored: dict[str, str] = {}  # data.unknown_labels=ignore: labels whose unknown values were read as 255
    for i in bar:
        item = dataset[i]
        ignored.update(item.get("unknown_labels", ()))
        if item.get("skipped"):  # data.on_error=skip: a stand-in for bad samples; it is counted in its own turn
            skipped.update(item["skipped"])
            continue
        check_eval_image(item["image"], item["path"], rule, spec, domain)
        image = item["image"][None].to(device)
        label = item["label"][None].to(device)
        pred = predict_labels(model, image, tuple(label.shape[-2:]), mode, cfg.eval.crop, cfg.eval.stride,
                              cfg.eval.batch_size, amp, tta=cfg.eval.tta)
        metric.update(pred, label)
        scored += 1
        if examples is not None and len(examples) < cfg.eval.examples and rank == 0:
            from dgseg.engine.examples import example

            examples.append(example(item["image"], item["label"], pred[0]))
    metric.all_reduce()
    scored, skipped, ignored = _every_rank(scored, skipped, ignored)
    result = metric.compute()
    result.update(subset_mious(result["IoU"], cfg))
    result["confusion"] = metric.confusion.tolist()
    result["images"] = scored
    listed = dict(getattr(dataset, "left_out", ()))  # files left out while pairing: never read, in no item
    left_out = sorted({**skipped, **listed}.items())
    if left_out:
        result["skipped"] = [{"file": p, "reason": r, **({"while": "listing files"} if p in listed else {})}
                             for p, r in left_out]
        warnings.warn(f"eval {domain}: {len(left_out)} files left out of the metric (data.on_error=skip; "
                      f"{len(listed)} while pairing images with labels): "
                      f"{', '.join(p for p, _ in left_out[:5])}", stacklevel=2)
    if ignored:
        result["unknown_labels"] = sorted(ignored)
        warnings.warn(f"eval {domain}: {len(ignored)} label files with values the dataset does not define, "
                      f"read as 255 (data.unknown_labels=ignore): {', '.join(sorted(ignored)[:5])}", stacklevel=2)
    return result


def _every_rank(scored: int, skipped: dict[str, str], ignored: dict[str, str]
                ) -> tuple[int, dict[str, str], dict[str, str]]:
    """The images scored and the files skipped or read with ignore by every rank (each reads its own share),
    as the confusion matrix is summed over them. Collective under torch.distributed: called by every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return scored, skipped, ignored
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (scored, skipped, ignored))
    return (sum(n for n, _, _ in parts), {p: r for _, s, _ in parts for p, r in s.items()},
            {p: r for _, _, i in parts for p, r in i.items()})


def eval_setup(model: nn.Module, cfg: Config, device: torch.device | None, specs: list[DatasetSpec] | None
               ) -> tuple[torch.device, list[DatasetSpec], str, bool]:
    """What every evaluation starts with: the device (None: where the model's weights are), the domains
    (``data.val`` unless ``specs``), the inference precision, and the model put in eval mode (returns whether
    it was training)."""
    if device is None:
        device = model_device(model)
    specs = cfg.data.val if specs is None else specs
    if not specs:
        raise ValueError("nothing to evaluate: data.val is empty; add at least one {name, root, split}")
    was_training = model.training
    model.eval()
    return device, specs, resolve_amp(cfg.train.amp, device, training=False), was_training


def evaluate(model: nn.Module, cfg: Config, device: torch.device | None = None, rank: int = 0, world: int = 1,
             progress: bool = True, specs: list[DatasetSpec] | None = None,
             examples: dict[str, list] | None = None) -> dict[str, dict]:
    """mIoU etc. for every ``data.val`` entry, keyed by domain name. With an ``examples`` dict, the first
    ``eval.examples`` predictions of each domain are collected into it (domain -> list)."""
    device, specs, amp, was_training = eval_setup(model, cfg, device, specs)
    sets = {domain_name(s, specs): (s, build_eval_set(s, cfg.data.on_error, cfg)) for s in specs}
    check_eval_sizes(model, cfg, device, sets, before="evaluating")  # not after the domains before it are done
    results = {}
    for name, (s, dataset) in sets.items():
        kept = examples.setdefault(name, []) if examples is not None else None
        results[name] = evaluate_domain(model, s, cfg, device, rank, world, progress, amp, kept, dataset=dataset,
                                        domain=name)
    model.train(was_training)
    return results


def subset_mious(iou: list[float], cfg: Config) -> dict[str, float]:
    """``{"mIoU_<subset>": mean IoU over the subset's classes}`` for every ``eval.miou_subsets`` entry."""
    from dgseg.data.classes import config_class_set, load_class_set, subset_indices, subset_miou, subset_name

    classes = config_class_set(cfg)
    return {f"mIoU_{subset_name(s)}": subset_miou(iou, subset_indices(load_class_set(s, f"eval.miou_subsets[{i}]"),
                                                                       classes, s))
            for i, s in enumerate(cfg.eval.miou_subsets)}


def results_record(results: dict[str, dict], cfg: Config, evaluated: dict | None = None) -> dict:
    """What ``eval.json`` holds (examples aside): the source, the experiment's class names and palette, the
    mean over the target domains, every domain's results and, when given, ``evaluated``: the checkpoint and
    settings the results come from (:func:`dgseg.engine.eval_record.evaluation_record`)."""
    from dgseg.data.classes import config_class_set

    class_set = config_class_set(cfg)
    source = cfg.data.source
    mean = {"over": mean_domains(results, source, cfg.data.mean_over),
            "mIoU": mean_miou(results, source, cfg.data.mean_over)}
    return {**({"evaluated": evaluated} if evaluated is not None else {}), "source": source,
            "classes": list(class_set.names), "palette": class_set.palette.astype(int).tolist(), "mean": mean,
            "domains": results}


def summary_table(results: dict[str, dict], cfg: Config) -> str:
    """The summary table of ``eval.md``: mIoU (and ``eval.miou_subsets``) per domain, the mean over targets."""
    from dgseg.data.classes import config_class_set, subset_name

    extra = [f"mIoU_{subset_name(s)}" for s in cfg.eval.miou_subsets]
    return format_table(results, list(config_class_set(cfg).names), source=cfg.data.source, extra_columns=extra,
                        mean_over=cfg.data.mean_over)


def write_results(results: dict[str, dict], cfg: Config, out_dir: Path, stem: str = "eval",
                  examples: dict[str, list] | None = None, evaluated: dict | None = None) -> str:
    """Write ``stem.json`` and ``stem.md`` (summary + per-class tables, the experiment's class names; with
    ``evaluated``, the checkpoint and settings they come from, in the record and a line under the title);
    returns the summary table. With ``examples`` (from :func:`evaluate`), their images go to
    ``out_dir/examples/`` and ``stem.json`` names them; the images of the previous evaluation are removed
    only after ``stem.json`` is replaced (a crash in between leaves the old record with its own images)."""
    record = results_record(results, cfg, evaluated)
    table = summary_table(results, cfg)
    classes = per_class_table(results, record["classes"], source=cfg.data.source)
    if examples:
        from dgseg.engine.examples import save_examples

        record["examples"] = save_examples(out_dir, examples)
    write_atomic(out_dir / f"{stem}.json", strict_json.dumps(record, indent=2))
    if examples is not None:  # stem.json names the new images now: the previous evaluation's can go
        from dgseg.engine.examples import prune_examples

        prune_examples(out_dir, record.get("examples", {}))
    head = f"# Evaluation: {cfg.name}\n\n"
    if evaluated is not None:
        from dgseg.engine.eval_record import header_line

        head += header_line(evaluated) + "\n\n"
    write_atomic(out_dir / f"{stem}.md", f"{head}{table}\n\n## Per class IoU\n\n{classes}\n" + left_out_notes(results))
    return table


def left_out_notes(results: dict[str, dict], shown: int = 10) -> str:
    """The section of ``eval.md`` that counts, per domain, the files left out of the metric (``skipped``) and
    names the first ``shown`` with their reasons; empty when no file was left out."""
    lines = []
    for domain, result in results.items():
        left = result.get("skipped") or []
        if not left:
            continue
        listing = sum(1 for s in left if s.get("while") == "listing files")
        lines.append(f"- {domain}: {len(left)} files left out, {result.get('images', 0)} scored ({listing} left "
                     f"out while pairing images with labels, {len(left) - listing} while reading)")
        lines += [f"  - {s['file']}: {s['reason']}" for s in left[:shown]]
        if len(left) > shown:
            lines.append(f"  - and {len(left) - shown} more (eval.json lists every file under `skipped`)")
    if not lines:
        return ""
    return "\n## Files left out of the metric (data.on_error=skip)\n\n" + "\n".join(lines) + "\n"
