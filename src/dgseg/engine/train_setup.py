"""Setting up a training run for :func:`dgseg.engine.train.train`: the run folder, the model and its
optimisation, resuming from the newest checkpoint, the data loader and the outputs (config, log, run facts).

The loop works on the two records built here: :class:`TrainRun` (what is set up once) and
:class:`TrainState` (what changes from step to step; a checkpoint's training state holds what resuming
needs of it). The order of the setup is part of the resume contract: the RNGs are seeded before the model
is built and restored before the data loader is made.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import dgseg
from dgseg.atomic import write_atomic
from dgseg.config import Config, ConfigError, config_to_dict, dump_config
from dgseg.config.origins import name_writer
from dgseg.config.validate import refuse_unused_resize_keys
from dgseg.engine.backbone_check import check_backbone
from dgseg.engine.checkpoint import latest_checkpoint, load_checkpoint, load_train_state, restore_rng_state
from dgseg.engine.data import build_train_loader, skipped_samples
from dgseg.engine.distributed import barrier, init_distributed, is_main, sync_batchnorm
from dgseg.engine.eval_sizes import check_eval_sizes
from dgseg.engine.loggers import RunLogger, require_log_backends
from dgseg.engine.optim import build_optimizer, build_scheduler, lr_reference
from dgseg.engine.precision import resolve_amp
from dgseg.engine.run_facts import read_run_json, write_run_facts
from dgseg.engine.run_folder import claim_run_folder, refuse_links, untrained_start
from dgseg.engine.text_tower_check import check_text_tower
from dgseg.engine.unused_parameters import unreached_parameters
from dgseg.models.weights_io import mismatch_report

__all__ = ["checkpoint_meta", "load_trainable", "TrainRun", "TrainState", "setup_training"]


def checkpoint_meta(cfg: Config, step: int, model: nn.Module | None = None) -> dict:
    """What a checkpoint must say about itself so it is never used with the wrong backbone (nor, given the
    ``model``, with another frozen CLIP text tower)."""
    from dgseg.data.classes import config_class_set
    from dgseg.engine.backbone_check import backbone_record
    from dgseg.engine.text_tower_check import text_tower_record

    tower = None if model is None else text_tower_record(cfg, model)
    return {
        "config": config_to_dict(cfg),
        "step": step,
        "dgseg_version": dgseg.__version__,
        "backbone": backbone_record(cfg),  # name, weights entry, file name, content digest, sha256, tensors
        "num_classes": config_class_set(cfg).num_classes,  # = model.num_classes (checked), also for a Config built in code
        "classes": config_class_set(cfg).to_dict(),
        "adapter": cfg.model.adapter.name,
        **({} if tower is None else {"text_tower": tower}),  # model.text.weights' tower, by content digest
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


@dataclass
class TrainRun:
    """What :func:`dgseg.engine.train.train` sets up once and every step reads."""

    cfg: Config
    out_dir: Path
    rank: int
    world: int
    device: torch.device
    progress: bool
    base: nn.Module  # the Segmentor
    model: nn.Module  # ``base``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp: str
    trainable: list[nn.Parameter]  # what gradient clipping and the grad norm see
    meta_base: dict  # checkpoint_meta of the run; each checkpoint sets its own step
    lr_reference: tuple[int, float]  # the group whose lr / multiplier the log shows (dgseg.engine.optim.lr_reference)
    left_out: list[tuple[str, str]]  # files left out while listing the data (before any sample is read)
    logger: RunLogger
    batches: Iterator[dict]
    bar: tqdm
    t_start: float

    def log(self, record: dict) -> None:
        self.logger.log(record)


@dataclass
class TrainState:
    """What changes from step to step; a checkpoint's training state holds what resuming needs of it."""

    step: int = 0
    skipped_steps: int = 0  # non-finite steps skipped (train.on_nan=skip): their batches were consumed too
    skipped: dict[str, str] = field(default_factory=dict)  # bad samples skipped while reading: path -> reason
    ignored_labels: dict[str, str] = field(default_factory=dict)  # data.unknown_labels=ignore: label -> reason
    consecutive_skips: int = 0
    rank_samples: int = 0  # training samples each process has read in the steps taken or skipped
    last_eval: dict | None = None
    history: list[float] = field(default_factory=list)  # total loss of every step
    window_t: float = 0.0  # start and length of the current log interval (time_per_iter)
    window_n: int = 0


def may_leave_unread(model: nn.Module) -> bool:
    """Whether a trainable parameter can go unread at all: the ViT's own weights train (full fine-tuning), or an
    adapter sits on a block after the last one the features come from. Otherwise (Rein, LoRA, AdaptFormer, VPT,
    the frozen head as shipped) the shapes-only check is not run."""
    backbone, adapter = getattr(model, "backbone", None), getattr(model, "adapter", None)
    if backbone is None or not hasattr(backbone, "out_indices"):
        return True  # not a dgseg Segmentor: check
    if any(p.requires_grad for p in backbone.parameters()):
        return True
    return any(i > max(backbone.out_indices) for i in getattr(adapter, "layers", []))


