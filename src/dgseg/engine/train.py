"""The training loop: one process or torchrun/DDP, AMP, accumulation, clipping, checkpoints, resume.

Read it top to bottom: :func:`train` sets up, then each iteration takes ``accumulate`` batches,
steps the optimizer and the poly schedule, logs, evaluates and checkpoints at their intervals.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

import dgseg
from dgseg.atomic import write_atomic
from dgseg.config import Config, config_to_dict, dump_config
from dgseg.engine.backbone_check import check_backbone
from dgseg.engine.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_train_state,
    restore_rng_state,
    save_checkpoint,
)
from dgseg.engine.data import build_train_loader, skipped_samples
from dgseg.engine.distributed import barrier, broadcast_flag, init_distributed, is_main
from dgseg.engine.evaluate import evaluate, write_results
from dgseg.engine.loggers import RunLogger
from dgseg.engine.optim import build_optimizer, build_scheduler, grad_norm
from dgseg.engine.precision import autocast, resolve_amp
from dgseg.engine.run_facts import palette_of, write_run_facts
from dgseg.engine.run_folder import claim_run_folder
from dgseg.models.weights_io import mismatch_report


class TrainingError(RuntimeError):
    """Training stopped on a fault (non-finite loss or gradient); the message says where."""


MAX_CONSECUTIVE_SKIPS = 20
"""With ``train.on_nan=skip``: this many non-finite steps in a row stop the run (nothing would change)."""


def checkpoint_meta(cfg: Config, step: int) -> dict:
    """What a checkpoint must say about itself so it is never used with the wrong backbone."""
    from dgseg.data.classes import config_class_set
    from dgseg.engine.backbone_check import backbone_record

    return {
        "config": config_to_dict(cfg),
        "step": step,
        "dgseg_version": dgseg.__version__,
        "backbone": backbone_record(cfg),  # name, weights entry, file name, content digest, sha256, tensors
        "num_classes": config_class_set(cfg).num_classes,  # = model.num_classes (checked), also for a Config built in code
        "classes": config_class_set(cfg).to_dict(),
        "adapter": cfg.model.adapter.name,
    }


def load_trainable(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load checkpoint weights into a model; every key must fit, and every trainable key must be there."""
    problems = mismatch_report(model.state_dict(), weights, model.trainable_state_dict())
    if problems:
        raise ValueError(
            f"{source} does not fit this model: {problems} (was it trained with another backbone, adapter, head "
            "or num_classes?)"
        )
    model.load_state_dict(weights, strict=False)


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits cleanly at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _gather_skips(skipped: dict[str, str]) -> list[tuple[str, str]]:
    """The bad samples every rank skipped (each rank reads its own share of the data)."""
    if not dist.is_initialized():
        return list(skipped.items())
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(skipped.items()))
    merged: dict[str, str] = {}
    for part in parts:
        merged.update((p, r) for p, r in part if p not in merged)
    return list(merged.items())


