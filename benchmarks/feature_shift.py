"""How far a trained model moved its backbone's features from the frozen pretrained backbone's, per domain
(the README's analysis of the bench: does an adapter pull the unseen styles towards the source, or apart?)

    python -m benchmarks.feature_shift RUN_DIR [RUN_DIR ...] [--config CONFIG] [--images 8]

For each run folder, on the first ``--images`` scenes of every domain of ``--config``'s ``data.val``
(default: the bench's, ``src/dgseg/configs/bench.yaml``; its ``data.source`` is the source style), prints:

- the relative change of every backbone output map, ``|f_trained - f_frozen| / |f_frozen|`` per pixel,
  averaged: how much the method rewrites the frozen features;
- for each target domain, the distance between its mean feature and the source's on the last map, divided by
  the mean of the two domains' spreads (the norm of the per-channel standard deviation), for the frozen
  features and for the trained ones: below the frozen value, the method brings that style closer to the source
  in feature space.

The frozen features come from the same backbone without the adapter: for methods that leave the backbone's
weights alone (Rein, LoRA, AdaptFormer, VPT: hooks around the frozen blocks) the run's own backbone weights; for
full fine-tuning the pretrained weights of ``model.backbone.weights``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch


def frozen_counterpart(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """The same model with ``model.adapter.name: frozen``: its backbone's weights are ``model``'s when the
    adapter leaves them alone, else (full fine-tuning) the pretrained ones of ``model.backbone.weights``."""
    import dgseg

    if model.adapter.trains_backbone and not cfg.model.backbone.weights:
        raise ValueError("the run fine-tuned its backbone and its config names no pretrained weights "
                         "(model.backbone.weights) to compare against")
    frozen_cfg = copy.deepcopy(cfg)
    frozen_cfg.model.adapter.name = "frozen"
    frozen_cfg.model.adapter.link = False
    frozen = dgseg.build_model(frozen_cfg)
    if not model.adapter.trains_backbone:
        frozen.backbone.load_state_dict(model.backbone.state_dict())
    return frozen.eval()


@torch.no_grad()
def backbone_maps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The backbone's output maps [B, C, h, w] (adapter included) for ImageNet-normalised ``images``."""
    from dgseg.models.backbones import pad_to_multiple

    padded, _ = pad_to_multiple(images, model.backbone.patch_size)
    return [m.float() for m in model.backbone(padded)]


def _pixels(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])


def domain_gap(source: torch.Tensor, target: torch.Tensor) -> float:
    """|mean(source) - mean(target)| / mean of the two spreads (norm of the per-channel std), on maps [B, C, h, w]."""
    s, t = _pixels(source), _pixels(target)
    spread = 0.5 * (s.std(0).norm() + t.std(0).norm())
    return float((s.mean(0) - t.mean(0)).norm() / spread)


def feature_shift(model: torch.nn.Module, frozen: torch.nn.Module, images: dict[str, torch.Tensor],
                  source: str) -> dict:
    """{"relative_change": {domain: [per output map]}, "gap": {target: (frozen, trained)}} (see the module doc)."""
    if source not in images:
        raise ValueError(f"the source domain '{source}' is not among the domains given ({', '.join(images)})")
    trained = {d: backbone_maps(model, x) for d, x in images.items()}
    base = {d: backbone_maps(frozen, x) for d, x in images.items()}
    change = {d: [float(((t - f).norm(dim=1) / f.norm(dim=1).clamp_min(1e-12)).mean())
                  for t, f in zip(trained[d], base[d])] for d in images}
    gap = {d: (domain_gap(base[source][-1], base[d][-1]), domain_gap(trained[source][-1], trained[d][-1]))
           for d in images if d != source}
    return {"relative_change": change, "gap": gap}


def domain_images(cfg, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` scenes of every ``data.val`` domain of ``cfg``, as batches [N, 3, H, W]."""
    from dgseg.config import domain_name
    from dgseg.engine.data import build_eval_set

    out = {}
    for spec in cfg.data.val:
        name = domain_name(spec, cfg.data.val)  # its results row, which data.source names
        data = build_eval_set(spec, cfg=cfg)
        if len(data) == 0:
            raise ValueError(f"data.val domain '{name}' has no samples")
        out[name] = torch.stack([data[i]["image"] for i in range(min(count, len(data)))])
    return out


def main(argv: list[str] | None = None) -> int:
    from dgseg.bench import BENCH_CONFIG

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (dgseg train / bench outputs)")
    parser.add_argument("--config", default=str(BENCH_CONFIG),
                        help="the config whose data.val domains (and data.source) are compared")
    parser.add_argument("--images", type=int, default=8, help="scenes per domain")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images {args.images}: expected 1 or more")
    missing = [run for run in args.runs if not Path(run).exists()]
    if missing:  # said before the domains' scenes are rendered
        parser.error(f"no such run folder or checkpoint: {', '.join(missing)}")
    from dgseg.config import load_config
    from dgseg.engine.inference import load_model

    domains = load_config(args.config)
    if not domains.data.source:
        parser.error(f"--config {args.config}: needs data.source (the style the runs trained on)")
    images = domain_images(domains, args.images)
    for run in args.runs:
        model, cfg = load_model(Path(run))
        result = feature_shift(model.eval(), frozen_counterpart(model, cfg), images, domains.data.source)
        print(f"{run} ({cfg.model.adapter.name}), {args.images} scenes per domain")
        for d, change in result["relative_change"].items():
            print(f"  {d}: relative change of the backbone maps {', '.join(f'{c:.2f}' for c in change)}")
        for d, (before, after) in result["gap"].items():
            print(f"  {d}: distance to the source (last map, / spread) frozen {before:.3f}, trained {after:.3f}")
    return 0


if __name__ == "__main__":
    from dgseg.errors import run_main

    sys.exit(run_main("python -m benchmarks.feature_shift", main))
