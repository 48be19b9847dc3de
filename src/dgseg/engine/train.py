"""The training loop: one process or torchrun/DDP, AMP, accumulation, clipping, checkpoints, resume.

Read it top to bottom: :func:`train` sets up (:mod:`dgseg.engine.train_setup`: folder, model, optimizer,
scheduler, resume, data, outputs), then each iteration runs ``accumulate`` micro-batches forward and
backward, clips, skips or fails on a non-finite step, steps the optimizer and the poly schedule, logs,
checkpoints and evaluates at their intervals; :func:`_finish` saves, evaluates and reports.
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

from dgseg.config import Config
from dgseg.engine.checkpoint import capture_rng_state, save_checkpoint
from dgseg.engine.distributed import barrier, broadcast_flag, is_main
from dgseg.engine.evaluate import evaluate, write_results
from dgseg.engine.optim import grad_norm, lr_factor
from dgseg.engine.precision import autocast
from dgseg.engine.run_facts import palette_of, write_run_facts
from dgseg.engine.run_folder import FAILED_START
from dgseg.engine.train_setup import (  # checkpoint_meta, load_trainable: public here too
    TrainRun,
    TrainState,
    checkpoint_meta,
    load_trainable,
    setup_training,
)

__all__ = ["train", "TrainingError", "MAX_CONSECUTIVE_SKIPS", "checkpoint_meta", "load_trainable"]


class TrainingError(RuntimeError):
    """Training stopped on a fault (non-finite loss or gradient); the message says where."""


MAX_CONSECUTIVE_SKIPS = 20
"""With ``train.on_nan=skip``: this many non-finite steps in a row stop the run (nothing would change)."""


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits cleanly at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self.first = None
        self._old = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == self.first:  # the same signal again (Ctrl-C twice): stop now
            raise KeyboardInterrupt
        self.requested, self.first = True, self.first or signum  # a Ctrl-C reaching a run already asked to
        # stop by SIGTERM (`dgseg bench` widening it) lets it finish its checkpoint

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _gather_skips(skipped: dict[str, str]) -> list[tuple[str, str]]:
    """The (path, reason) records of every rank (each rank reads its own share of the data): bad samples
    skipped, labels read with data.unknown_labels=ignore."""
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
    "skipped_samples" ([(path, reason)], data.on_error=skip), "skipped_steps" (train.on_nan=skip),
    "unknown_labels" ([(label path, reason)], data.unknown_labels=ignore)}.

    A folder that already holds a run needs ``resume`` (continue it) or ``force`` (move it aside first,
    see :mod:`dgseg.engine.run_folder`); not both."""
    if resume and force:
        raise ValueError(f"{out_dir}: --resume and --force: --resume continues the run in the folder, --force moves "
                         "it into previous-<time>/ to start afresh; give one of them")
    run, st = setup_training(cfg, Path(out_dir), resume, force, model, progress)
    with _StopRequest() as stop:
        while st.step < cfg.train.max_iters:
            got = _first_step(run, st, stop) if st.step == 0 else _forward_backward(run, st, stop)
            if got is None:  # the signal reached the loader workers too (a group kill)
                return _stopped(run, st)
            values, paths, bad = got
            gnorm = _clip_gradients(run)
            # fp16: an overflowing gradient with a finite loss is the loss scale's business (the scaler skips
            # that update and lowers its scale), not a fault
            if broadcast_flag(bad or (not math.isfinite(gnorm) and not run.scaler.is_enabled())):
                _skip_or_fail(run, st, values, paths, gnorm)  # raises TrainingError unless the step is skipped
                if broadcast_flag(stop.requested):
                    return _stopped(run, st)
                continue
            lr, applied = _optimizer_step(run, st)
            _log_step(run, st, values, gnorm, lr, applied)
            if st.step % cfg.train.checkpoint_interval == 0 and st.step < cfg.train.max_iters:
                _save(run, st, st.step)
            if cfg.data.val and st.step % cfg.train.eval_interval == 0 and st.step < cfg.train.max_iters:
                _evaluate(run, st)
                run.base.train()
            if broadcast_flag(stop.requested):
                return _stopped(run, st)
    return _finish(run, st)


# -------------------------------------------------------------------------------------------- the step