def train(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
          model: nn.Module | None = None, force: bool = False) -> dict:
    """Train ``cfg`` into ``out_dir``; returns {"step", "losses", "eval" (last results or None), "out_dir",
    "skipped_samples" ([(path, reason)], data.on_error=skip), "skipped_steps" (train.on_nan=skip)}.

    A folder that already holds a run needs ``resume`` (continue it) or ``force`` (move it aside first,
    see :mod:`dgseg.engine.run_folder`)."""
    out_dir = Path(out_dir)
    rank, world, device = init_distributed()
    if not resume:
        if not force:
            claim_run_folder(out_dir)  # raises when the folder holds a run (every rank sees the same files)
        elif is_main() and (moved := claim_run_folder(out_dir, force=True)):
            print(f"--force: the previous run in {out_dir} was moved to {moved}")
        barrier()
    torch.manual_seed(cfg.train.seed)
    if model is None:
        model = dgseg.build_model(cfg)
    model.to(device)
    base = model
    trains_backbone = base.adapter.trains_backbone
    if cfg.train.grad_checkpointing:
        base.set_grad_checkpointing(True)
    lr_mult = getattr(base.adapter, "lr_mult", 1.0) if trains_backbone else 1.0
    optimizer = build_optimizer(base, cfg.train, backbone_lr_mult=lr_mult)
    scheduler = build_scheduler(optimizer, cfg.train)
    amp = resolve_amp(cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    step = 0
    skipped_steps = 0  # non-finite steps skipped (train.on_nan=skip): their batches were consumed too
    skipped: dict[str, str] = {}  # bad samples skipped while reading (data.on_error=skip): path -> reason
    if resume:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {out_dir / 'checkpoints'}; start without --resume")
        weights, meta = load_checkpoint(ckpt)
        check_backbone(ckpt, meta, cfg)
        load_trainable(base, weights, str(ckpt))
        state = load_train_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        step = int(state["step"])
        skipped_steps = int(state.get("skipped_steps", 0))
        skipped = {str(p): str(r) for p, r in state.get("skipped_samples", [])}
    meta_base = checkpoint_meta(cfg, step)

    ddp = world > 1
    if ddp:
        model = nn.parallel.DistributedDataParallel(
            base, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )
    loader, dataset = build_train_loader(cfg, rank, world, step + skipped_steps)
    left_out = skipped_samples(dataset)  # files left out while listing (before any sample is read)
    trainable = [p for p in base.parameters() if p.requires_grad]
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "config.yaml", dump_config(cfg))
    log_path = out_dir / "log.jsonl"
    consecutive_skips = 0
    last_eval = None
    history: list[float] = []

    def save(at: int) -> Path | None:
        if not is_main():
            return None
        train_state = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": capture_rng_state(), "step": at,
            "skipped_steps": skipped_steps, "skipped_samples": [[p, r] for p, r in skipped.items()],
        }
        meta = dict(meta_base, step=at)
        return save_checkpoint(out_dir, at, base.trainable_state_dict(), meta, train_state,
                               keep_last=cfg.train.keep_last)

    logger = RunLogger(out_dir, cfg.train.log_backends, cfg.train.batch_size * cfg.train.accumulate * world,
                       enabled=is_main())
    log = logger.log
    if is_main():
        write_run_facts(out_dir, cfg, base, amp, started=True)

    if resume:
        log({"iter": step, "resumed_from": ckpt.name})  # the iterations after it may repeat earlier lines
    for path, reason in left_out:
        log({"iter": step, "skipped_sample": path, "reason": reason, "while": "listing files"})

    base.train()
    batches = iter(loader)
    bar = tqdm(total=cfg.train.max_iters, initial=step, desc="train", disable=not (progress and is_main()),
               dynamic_ncols=True)
    t_start = time.perf_counter()
    window_t, window_n = time.perf_counter(), 0

    def stopped(at: int) -> dict:
        path = save(at)
        bar.close()
        if is_main():
            print(f"stopped by signal at iteration {at}; checkpoint {path}. Continue with --resume.")
        return {"step": at, "losses": history, "eval": last_eval, "out_dir": str(out_dir), "stopped": True,
                "skipped_samples": left_out + list(skipped.items()), "skipped_steps": skipped_steps}

    with _StopRequest() as stop:
        while step < cfg.train.max_iters:
            optimizer.zero_grad(set_to_none=True)
            values: dict[str, float] = {}
            paths: list[str] = []
            bad = False
            for micro in range(cfg.train.accumulate):
                try:
                    batch = next(batches)
                except Exception:
                    if stop.requested and world == 1:  # the signal reached the loader workers too (a group kill)
                        return stopped(step)
                    raise
                for path, reason in batch["skipped"]:
                    if path not in skipped:
                        skipped[path] = reason
                        log({"iter": step + 1, "skipped_sample": path, "reason": reason})
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                paths += batch["path"]
                sync_ctx = model.no_sync() if ddp and micro < cfg.train.accumulate - 1 else contextlib.nullcontext()
                with sync_ctx:
                    with autocast(device, amp):
                        losses = model(images, labels)
                    total = sum(v for k, v in losses.items() if "loss" in k) / cfg.train.accumulate
                    if not torch.isfinite(total):
                        bad = True
                    scaler.scale(total).backward()
                for k, v in losses.items():
                    values[k] = values.get(k, 0.0) + float(v.detach()) / cfg.train.accumulate
            if scaler.is_enabled():
                scaler.unscale_(optimizer)
            if cfg.train.grad_clip is not None:
                gnorm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip))
            else:
                gnorm = grad_norm(trainable)
            # fp16: an overflowing gradient with a finite loss is the loss scale's business (the scaler skips
            # that update and lowers its scale), not a fault
            bad = broadcast_flag(bad or (not math.isfinite(gnorm) and not scaler.is_enabled()))
            if bad:
                loss_values = {k: round(v, 6) for k, v in values.items()}
                if cfg.train.on_nan == "skip" and consecutive_skips + 1 < MAX_CONSECUTIVE_SKIPS:
                    skipped_steps += 1
                    consecutive_skips += 1
                    optimizer.zero_grad(set_to_none=True)
                    log({"iter": step + 1, "skipped": "non-finite", "losses": loss_values, "grad_norm": gnorm,
                         "files": paths})
                    if broadcast_flag(stop.requested):
                        return stopped(step)
                    continue
                saved = save(step)
                skipping = cfg.train.on_nan == "skip"
                again = (f" ({MAX_CONSECUTIVE_SKIPS} non-finite iterations in a row: skipping more would not help)"
                         if skipping else "")
                raise TrainingError(
                    f"non-finite loss or gradient at iteration {step + 1}{again}: losses {loss_values}, "
                    f"grad norm {gnorm}; batch files {paths}. The last good state is saved at {saved}. "
                    f"Lower the learning rate (--set train.lr={cfg.train.lr / 10:g}) or clip gradients "
                    f"(--set train.grad_clip=1.0)"
                    + ("." if skipping else ", or skip such steps (--set train.on_nan=skip).")
                )
            consecutive_skips = 0
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            window_n += 1
            total_loss = sum(v for k, v in values.items() if "loss" in k)
            history.append(total_loss)
            lr = optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss:.3f}", lr=f"{lr:.2e}")
            if step % cfg.train.log_interval == 0 or step == cfg.train.max_iters:
                now = time.perf_counter()
                log({"iter": step, "loss": total_loss, "lr": lr, "grad_norm": gnorm,
                     "time_per_iter": (now - window_t) / max(window_n, 1), **values})
                window_t, window_n = now, 0
            if step % cfg.train.checkpoint_interval == 0 and step < cfg.train.max_iters:
                save(step)
            if cfg.data.val and step % cfg.train.eval_interval == 0 and step < cfg.train.max_iters:
                kept: dict = {}
                last_eval = evaluate(base, cfg, device, rank, world, progress, examples=kept)
                log({"iter": step, "eval": {k: {"mIoU": v["mIoU"]} for k, v in last_eval.items()}})
                logger.images(step, kept, palette_of(cfg))
                base.train()
            if broadcast_flag(stop.requested):
                return stopped(step)
    bar.close()
    elapsed = time.perf_counter() - t_start
    final = save(step)  # first: nothing after this can lose the trained weights
    if cfg.data.val:
        try:
            kept = {}
            last_eval = evaluate(base, cfg, device, rank, world, progress, examples=kept)
            log({"iter": step, "eval": {k: {"mIoU": v["mIoU"]} for k, v in last_eval.items()}})
            logger.images(step, kept, palette_of(cfg))
            if is_main():
                write_results(last_eval, cfg, out_dir, examples=kept)
        except Exception as e:
            raise TrainingError(
                f"training finished and its final checkpoint is saved ({final or out_dir}), but the final "
                f"evaluation failed: {e}. Evaluate it later with `dgseg eval --checkpoint {out_dir}`."
            ) from e
    logger.close()
    if is_main():
        write_run_facts(out_dir, cfg, base, amp, train_time_s=elapsed)
    if is_main() and log_path.exists():
        from dgseg.viz import plot_curves

        try:
            plot_curves(log_path, out_dir / "curves.png")
        except Exception as e:  # the curves are a picture of the log; the weights are what matters
            print(f"warning: curves.png not drawn ({type(e).__name__}: {e}); the trained weights are saved "
                  f"at {final}", file=sys.stderr)
    bad_samples = left_out + _gather_skips(skipped)
    if is_main() and (bad_samples or skipped_steps):
        print(f"note: {len(bad_samples)} bad samples skipped, {skipped_steps} non-finite steps skipped; "
              f"see {log_path}")
        for path, reason in bad_samples:
            print(f"  skipped {path}: {reason}")
    barrier()
    return {"step": step, "losses": history, "eval": last_eval, "out_dir": str(out_dir), "train_time_s": elapsed,
            "skipped_samples": bad_samples, "skipped_steps": skipped_steps}

