"""dgseg's performance benchmark: ``python -m benchmarks.run [--models s,b] [--steps N] [--quick] [--out FILE]``.

Measures, one process per case, for Rein, full fine-tuning, the frozen backbone and LoRA (and Rein with
gradient checkpointing): the training-step time and peak memory (section 1, plus the paper's batch on
ViT-L), whole-image and sliding-window inference on a 1024x2048 image (section 2), Rein's scaling with crop
and batch size (section 4) and FLOPs per step with a GPU projection (section 5); then writes BENCHMARKS.md
with the ratios to full fine-tuning and the goal checks. The raw runs are kept in a JSON file, so the
report can be rewritten (``--report-only``) or an interrupted run continued (``--resume``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import report
from benchmarks.cases import RESULT_PREFIX, run_case
from benchmarks.run_options import _ints, parse_args
from dgseg.atomic import write_atomic

ROOT = Path(__file__).resolve().parent.parent
TRAIN_METHODS = [("rein", False), ("rein", True), ("full", False), ("frozen", False), ("lora", False)]
PAPER_METHODS = [("rein", False), ("full", False), ("rein", True)]
INFER_METHODS = ["rein", "frozen", "lora"]


def plan(args: argparse.Namespace) -> list[dict]:
    """Ordered (key, round, spec) items. Rounds interleave the methods (reversed order every other round)."""
    common = {"amp": args.amp, "device": args.device, "warmup": args.warmup, "threads": args.threads}
    items: list[dict] = []

    def add(key: str, rnd: int, spec: dict) -> None:
        if any((it["key"], it["round"]) == (key, rnd) for it in items):
            return
        items.append({"key": key, "round": rnd, "spec": {**common, **spec}})

    def train_spec(model, adapter, ckpt, crop, batch, steps):
        return {"kind": "train", "model": model, "adapter": adapter, "ckpt": ckpt, "crop": crop, "batch": batch,
                "steps": steps}

    def name(adapter, ckpt):
        return adapter + ("+ckpt" if ckpt else "")

    scaling = []
    if "scaling" in args.sections and args.scaling_model != "none":
        sm = args.scaling_model
        sizes = [(c, 1) for c in _ints(args.scaling_crops)] + [(args.crop, b) for b in _ints(args.scaling_batches)]
        for crop, batch in dict.fromkeys(sizes):
            if sm in args.models and (crop, batch) == (args.crop, args.batch) and "train" in args.sections:
                continue  # the main table has it
            scaling.append((sm, crop, batch))

    if "flops" in args.sections:
        sizes = [(m, args.crop, args.batch, TRAIN_METHODS) for m in args.models]
        if args.paper_model != "none":
            sizes.append((args.paper_model, args.paper_crop, args.paper_batch, PAPER_METHODS))
        for m, crop, batch, methods in sizes:
            for adapter, ckpt in methods:
                add(report.flops_key(m, name(adapter, ckpt), crop, batch), 0,
                    {"kind": "flops", "model": m, "adapter": adapter, "ckpt": ckpt, "crop": crop, "batch": batch})
        for m, crop, batch in scaling:
            add(report.flops_key(m, "rein", crop, batch), 0,
                {"kind": "flops", "model": m, "adapter": "rein", "crop": crop, "batch": batch})

    for rnd in range(max(args.rounds, args.infer_rounds if "infer" in args.sections else 0)):
        if "train" in args.sections and rnd < args.rounds:
            methods = TRAIN_METHODS if rnd % 2 == 0 else TRAIN_METHODS[::-1]
            for m in args.models:
                for adapter, ckpt in methods:
                    add(f"train/{m}/{name(adapter, ckpt)}", rnd,
                        train_spec(m, adapter, ckpt, args.crop, args.batch, args.steps))
        if "infer" in args.sections and rnd < args.infer_rounds:
            for m in args.infer_models:
                for adapter in INFER_METHODS:
                    phases = {"rein": [["slide", 1], ["slide", args.slide_batch], ["whole", 1]],
                              "frozen": [["slide", args.slide_batch], ["whole", 1]]}.get(adapter, [["whole", 1]])
                    add(f"infer/{m}/{adapter}", rnd,
                        {"kind": "infer", "model": m, "adapter": adapter, "crop": args.slide_crop,
                         "stride": args.stride, "image": args.image, "phases": phases})
    if "paper" in args.sections and args.paper_model != "none":
        for adapter, ckpt in PAPER_METHODS:
            add(f"paper/{args.paper_model}/{name(adapter, ckpt)}", 0,
                train_spec(args.paper_model, adapter, ckpt, args.paper_crop, args.paper_batch, args.paper_steps))
    for m, crop, batch in scaling:
        add(f"scale/{m}/rein/{crop}x{batch}", 0, train_spec(m, "rein", False, crop, batch, args.scaling_steps))
    return items


# ------------------------------------------------------------------------------------------------ running
def run_subprocess(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.cases", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if spec.get("threads"):
        env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}


def wait_for_load(max_load: float, max_wait: float) -> None:
    """Sleep while the 1-min load average is above ``max_load`` (at most ``max_wait`` seconds)."""
    if not hasattr(os, "getloadavg"):
        return
    t0 = time.perf_counter()
    while os.getloadavg()[0] > max_load and time.perf_counter() - t0 < max_wait:
        time.sleep(10)


def run_in_process(spec: dict) -> dict:
    try:
        return run_case(spec)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def machine_info() -> dict:
    import numpy
    import timm
    import torch

    import dgseg
    from dgseg.machine import cpu_model

    cpu = cpu_model()
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text)
    except OSError:
        pass
    mem = "n/a"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    commit = "n/a"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "n/a"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    info = {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores" + (f" ({flags})" if flags else ""),
        "memory": mem,
        "torch threads (default)": torch.get_num_threads(),
        "OS": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "dgseg": f"{dgseg.__version__} (git {commit})",
    }
    if torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name(0)
    return info


def _load(path: Path) -> dict | None:
    """The raw results of ``path`` (None: no file); a file that is not a results object is refused by name."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not the JSON results of a benchmark run ({e}); move it aside or pass another "
                         "--json") from e
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: not the JSON results of a benchmark run (no 'runs' list)")
    return data


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    json_path = Path(args.json)
    if args.report_only:
        data = _load(json_path)
        if data is None:
            print(f"--report-only: no results at {json_path}", file=sys.stderr)
            return 2
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report.write(data, args.out, args.notes)
        print(f"wrote {args.out} from {json_path}")
        return 0

    # the command that reproduces the run (--resume only continues an interrupted one)
    command = " ".join(["python -m benchmarks.run"] + [shlex.quote(a) for a in argv if a != "--resume"])
    data = (_load(json_path) if args.resume else None) or {"runs": []}
    done = {(r["key"], r["round"]) for r in data["runs"] if "error" not in r["result"]}
    data["runs"] = [r for r in data["runs"] if (r["key"], r["round"]) in done]
    settings = {k: (v if not isinstance(v, list) else ",".join(map(str, v))) for k, v in vars(args).items()
                if k not in ("out", "json", "notes", "resume", "report_only", "timeout")}
    data["meta"] = {"machine": machine_info(), "command": command, "settings": settings,
                    "started": data.get("meta", {}).get("started") or time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    items = plan(args)
    loads = list(data.get("meta_loads", []))
    t_start = time.perf_counter() - data.get("elapsed_s", 0.0)
    lock = threading.Lock()
    todo = [(i, item) for i, item in enumerate(items) if (item["key"], item["round"]) not in done]

    def execute(i: int, item: dict) -> None:
        if args.max_load is not None and item["spec"]["kind"] != "flops":
            wait_for_load(args.max_load, args.max_wait)
        t0 = time.perf_counter()
        if hasattr(os, "getloadavg") and item["spec"]["kind"] != "flops":
            loads.append(os.getloadavg()[0])
        if args.in_process or item["spec"]["kind"] == "flops":  # FLOP counts run on the meta device: no memory
            result = run_in_process(item["spec"])
        else:
            result = run_subprocess(item["spec"], args.timeout)
            for _ in range(args.retries):  # a case killed by a signal (a shared machine) runs again
                if not result.get("error", "").startswith("exit code -"):
                    break
                print(f"  {item['key']}: {result['error']}; running it again", file=sys.stderr, flush=True)
                result = run_subprocess(item["spec"], args.timeout)
        with lock:
            data["runs"].append({**item, "result": result})
            data["elapsed_s"] = time.perf_counter() - t_start
            data["meta_loads"] = loads
            summary = result.get("error") or _summary(item["spec"], result)
            print(f"[{i + 1}/{len(items)}] {item['key']} (round {item['round'] + 1}): {summary} "
                  f"[{time.perf_counter() - t0:.0f} s, total {(time.perf_counter() - t_start) / 60:.1f} min]",
                  file=sys.stderr, flush=True)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(json_path, json.dumps(data, indent=1))

    # FLOP counts first (in this process), then the measured cases, --jobs at a time, except the big
    # paper-size cases, which run alone (memory)
    for i, item in todo:
        if item["spec"]["kind"] == "flops":
            execute(i, item)
    shared = [(i, it) for i, it in todo if it["spec"]["kind"] != "flops" and not it["key"].startswith("paper/")]
    jobs = 1 if args.in_process else max(args.jobs, 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(execute, i, it) for i, it in shared]:
            future.result()
    for i, item in todo:
        if item["key"].startswith("paper/"):
            execute(i, item)
    data["meta"]["elapsed_s"] = time.perf_counter() - t_start
    if loads:
        data["meta"]["load"] = f"{min(loads):.2f} / {statistics.median(loads):.2f} / {max(loads):.2f}"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, json.dumps(data, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report.write(data, args.out, args.notes)
    print(f"wrote {args.out} and {json_path} in {data['meta']['elapsed_s'] / 60:.1f} min", file=sys.stderr)
    failed = [r["key"] for r in data["runs"] if "error" in r["result"]]
    if failed:
        print(f"failed cases: {failed}", file=sys.stderr)
    return 1 if failed else 0


def _summary(spec: dict, result: dict) -> str:
    if spec["kind"] == "train":
        return (f"step {statistics.median(result['step_s']):.2f} s, peak {result['peak_mib']:.0f} MiB, "
                f"saved {result['saved_mib']:.0f} MiB")
    if spec["kind"] == "infer":
        return ", ".join(f"{p['mode']} b{p['batch']} {p['time_s']:.2f} s" for p in result["phases"])
    return f"{result['flops'] / 1e12:.3f} TFLOP"


if __name__ == "__main__":
    from dgseg.errors import run_main

    sys.exit(run_main("python -m benchmarks.run", main))