def _first_step(run: TrainRun, st: TrainState, stop: _StopRequest):
    """:func:`_forward_backward` of a fresh start's first step; a failure there (e.g. a data error in the first
    batch) is recorded in the log (``run_folder.FAILED_START``), so the next start into the folder may move
    this one aside: it trained nothing."""
    try:
        return _forward_backward(run, st, stop)
    except Exception as e:
        run.log({"iter": 0, FAILED_START: f"{type(e).__name__}: {e}"})
        run.logger.flush()
        raise


def _forward_backward(
    run: TrainRun, st: TrainState, stop: _StopRequest
) -> tuple[dict[str, float], list[str], bool] | None:
    """Clears the gradients and runs ``train.accumulate`` micro-batches forward and backward.

    Returns (losses averaged over the micro-batches, the batch files, whether a loss was non-finite), or None
    when a stop signal interrupted the data loader."""
    accumulate = run.cfg.train.accumulate
    run.optimizer.zero_grad(set_to_none=True)
    values: dict[str, float] = {}
    paths: list[str] = []
    bad = False
    for micro in range(accumulate):
        try:
            batch = next(run.batches)
        except Exception:
            if stop.requested and run.world == 1:
                return None
            raise
        for path, reason in batch["skipped"]:
            if path not in st.skipped:
                st.skipped[path] = reason
                run.log({"iter": st.step + 1, "skipped_sample": path, "reason": reason})
        for path, reason in batch.get("unknown_labels", ()):  # data.unknown_labels=ignore
            if path not in st.ignored_labels:
                st.ignored_labels[path] = reason
                run.log({"iter": st.step + 1, "unknown_labels": path, "reason": reason})
        images = batch["image"].to(run.device, non_blocking=True)
        labels = batch["label"].to(run.device, non_blocking=True)
        paths += batch["path"]
        ddp_accumulating = run.world > 1 and micro < accumulate - 1
        with run.model.no_sync() if ddp_accumulating else contextlib.nullcontext():
            with autocast(run.device, run.amp):
                losses = run.model(images, labels)
            total = sum(v for k, v in losses.items() if "loss" in k) / accumulate
            if not torch.isfinite(total):
                bad = True
            run.scaler.scale(total).backward()
        for k, v in losses.items():
            values[k] = values.get(k, 0.0) + float(v.detach()) / accumulate
    return values, paths, bad


def _clip_gradients(run: TrainRun) -> float:
    """Unscales the gradients (fp16), clips them to ``train.grad_clip`` when set; returns their norm."""
    if run.scaler.is_enabled():
        run.scaler.unscale_(run.optimizer)
    if run.cfg.train.grad_clip is not None:
        return float(torch.nn.utils.clip_grad_norm_(run.trainable, run.cfg.train.grad_clip))
    return grad_norm(run.trainable)


def _skip_or_fail(run: TrainRun, st: TrainState, values: dict[str, float], paths: list[str], gnorm: float) -> None:
    """A non-finite step: skipped and logged (train.on_nan=skip, fewer than MAX_CONSECUTIVE_SKIPS in a row),
    else the last good state is saved and TrainingError raised."""
    cfg = run.cfg
    loss_values = {k: round(v, 6) for k, v in values.items()}
    if cfg.train.on_nan == "skip" and st.consecutive_skips + 1 < MAX_CONSECUTIVE_SKIPS:
        st.skipped_steps += 1
        st.consecutive_skips += 1
        st.rank_samples += cfg.train.batch_size * cfg.train.accumulate  # the batches were read
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler.is_enabled():
            # fp16: the gradients were unscaled (_clip_gradients); the scaler must close the step, as after
            # an overflow (update() lowers the scale), or the next unscale_ refuses
            run.scaler.update()
        run.log({"iter": st.step + 1, "skipped": "non-finite", "losses": loss_values, "grad_norm": gnorm,
                 "files": paths})
        return
    saved = _save(run, st, st.step)
    skipping = cfg.train.on_nan == "skip"
    again = (f" ({MAX_CONSECUTIVE_SKIPS} non-finite iterations in a row: skipping more would not help)"
             if skipping else "")
    raise TrainingError(
        f"non-finite loss or gradient at iteration {st.step + 1}{again}: losses {loss_values}, "
        f"grad norm {gnorm}; batch files {paths}. The last good state is saved at {saved}. "
        f"Lower the learning rate (--set train.lr={cfg.train.lr / 10:g}) or clip gradients "
        f"(--set train.grad_clip=1.0)"
        + ("." if skipping else ", or skip such steps (--set train.on_nan=skip).")
    )


