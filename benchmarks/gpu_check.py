"""CUDA checks that no CI machine can run (CI has no GPU): ``python -m benchmarks.gpu_check --out DIR``.

1. parity: one model (the demo's Rein segmentor, random backbone weights), the same non-square batch on the
   CPU and on the GPU in float32 (TF32 off): the class scores agree; bf16 autocast on the GPU is compared
   with float32 and reported.
2. the CLI on the GPU in each precision (``train.amp``: none, bf16, fp16 with the gradient scaler):
   ``dgseg train`` (finite losses, a checkpoint), then ``dgseg eval`` and ``dgseg predict`` (sliding window)
   of that checkpoint.
3. ``torchrun --nproc_per_node 1``: the same training started by the torchrun launcher. With one process
   dgseg starts no process group (``engine.distributed.init_distributed`` does at ``WORLD_SIZE`` > 1) and
   does not wrap the model in DistributedDataParallel, so this checks the launcher's environment only; NCCL
   and DDP need two GPUs (two processes on one GPU are refused by NCCL). On CPUs
   ``tests/test_distributed.py`` runs DDP with gloo.

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``; exits 1 when a check fails. ``--device cpu`` runs
the same steps on a CPU (a dry run of the script itself: parity and fp16 skipped, and bf16 runs in float32
on a CPU without native bf16). ``--out`` must be empty or new: ``dgseg train`` refuses a folder that holds a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dgseg.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "dgseg" / "configs" / "demo.yaml"
RANDOM_WEIGHTS = "model.backbone.weights=null"
SMALL_VAL = ("data.val=[{name: synthetic-game, split: val, length: 4, size: [256, 512]}, "
             "{name: synthetic-night, split: val, length: 4, size: [256, 512]}]")
"""Two small validation sets: the run's final evaluation and ``dgseg eval`` check the code path, not a number."""


def parity(device: str) -> dict:
    """Class scores of one batch on the CPU and on ``device`` (float32, then bf16 autocast on ``device``)."""
    import torch

    import dgseg

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = dgseg.build_model(dgseg.load_config(DEMO, overrides=[RANDOM_WEIGHTS])).eval()
    images = torch.randn(2, 3, 168, 238, generator=torch.Generator().manual_seed(1))
    cpu = model.predict(images)
    model.to(device)
    gpu = model.predict(images.to(device)).cpu()
    scale = cpu.abs().max().item()
    diff = (gpu - cpu).abs().max().item() / scale
    result = {"ok": diff < 1e-3, "float32 max |gpu - cpu| / max |cpu|": diff,
              "float32 argmax agreement": (gpu.argmax(1) == cpu.argmax(1)).float().mean().item()}
    if torch.cuda.is_bf16_supported():  # older GPUs: no bf16 line rather than float32 under its name
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            bf16 = model.predict(images.to(device)).cpu()
        result.update({"bf16 max |bf16 - cpu| / max |cpu|": (bf16 - cpu).abs().max().item() / scale,
                       "bf16 argmax agreement": (bf16.argmax(1) == cpu.argmax(1)).float().mean().item()})
    return result


def run(cmd: list[str], log: Path, timeout: float) -> tuple[int, float]:
    """Runs ``cmd`` in its own process group; returns its exit code (124: timed out, the whole group killed,
    torchrun's workers too) and wall seconds. Its output goes to ``<log>.running`` (a new file, never through a
    link: follow it with ``tail -f``), renamed to ``log`` when the command ends, is stopped or is interrupted
    (Ctrl-C stops the whole group too); a check killed from outside leaves its ``.running`` file."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    running = log.with_name(log.name + ".running")
    if running.is_symlink():
        running.unlink()
    fd = os.open(running, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except BaseException as e:  # timed out, or Ctrl-C here: the whole group goes, torchrun's workers too
                with contextlib.suppress(ProcessLookupError):  # the group may have ended by itself meanwhile
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if not isinstance(e, subprocess.TimeoutExpired):
                    raise
                code = 124
    finally:
        os.replace(running, log)  # a link at ``log`` is replaced, not followed
    return code, time.perf_counter() - t0


def training_facts(run_dir: Path) -> dict:
    """The training log's iterations, whether every logged loss is finite, the mean s/iteration after the first
    line, and how many lines were not JSON records (``dgseg.viz.read_log``)."""
    from dgseg.viz import read_log

    rows, bad = read_log(run_dir / "log.jsonl")
    rows = [r for r in rows if "loss" in r]
    finite = all(math.isfinite(r["loss"]) for r in rows)
    times = [r["time_per_iter"] for r in rows[1:] if "time_per_iter" in r]
    return {"iterations": rows[-1]["iter"] if rows else 0, "losses finite": finite,
            "first loss": rows[0]["loss"] if rows else None, "last loss": rows[-1]["loss"] if rows else None,
            "s per iteration": sum(times) / len(times) if times else None, "unreadable log lines": len(bad)}


def train_command(run_dir: Path, iters: int, amp: str) -> list[str]:
    """``dgseg train`` arguments of every check: the demo config, random backbone weights, small validation."""
    return ["train", str(DEMO), "--out", str(run_dir), "--no-progress", "--set", RANDOM_WEIGHTS, "--set", SMALL_VAL,
            "--set", f"train.max_iters={iters}", "--set", f"train.amp={amp}", "--set", "train.log_interval=5",
            "--set", f"train.checkpoint_interval={iters}"]


def write_images(folder: Path) -> Path:
    """Two random non-square RGB images for ``dgseg predict``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in {"wide.png": (200, 360), "tall.png": (300, 180)}.items():
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_atomic(folder / name, lambda f, image=image: image.save(f, format="PNG"))
    return folder


