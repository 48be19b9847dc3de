"""The child processes of ``dgseg bench``: each run trains and is evaluated in its own process, so runs go
side by side (``--jobs``) and each has its own torch thread pool. Stopping the bench stops every child
(each saves a checkpoint); when runs beside one finish, a child still training is stopped the same way and
resumed with the threads they freed (a process's thread pool cannot be widened from outside)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from dgseg import strict_json
from dgseg.atomic import write_atomic
from dgseg.config import Config, config_to_dict, dump_config
from dgseg.engine.run_facts import training_time_s
from dgseg.machine import peak_rss_mb, usable_cores

STOPPED = 3
"""A child's exit code when its training stopped on SIGTERM/SIGINT with a checkpoint (resumable)."""

_LIVE: set = set()
"""The runs' child processes alive now (several with ``jobs`` > 1)."""
_SIGNALLED: set = set()
"""Children already sent SIGTERM (to widen them): a second SIGTERM would cut their checkpoint short."""
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()
"""Set by :func:`stop_children`: no child is started or widened after it (cleared by a new bench)."""


def run_child(train_yaml: str, full_yaml: str, out_dir: str, resume: bool, summary_path: str,
              threads: int | None) -> None:
    """Train (or resume) one run, evaluate it on every domain, write its summary last."""
    import yaml

    from dgseg.config import config_from_dict
    from dgseg.engine.eval_record import evaluation_record
    from dgseg.engine.evaluate import evaluate, write_results
    from dgseg.engine.inference import load_model
    from dgseg.engine.train import train

    torch.set_num_threads(threads or usable_cores())
    train_cfg = config_from_dict(yaml.safe_load(train_yaml))
    full_cfg = config_from_dict(yaml.safe_load(full_yaml))
    result = train(train_cfg, out_dir, resume=resume, progress=False)
    if result.get("stopped"):
        raise SystemExit(STOPPED)
    model, _ = load_model(out_dir)
    from dgseg.engine.distributed import default_device

    device = default_device()
    results = evaluate(model.to(device), full_cfg, device, progress=False)
    write_results(results, full_cfg, Path(out_dir), evaluated=evaluation_record(out_dir, full_cfg, device, "dgseg bench"))
    peak_mb = peak_rss_mb()
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    summary = {
        "eval": results, "config": config_to_dict(full_cfg), "step": result["step"],
        "train_time_s": training_time_s(Path(out_dir) / "log.jsonl"), "peak_memory_mb": peak_mb,
        "trainable": model.parameter_counts()["trainable"],
    }
    write_atomic(Path(summary_path), strict_json.dumps(summary, indent=2))


def stop_children(grace_s: float = 0.0) -> None:
    """Stops every run's child process: waits up to ``grace_s`` for it to stop by itself (Ctrl-C reaches
    the whole process group, so each child already saves a checkpoint and stops), then SIGTERM, which has
    the same effect in the child's training (see ``engine.train``), and waits. The same command resumes the
    runs. So no run keeps training without its parent, and none is started or widened after this."""
    with _LIVE_LOCK:
        _STOPPING.set()
        procs = list(_LIVE)
        signalled = set(_SIGNALLED)
    procs = [proc for proc in procs if proc.pid is not None]  # one not started yet is not started now
    for proc in procs:
        proc.join(grace_s)
        if proc.is_alive() and proc not in signalled:
            proc.terminate()
    for proc in procs:
        proc.join()


def fair_share(cores: int, jobs: int, unfinished: int) -> int:
    """Torch threads per run when ``unfinished`` runs are left for ``jobs`` slots on ``cores`` cores."""
    return max(1, cores // max(1, min(jobs, unfinished)))


def train_in_child(label: str, cfg: Config, train_cfg: Config, run_dir: Path, resume: bool,
                   threads: int | None, fair_threads: Callable[[], int] | None = None,
                   poll_s: float = 5.0) -> None:
    """Train and evaluate one run in a child process, until its summary is written.

    ``fair_threads``: the threads the run should have now. A child starts with at least that many; when it
    later exceeds the child's, the child is stopped (it checkpoints) and resumed with them, but only while
    it trains (it has logged an iteration since it started) and has over two checkpoint intervals left."""
    while True:
        proc, wider = None, 0
        try:  # from before the start: an interrupt right after it still stops the child
            with _LIVE_LOCK:
                if _STOPPING.is_set():
                    raise RuntimeError(f"bench: {label} was not started: the bench is stopping")
                if fair_threads is not None:
                    threads = max(threads or 1, fair_threads())
                args = (dump_config(train_cfg), dump_config(cfg), str(run_dir), resume,
                        str(run_dir / "summary.json"), threads)
                log = run_dir / "log.jsonl"
                logged = log.stat().st_size if log.exists() else 0
                proc = mp.get_context("spawn").Process(target=run_child, args=args)
                _LIVE.add(proc)  # registered before it starts (stop_children passes over a child not started)
                proc.start()
            while proc.is_alive():
                proc.join(poll_s if fair_threads is not None else None)
                if fair_threads is not None and proc.is_alive():
                    wider = _widen(proc, fair_threads(), threads or 1, cfg, run_dir, logged)
                    if wider:
                        proc.join()
        except BaseException as exc:  # interrupted: stop the child before unwinding (else Python's exit waits)
            if proc is None or proc.pid is None:  # no child was started
                raise
            if threading.current_thread() is threading.main_thread():
                stop_children(grace_s=60.0 if isinstance(exc, KeyboardInterrupt) else 0.0)
                _STOPPING.clear()  # a later run in this process may start
            else:  # an error in one of the bench's waiting threads: this run only
                if proc not in _SIGNALLED:
                    proc.terminate()
                proc.join()
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
                _SIGNALLED.discard(proc)
        if wider and proc.exitcode == STOPPED and not _STOPPING.is_set():
            threads, resume = max(wider, fair_threads()), True
            print(f"   {label}: resumed with {threads} threads (a run beside it finished)", flush=True)
            continue
        break
    if proc.exitcode != 0 or not (run_dir / "summary.json").exists():
        raise RuntimeError(f"bench: run {label} in {run_dir} did not finish (exit code {proc.exitcode}); run "
                           "the same command again to resume it")


def _widen(proc, fair: int, threads: int, cfg: Config, run_dir: Path, logged: int) -> int:
    """Sends the child SIGTERM and returns ``fair`` when it should be widened to it, else 0."""
    if os.name != "posix" or fair <= threads or not _training(run_dir, cfg, logged):  # elsewhere terminate kills
        return 0
    with _LIVE_LOCK:
        if _STOPPING.is_set() or not proc.is_alive():
            return 0
        _SIGNALLED.add(proc)
        proc.terminate()  # the child's training saves a checkpoint and exits with STOPPED
    return fair


def _training(run_dir: Path, cfg: Config, logged: int) -> bool:
    """The child is in its training loop (it has logged an iteration since it started, so SIGTERM makes it
    checkpoint) with over two checkpoint intervals left by its latest checkpoint (far from its final save
    and evaluation, where SIGTERM would kill it)."""
    from dgseg.engine.checkpoint_read import latest_step

    try:
        with open(run_dir / "log.jsonl", "rb") as f:
            f.seek(logged)
            lines = f.read().splitlines()
        step = latest_step(run_dir) or 0
    except OSError:
        return False
    stepped = False
    for line in lines:
        try:
            stepped = stepped or "time_per_iter" in json.loads(line)
        except (ValueError, TypeError):
            continue
    return stepped and cfg.train.max_iters - step > 2 * cfg.train.checkpoint_interval