def _optimizer_step(run: TrainRun, st: TrainState) -> tuple[float, bool]:
    """Steps the optimizer (through the grad scaler) and the poly schedule; counts the step. Returns (the lr
    this step's update used, :func:`_applied_lr` read before the schedule moves on, or 0.0 when the grad scaler
    skipped the update; whether the update was applied)."""
    st.consecutive_skips = 0
    st.rank_samples += run.cfg.train.batch_size * run.cfg.train.accumulate
    lr = _applied_lr(run)
    scale = run.scaler.get_scale()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    applied = not _update_skipped(run.scaler, scale)
    run.scheduler.step()
    st.step += 1
    st.window_n += 1
    return (lr if applied else 0.0), applied


def _update_skipped(scaler: torch.amp.GradScaler, scale_before: float) -> bool:
    """Whether ``scaler`` skipped the optimizer step it just closed with ``update()``: fp16 gradients that
    overflowed (inf/NaN) make ``step()`` leave the weights as they were and ``update()`` lower the scale, the one
    case where the scale drops (torch's idiom: ``get_scale()`` before and after ``update()``). Never with the
    scaler disabled (bf16, float32)."""
    return scaler.is_enabled() and scaler.get_scale() < scale_before


def _applied_lr(run: TrainRun) -> float:
    """``train.lr`` on the schedule as the optimizer applies it in the update about to happen: the lr of the
    reference group (:func:`dgseg.engine.optim.lr_reference`, chosen when the optimizer was built) divided by its
    multiplier, so a group's own multiplier (full fine-tuning's backbone at 0.1 x, ``train.custom_keys``) stays
    out, and after a resume it is the checkpoint's rate the optimizer holds, not the config's."""
    index, mult = run.lr_reference
    if mult <= 0:  # no group has a learning rate: the schedule's factor on train.lr
        return run.cfg.train.lr * lr_factor(run.scheduler.last_epoch, run.cfg.train)
    return float(run.optimizer.param_groups[index]["lr"]) / mult


# ----------------------------------------------------------------------- logging, checkpoints, evaluation


def _log_step(run: TrainRun, st: TrainState, values: dict[str, float], gnorm: float, lr: float,
              applied: bool = True) -> None:
    """Progress bar every step; a log line every ``train.log_interval`` steps and at the last. ``lr``: the one
    the step's update used (:func:`_applied_lr`); the record of iteration n (1-based) holds the schedule's
    lr at iteration n - 1 (0-based), so the first record holds the first lr, the last the last (0 on poly).
    An update the fp16 grad scaler skipped (``applied`` false) applied nothing: its record holds lr 0 and
    ``"step_skipped": true``."""
    total_loss = sum(v for k, v in values.items() if "loss" in k)
    st.history.append(total_loss)
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{total_loss:.3f}", lr=f"{lr:.2e}")
    if st.step % run.cfg.train.log_interval == 0 or st.step == run.cfg.train.max_iters:
        _sync_records(run, st)
        now = time.perf_counter()
        run.log({"iter": st.step, "loss": total_loss, "lr": lr, "grad_norm": gnorm,
                 "time_per_iter": (now - st.window_t) / max(st.window_n, 1), **values,
                 **({} if applied else {"step_skipped": True})})
        st.window_t, st.window_n = now, 0


def _sync_records(run: TrainRun, st: TrainState) -> None:
    """Every rank's skipped samples and ignored labels reach every rank's state (each rank reads its own share
    of the data, and only rank 0 logs and saves): the new ones are logged now. Collective: called by all."""
    if run.world == 1:
        return
    for records, key in ((st.skipped, "skipped_sample"), (st.ignored_labels, "unknown_labels")):
        for path, reason in _gather_skips(records):
            if path not in records:
                records[path] = reason
                run.log({"iter": st.step, key: path, "reason": reason})


