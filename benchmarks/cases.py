"""One benchmark measurement per process: ``python -m benchmarks.cases '<json spec>'``.

A spec is a dict with ``kind`` in ``train | infer | flops``. The result is printed as one line
``BENCH_RESULT {json}`` on stdout (and returned by :func:`run_case` when called in-process).

Everything goes through dgseg's own code path: ``dgseg.build_model(cfg)`` with the Rein recipe head
(Mask2Former, default sizes), ``model.loss`` + backward + ``build_optimizer`` (AdamW on the trainable
parameters, the recipe's groups), ``model.predict(mode="whole" | "slide")``, and for gradient
checkpointing ``model.set_grad_checkpointing(True)``, which is what ``train.grad_checkpointing``
does in ``dgseg.engine.train``. Weights are random (``weights: null``): the timings do not depend on them.

Memory and time are measured with :mod:`benchmarks.measure`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
import traceback

from benchmarks.measure import Clock, Memory, SavedActivations

RESULT_PREFIX = "BENCH_RESULT "

MODELS = {
    "s": "vit_small_patch14_dinov2",
    "b": "vit_base_patch14_dinov2",
    "l": "vit_large_patch14_dinov2",
    "tiny": "vit_small_patch14_dinov2",
}
MODEL_LABELS = {"s": "DINOv2 ViT-S", "b": "DINOv2 ViT-B", "l": "DINOv2 ViT-L", "tiny": "tiny ViT (test)"}
TINY_BACKBONE = {"patch_size": 8, "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}
TINY_HEAD = {"hidden_dim": 32, "num_queries": 8, "enc_layers": 1, "enc_ffn": 64, "dec_layers": 2, "dec_ffn": 64,
             "num_heads": 2, "train_points": 256}
TINY_ADAPTER = {"tokens": 8, "query_dim": 32}


# ---------------------------------------------------------------------------------------------- configs
def config_dict(model: str, adapter: str, crop: int, amp: str = "bf16", ckpt: bool = False,
                batch: int = 1) -> dict:
    """The dgseg config of a case: the recipe (Mask2Former head, Rein defaults), random weights."""
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}'; choose one of {', '.join(MODELS)}")
    backbone = {"name": MODELS[model], "weights": None, "img_size": crop}
    adapter_cfg = {"name": adapter}
    head: dict = {"name": "mask2former"}
    if model == "tiny":
        backbone.update(TINY_BACKBONE)
        head.update(TINY_HEAD)
        adapter_cfg.update(TINY_ADAPTER)
    return {
        "name": f"bench-{model}-{adapter}",
        "model": {"backbone": backbone, "adapter": adapter_cfg, "head": head},
        "train": {"amp": amp, "batch_size": batch, "grad_checkpointing": ckpt},
    }


def build(spec: dict, device=None):
    import dgseg
    from dgseg.config import config_from_dict

    cfg = config_from_dict(config_dict(spec["model"], spec["adapter"], spec["crop"], spec.get("amp", "bf16"),
                                       spec.get("ckpt", False), spec.get("batch", 1)))
    model = dgseg.build_model(cfg)
    if device is not None:
        model.to(device)
    if cfg.train.grad_checkpointing:  # exactly what dgseg.engine.train does for train.grad_checkpointing
        model.set_grad_checkpointing(True)
    return cfg, model


# ---------------------------------------------------------------------------------------------- helpers
def _device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _amp(spec: dict, device) -> str:
    """The autocast mode this case runs in (bf16 falls back to float32 on a CPU without native bf16)."""
    from dgseg.engine.precision import resolve_amp

    return resolve_amp(spec.get("amp", "bf16"), device)


def synthetic_batch(batch: int, height: int, width: int, num_classes: int, seed: int = 0):
    """Normalised-range random images and blocky labels (8 x 8 cells of random classes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=g)
    ch, cw = max(math.ceil(height / 8), 1), max(math.ceil(width / 8), 1)
    cells = torch.randint(0, num_classes, (batch, 8, 8), generator=g)
    labels = cells.repeat_interleave(ch, 1).repeat_interleave(cw, 2)[:, :height, :width].contiguous()
    return images, labels