def ddp_find_unused(model: nn.Module, cfg: Config) -> bool:
    """DDP's ``find_unused_parameters``: on exactly when a trainable parameter is never read by the forward
    (:func:`unreached_parameters`, or when that check cannot run), said once on rank 0 with the names."""
    if not may_leave_unread(model):
        return False
    was_training = model.training
    model.train()  # the training forward: what it reads
    unreached = unreached_parameters(model, (cfg.data.crop_size[0], cfg.data.crop_size[-1]))
    model.train(was_training)
    if unreached == []:
        return False
    if is_main():
        what = ("the check of unread parameters could not run on the meta device" if unreached is None else
                f"{len(unreached)} trainable parameter(s) the forward never reads, e.g. {unreached[:4]}")
        print(f"dgseg train: {what}; DistributedDataParallel runs with find_unused_parameters=True (a walk of "
              "the autograd graph every step)", file=sys.stderr)
    return True


def setup_training(cfg: Config, out_dir: Path, resume: bool, force: bool, model: nn.Module | None,
                   progress: bool) -> tuple[TrainRun, TrainState]:
    """The setup of :func:`dgseg.engine.train.train`, in order: seeds, builds the model, optimizer, scheduler and
    grad scaler, claims the folder (unless resuming), resumes, wraps the model for DDP, builds the data
    loader from the resumed position, writes config.yaml and the run facts, opens the log."""
    require_log_backends(cfg.train.log_backends)  # a missing package, said before anything is built or written
    if not resume:  # a new run only: a checkpoint trained before the check is still resumed as it was
        try:
            refuse_unused_resize_keys(cfg)
        except ConfigError as exc:
            name_writer(exc, cfg)  # the file or --set override that wrote the key
            raise
    rank, world, device = init_distributed()
    if resume:  # what the resumed run appends to or merges, refused by name before anything is built
        refuse_links(out_dir)
        read_run_json(out_dir)
    torch.manual_seed(cfg.train.seed)
    base, optimizer, scheduler, amp, scaler = _build_model_and_optimizer(cfg, device, model)
    reference = lr_reference(optimizer, cfg.train.lr)  # chosen as built: a resume restores the groups' lrs
    if not resume:  # after the model is built and its crop checked: a refused setup moves no earlier run aside
        _claim_folder(out_dir, force)
    st = TrainState()
    # before the resume, whose check its text tower record serves (hashed once); each checkpoint sets its own step
    meta_base = checkpoint_meta(cfg, 0, base)
    resumed_from = _resume(cfg, out_dir, base, optimizer, scheduler, scaler, st, world, meta_base.get("text_tower")
                           ) if resume else None
    model = base
    if world > 1:
        find_unused = ddp_find_unused(base, cfg)  # before SyncBatchNorm, which refuses meta inputs
        base = sync_batchnorm(base, device)  # in place: the same parameters and module
        model = nn.parallel.DistributedDataParallel(
            base, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=find_unused
        )
    loader, dataset = build_train_loader(cfg, rank, world, st.rank_samples)
    left_out = skipped_samples(dataset)
    trainable = [p for p in base.parameters() if p.requires_grad]
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "config.yaml", dump_config(cfg))
    logger = RunLogger(out_dir, cfg.train.log_backends, cfg.train.batch_size * cfg.train.accumulate * world,
                       enabled=is_main())
    if is_main():
        write_run_facts(out_dir, cfg, base, amp, started=True, from_iter=st.step)
    if resumed_from is not None:
        # the iterations after it may repeat earlier lines
        logger.log({"iter": st.step, "resumed_from": resumed_from.name})
    for path, reason in left_out:
        logger.log({"iter": st.step, "skipped_sample": path, "reason": reason, "while": "listing files"})

    base.train()
    batches = iter(loader)
    bar = tqdm(total=cfg.train.max_iters, initial=st.step, desc="train", disable=not (progress and is_main()),
               dynamic_ncols=True)
    run = TrainRun(cfg, out_dir, rank, world, device, progress, base, model, optimizer, scheduler, scaler, amp,
                   trainable, meta_base, reference, left_out, logger, batches, bar, t_start=time.perf_counter())
    st.window_t = time.perf_counter()
    return run, st