def cli_check(out: Path, images: Path, iters: int, amp: str, timeout: float) -> dict:
    """``dgseg train`` / ``eval`` / ``predict`` (of the files in ``images``) on the default device in one precision."""
    py = [sys.executable, "-m", "dgseg"]
    run_dir = out / f"train_{amp}"
    code, wall = run(py + train_command(run_dir, iters, amp), out / f"train_{amp}.log", timeout)
    entry = {"train exit": code, "train wall s": round(wall, 1)}
    if code == 0:
        entry.update(training_facts(run_dir))
        ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
        code, wall = run(py + ["eval", "--checkpoint", str(ckpt), "--out", str(out / f"eval_{amp}"), "--json",
                               "--no-progress", "--set", SMALL_VAL], out / f"eval_{amp}.log", timeout)
        entry.update({"eval exit": code, "eval wall s": round(wall, 1)})
        code, wall = run(py + ["predict", "--checkpoint", str(ckpt), "--out", str(out / f"predict_{amp}"),
                               "--mode", "slide", "--no-progress", str(images)], out / f"predict_{amp}.log", timeout)
        entry.update({"predict exit": code, "predict wall s": round(wall, 1),
                      "predicted files": len(list((out / f"predict_{amp}").rglob("*.png")))})
    entry["ok"] = (entry.get("train exit") == 0 and entry.get("losses finite") is True
                   and entry.get("iterations") == iters and entry.get("eval exit") == 0
                   and entry.get("predict exit") == 0 and entry.get("predicted files") == 3 * 2)  # 3 PNGs per image
    return {f"train/eval/predict, amp {amp}": entry}


def torchrun_check(out: Path, iters: int, amp: str, timeout: float) -> dict:
    """``torchrun --nproc_per_node 1 -m dgseg train`` (a process group: NCCL on a GPU, gloo on a CPU)."""
    run_dir = out / "train_torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "dgseg",
           *train_command(run_dir, iters, amp)]
    code, wall = run(cmd, out / "train_torchrun.log", timeout)
    entry = {"exit": code, "wall s": round(wall, 1)}
    if code == 0:
        entry.update(training_facts(run_dir))
    entry["ok"] = code == 0 and entry.get("losses finite") is True and entry.get("iterations") == iters
    return {f"torchrun, amp {amp}": entry}


def markdown(facts: dict, checks: dict) -> str:
    lines = ["# GPU checks (`python -m benchmarks.gpu_check`)", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()] + [""]
    for name, entry in checks.items():
        values = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items() if k != "ok")
        lines.append(f"- **{name}**: {'pass' if entry.get('ok') else 'FAIL'} ({values})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--iters", type=int, default=40, help="training iterations per CLI check")
    p.add_argument("--amps", default="none,bf16,fp16")
    p.add_argument("--timeout", type=float, default=240, help="seconds per command")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no GPU here (use --device cpu for a dry run)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        p.error(f"--out {out}: not an empty folder (dgseg train refuses a folder that holds a run); give a new one")
    amps = [a for a in args.amps.split(",") if a and (args.device == "cuda" or a != "fp16")]
    bad = [a for a in amps if a not in ("none", "bf16", "fp16")]
    if bad or not amps:
        p.error(f"--amps {args.amps!r}: give some of none, bf16, fp16 (fp16 needs --device cuda)")
    if args.device == "cpu":  # the CLI subprocesses inherit it: they must not find a GPU either
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    out.mkdir(parents=True, exist_ok=True)
    facts = {"torch": torch.__version__, "python": sys.version.split()[0],
             "GPU": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (dry run on the CPU)"}
    checks = {}

    def record(results: dict) -> None:  # after every check: a run cut short keeps what it measured
        checks.update(results)
        write_atomic(out / "gpu_check.json", json.dumps({"facts": facts, "checks": checks}, indent=1) + "\n")
        write_atomic(out / "gpu_check.md", markdown(facts, checks))
        for name, entry in results.items():
            print(f"{name}: {'pass' if entry.get('ok') else 'FAIL'} {entry}", flush=True)

    if args.device == "cuda":
        record({"parity, CPU vs GPU": parity("cuda")})
    images = write_images(out / "images")
    record(cli_check(out, images, args.iters, amps[0], args.timeout))
    record(torchrun_check(out, args.iters, amps[0], args.timeout))
    for amp in amps[1:]:
        record(cli_check(out, images, args.iters, amp, args.timeout))
    print(markdown(facts, checks))
    return 0 if all(c.get("ok") for c in checks.values()) else 1


if __name__ == "__main__":
    from dgseg.config import ConfigError
    from dgseg.errors import run_main

    # only a mistake in its options or paths is one error line: a failing check is the report this script exists
    # to give, traceback included (exit code 1 when a check fails, as main says)
    sys.exit(run_main("python -m benchmarks.gpu_check", main, errors=(ConfigError, OSError)))