def _env() -> dict:
    return {"loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _run_facts(env0: dict, amp: str, device) -> dict:
    """What every case reports about how it ran: precision, load before and after, threads, device."""
    import torch

    return {"amp": amp, "loadavg_start": env0["loadavg"], "loadavg_end": _env()["loadavg"],
            "threads": torch.get_num_threads(), "device": str(device)}


# ---------------------------------------------------------------------------------------------- train
def train_case(spec: dict) -> dict:
    """Median training-step time after warm-up, and the peak memory of the process."""
    import torch

    from dgseg.engine.optim import build_optimizer
    from dgseg.engine.precision import autocast

    device = _device(spec.get("device", "auto"))
    memory = Memory(device)
    torch.manual_seed(spec.get("seed", 0))
    cfg, model = build(spec, device)
    model.train()
    adapter = model.adapter
    lr_mult = getattr(adapter, "lr_mult", 1.0) if adapter.trains_backbone else 1.0
    optimizer = build_optimizer(model, cfg.train, backbone_lr_mult=lr_mult)
    model_mib = memory.current()
    images, labels = synthetic_batch(spec["batch"], spec["crop"], spec["crop"], cfg.model.num_classes,
                                     spec.get("seed", 0))
    images, labels = images.to(device), labels.to(device)
    clock = Clock(device)
    amp = _amp(spec, device)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    rows = []
    checks: dict = {}
    env0 = _env()
    saved = SavedActivations(model)
    warmup = max(int(spec.get("warmup", 1)), 1)
    for i in range(warmup + spec["steps"]):
        optimizer.zero_grad(set_to_none=True)
        t0, c0 = clock()
        # the first step (a warm-up, never timed) also counts the activations autograd saves
        with autocast(device, amp), saved.hooks() if i == 0 else contextlib.nullcontext():
            losses = model.loss(images, labels)
        total = sum(v for k, v in losses.items() if "loss" in k)
        t1, c1 = clock()
        total.backward()
        t2, c2 = clock()
        if i == 0:
            # no gradient may exist for a frozen weight, and (Rein, LoRA, frozen) nothing in the backbone trains
            checks["frozen_params_with_grad"] = sum(p.grad is not None for p in frozen)
            checks["backbone_params_with_grad"] = sum(p.grad is not None for p in model.backbone.parameters())
            checks["loss"] = float(total.detach())
        optimizer.step()
        t3, c3 = clock()
        rows.append({"step": t3 - t0, "cpu": c3 - c0, "fwd": t1 - t0, "bwd": t2 - t1, "opt": t3 - t2})
    warm, timed = rows[:warmup], rows[warmup:]
    counts = model.parameter_counts()
    return {
        "step_s": [r["step"] for r in timed],
        "cpu_s": [r["cpu"] for r in timed],
        "fwd_s": [r["fwd"] for r in timed],
        "bwd_s": [r["bwd"] for r in timed],
        "opt_s": [r["opt"] for r in timed],
        "warmup_s": [r["step"] for r in warm],
        "peak_mib": memory.peak(),
        "model_mib": model_mib,
        "saved_mib": saved.mib,
        "trainable": counts["trainable"],
        "total_params": counts["total"],
        "checks": checks,
        **_run_facts(env0, amp, device),
    }


# ---------------------------------------------------------------------------------------------- infer
def infer_case(spec: dict) -> dict:
    """Latency of ``model.predict`` on one ``image`` [H, W] for each (mode, batch) phase, in order.

    A small warm-up (one crop-size window) runs first. On CPU ``ru_maxrss`` only grows, so the phases
    are ordered by expected memory (slide before whole) and each phase's peak is read after it.
    """
    import torch

    from dgseg.engine.precision import autocast

    device = _device(spec.get("device", "auto"))
    memory = Memory(device)
    torch.manual_seed(spec.get("seed", 0))
    cfg, model = build(spec, device)
    model.eval()
    h, w = spec["image"]
    crop, stride = spec["crop"], spec["stride"]
    image, _ = synthetic_batch(1, h, w, cfg.model.num_classes, spec.get("seed", 0))
    image = image.to(device)
    clock = Clock(device)
    amp = _amp(spec, device)
    env0 = _env()
    with torch.no_grad(), autocast(device, amp):
        w0, _ = clock()
        model.predict(image[..., : min(crop, h), : min(crop, w)], mode="whole")
        w1, _ = clock()
    phases = []
    reference = None
    for mode, batch in spec["phases"]:
        with autocast(device, amp):
            t0, c0 = clock()
            scores = model.predict(image, mode=mode, crop=crop, stride=stride, batch=batch)
            t1, c1 = clock()
        sample = scores[:, :, ::8, ::8].float().cpu().clone()
        del scores
        entry = {"mode": mode, "batch": batch, "time_s": t1 - t0, "cpu_s": c1 - c0, "peak_mib": memory.peak()}
        if mode == "slide":
            if reference is None:
                reference = sample
            else:  # batched windows must give the same scores as one at a time
                entry["max_abs_diff_vs_first_slide"] = float((sample - reference).abs().max())
        phases.append(entry)
    windows = None
    if any(mode == "slide" for mode, _ in spec["phases"]):
        from dgseg.models.segmentor import sliding_starts

        windows = len(sliding_starts(h, min(crop, h), stride)) * len(sliding_starts(w, min(crop, w), stride))
    return {
        "phases": phases,
        "warmup_s": w1 - w0,
        "windows": windows,
        **_run_facts(env0, amp, device),
    }


# ---------------------------------------------------------------------------------------------- flops
def flops_case(spec: dict) -> dict:
    """FLOPs of one training step (forward + backward) or one forward, counted on the meta device.

    ``torch.utils.flop_counter.FlopCounterMode`` counts matmuls, convolutions and attention (SDPA); it does
    not count elementwise ops, normalisation, ``grid_sample`` (the deformable attention's sampling) or the
    optimizer. The training step uses a surrogate loss (mean of every head output): the Hungarian matcher
    and the point-sampled losses need real values and are a few hundred MFLOPs.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import dgseg
    from dgseg.config import config_from_dict

    cfg = config_from_dict(config_dict(spec["model"], spec["adapter"], spec["crop"], "none", spec.get("ckpt", False)))
    with torch.device("meta"):
        model = dgseg.build_model(cfg)
    if spec.get("ckpt", False):
        model.set_grad_checkpointing(True)
    train = spec.get("train", True)
    model.train(train)
    h, w = spec.get("image") or (spec["crop"], spec["crop"])
    x = torch.empty(spec["batch"], 3, h, w, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            out = model(x)
            heads = [out] + list(out["aux_outputs"])
            loss = sum(o["pred_logits"].float().mean() + o["pred_masks"].float().mean() for o in heads)
            loss.backward()
        else:  # no torch.no_grad(): the counter's module tracker trips on it; on meta the graph costs nothing
            model(x)
    counts = counter.get_flop_counts()

    def total(name: str) -> int:
        return int(sum(counts.get(name, {}).values()))

    return {
        "flops": total("Global"),
        "backbone_flops": total("Segmentor.backbone"),
        "adapter_flops": total("Segmentor.adapter"),
        "head_flops": total("Segmentor.head"),
        "neck_flops": total("Segmentor.neck"),
        "by_op": {str(k): int(v) for k, v in counts.get("Global", {}).items()},
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


KINDS = {"train": train_case, "infer": infer_case, "flops": flops_case}


def run_case(spec: dict) -> dict:
    import torch

    if spec.get("kind") not in KINDS:
        raise ValueError(f"unknown case kind {spec.get('kind')!r}; choose one of {', '.join(KINDS)}")
    if spec.get("threads") and spec["kind"] != "flops":
        torch.set_num_threads(int(spec["threads"]))
    t0 = time.perf_counter()
    result = KINDS[spec["kind"]](spec)
    result["wall_s"] = time.perf_counter() - t0
    return result


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.cases '<json spec>'", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    try:
        result = run_case(spec)
    except Exception as exc:  # reported to the runner, which records the failure in the report
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    from dgseg.errors import run_main

    sys.exit(run_main("python -m benchmarks.cases", main))