def _claim_folder(out_dir: Path, force: bool) -> None:
    """A new run: refuses a folder that holds a run, or with ``force`` moves that run aside; a start that failed
    before its first step (:func:`untrained_start`) is moved aside without ``force``: rerunning the command works.
    Every path passes the same two barriers (ranks that see the folder differently do not hang on a count)."""
    untrained = not force and untrained_start(out_dir)
    barrier()  # every rank has looked before the main one moves anything
    if untrained:
        if is_main() and (moved := claim_run_folder(out_dir, force=True)):
            print(f"{out_dir} held a start that failed before its first step (its log.jsonl says so); its files "
                  f"were moved to {moved} and this run starts afresh")
    elif not force:
        claim_run_folder(out_dir)  # raises when the folder holds a run (every rank sees the same files)
    elif is_main() and (moved := claim_run_folder(out_dir, force=True)):
        print(f"--force: the previous run in {out_dir} was moved to {moved}")
    barrier()


def check_crop_size(model: nn.Module, cfg: Config) -> None:
    """Every training input is ``data.crop_size`` (smaller images are padded to it): refused when the model cannot
    take it (a 0 x 0 map deep in the neck), before the first step. A batch of one also needs the head's GroupNorm to
    see more than one value per group, as at inference."""
    from dgseg.image_size import image_size_problem, model_size_rule

    rule = model_size_rule(model)
    if rule is None:
        return
    problem = image_size_problem(*cfg.data.crop_size, rule.for_batch(cfg.train.batch_size))
    if problem is not None:
        hint = "; or train.batch_size 2 or more" if image_size_problem(*cfg.data.crop_size, rule.for_batch(2)) is None \
            else ""
        raise ConfigError(f"data.crop_size {cfg.data.crop_size}: {problem.replace('image is', 'the crop is', 1)}{hint}")


def _build_model_and_optimizer(cfg: Config, device: torch.device, model: nn.Module | None) -> tuple:
    """(model on ``device``, optimizer, poly scheduler, resolved amp, grad scaler) of ``cfg``."""
    if model is None:
        model = dgseg.build_model(cfg)
    check_crop_size(model, cfg)
    check_eval_sizes(model, cfg, device)
    model.to(device)
    if cfg.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    lr_mult = getattr(model.adapter, "lr_mult", 1.0) if model.adapter.trains_backbone else 1.0
    optimizer = build_optimizer(model, cfg.train, backbone_lr_mult=lr_mult)
    scheduler = build_scheduler(optimizer, cfg.train)
    amp = resolve_amp(cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    return model, optimizer, scheduler, amp, scaler


def _resume(cfg: Config, out_dir: Path, base: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            scaler: torch.amp.GradScaler, st: TrainState, world: int, tower: dict | None) -> Path:
    """Loads the newest checkpoint of ``out_dir`` into the model, the optimisation, the RNGs and ``st``;
    refuses one saved by another number of processes than ``world``, or by a model with another frozen text
    tower than ``tower`` (the model's record, :func:`dgseg.engine.text_tower_check.text_tower_record`)."""
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out_dir / 'checkpoints'}: nothing to continue; start "
                                f"afresh without --resume (into a new --out, or with --force)")
    weights, meta = load_checkpoint(ckpt)
    check_backbone(ckpt, meta, cfg)
    check_text_tower(ckpt, meta, cfg, base, tower)
    load_trainable(base, weights, str(ckpt))
    state = load_train_state(ckpt)
    saved_world = int(state.get("world", world))  # older checkpoints do not say: this run's
    if saved_world != world:
        def procs(n: int) -> str:
            return "1 process" if n == 1 else f"{n} processes"

        raise ValueError(
            f"--resume: {ckpt} was saved by a run on {procs(saved_world)}, this one runs on {procs(world)}. Each "
            f"process reads its own share of every epoch, so on {procs(world)} some samples would be read again "
            f"and others never. Resume on {procs(saved_world)} "
            + ("(without torchrun)." if saved_world == 1 else f"(e.g. torchrun --nproc_per_node {saved_world} ...).")
        )
    built = [group["initial_lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    saved = [group["initial_lr"] for group in optimizer.param_groups]
    if saved != built:  # the checkpoint's optimizer state wins: say so rather than leave the new value unused
        warnings.warn(f"--resume: {ckpt} was trained at initial learning rates {saved} (its parameter groups), this "
                      f"config gives {built} (train.lr={cfg.train.lr}); the run continues at the checkpoint's. "
                      "To train at the new rates, start a new run (--out NEW, or --force)", stacklevel=2)
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    st.step = int(state["step"])
    st.skipped_steps = int(state.get("skipped_steps", 0))
    st.skipped = {str(p): str(r) for p, r in state.get("skipped_samples", [])}
    st.ignored_labels = {str(p): str(r) for p, r in state.get("unknown_labels", [])}
    # older checkpoints: every step read train.batch_size x train.accumulate samples per process
    per_step = cfg.train.batch_size * cfg.train.accumulate
    st.rank_samples = int(state.get("rank_samples", (st.step + st.skipped_steps) * per_step))
    return ckpt