def _save(run: TrainRun, st: TrainState, at: int) -> Path | None:
    """Saves the checkpoint of step ``at`` with the training state (main process only; every rank calls it,
    its records gathered first)."""
    _sync_records(run, st)
    if not is_main():
        return None
    train_state = {
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {}, "rng": capture_rng_state(), "step": at,
        "skipped_steps": st.skipped_steps, "skipped_samples": [[p, r] for p, r in st.skipped.items()],
        "unknown_labels": [[p, r] for p, r in st.ignored_labels.items()],
        "world": run.world, "rank_samples": st.rank_samples,  # where each process's data stream resumes
    }
    meta = dict(run.meta_base, step=at)
    path = save_checkpoint(run.out_dir, at, run.base.trainable_state_dict(), meta, train_state,
                           keep_last=run.cfg.train.keep_last)
    run.logger.flush()  # the TensorBoard events up to a resumable point are on disk with it
    return path


def _evaluate(run: TrainRun, st: TrainState) -> dict:
    """Evaluates on ``data.val``, logs the mIoUs and example images; returns the examples kept."""
    kept: dict = {}
    st.last_eval = evaluate(run.base, run.cfg, run.device, run.rank, run.world, run.progress, examples=kept)
    run.log({"iter": st.step, "eval": {k: {"mIoU": v["mIoU"]} for k, v in st.last_eval.items()}})
    run.logger.images(st.step, kept, palette_of(run.cfg))
    return kept


def _stopped(run: TrainRun, st: TrainState) -> dict:
    """A stop signal: saves a checkpoint to resume from and returns the result so far."""
    path = _save(run, st, st.step)
    run.bar.close()
    if is_main():
        print(f"stopped by signal at iteration {st.step}; checkpoint {path}. Continue with --resume.")
    return {"step": st.step, "losses": st.history, "eval": st.last_eval, "out_dir": str(run.out_dir),
            "stopped": True, "skipped_samples": run.left_out + list(st.skipped.items()),
            "skipped_steps": st.skipped_steps}


def _finish(run: TrainRun, st: TrainState) -> dict:
    """The final checkpoint (first: nothing after it can lose the trained weights), the final evaluation and
    its tables, the run facts, the curves, and a note on what was skipped."""
    cfg, out_dir = run.cfg, run.out_dir
    run.bar.close()
    elapsed = time.perf_counter() - run.t_start
    final = _save(run, st, st.step)
    if cfg.data.val:
        try:
            kept = _evaluate(run, st)
            if is_main():
                from dgseg.engine.eval_record import evaluation_record

                write_results(st.last_eval, cfg, out_dir, examples=kept,
                              evaluated=evaluation_record(final, cfg, run.device, "dgseg train"))
        except Exception as e:
            raise TrainingError(
                f"training finished and its final checkpoint is saved ({final or out_dir}), but the final "
                f"evaluation failed: {e}. Evaluate it later with `dgseg eval --checkpoint {out_dir}`."
            ) from e
    run.logger.close()
    log_path = out_dir / "log.jsonl"
    if is_main():
        write_run_facts(out_dir, cfg, run.base, run.amp, train_time_s=elapsed)
    if is_main() and log_path.exists():
        from dgseg.viz import plot_curves

        try:
            plot_curves(log_path, out_dir / "curves.png")
        except Exception as e:  # the curves are a picture of the log; the weights are what matters
            print(f"warning: curves.png not drawn ({type(e).__name__}: {e}); the trained weights are saved "
                  f"at {final}", file=sys.stderr)
    bad_samples = run.left_out + list(st.skipped.items())  # every rank's: the final _save gathered them
    if is_main() and (bad_samples or st.skipped_steps):
        print(f"note: {len(bad_samples)} bad samples skipped, {st.skipped_steps} non-finite steps skipped; "
              f"see {log_path}")
        for path, reason in bad_samples:
            print(f"  skipped {path}: {reason}")
    ignored = list(st.ignored_labels.items())
    if is_main() and ignored:
        print(f"note: {len(ignored)} label files had values the dataset does not define, read as 255 "
              f"(data.unknown_labels=ignore); see {log_path}")
        for path, reason in ignored:
            print(f"  {path}: {reason}")
    barrier()
    return {"step": st.step, "losses": st.history, "eval": st.last_eval, "out_dir": str(out_dir),
            "train_time_s": elapsed, "skipped_samples": bad_samples, "skipped_steps": st.skipped_steps,
            "unknown_labels": ignored}
