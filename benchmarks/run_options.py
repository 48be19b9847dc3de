"""The options of ``python -m benchmarks.run``: parsed, defaulted (``--quick``) and checked before any case runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.cases import MODELS

ROOT = Path(__file__).resolve().parent.parent
QUICK_OUT = "runs/benchmarks-quick/BENCHMARKS.md"
SECTIONS = ("flops", "train", "infer", "paper", "scaling")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _csv(text)]


def _size(text: str) -> list[int]:
    h, w = text.lower().split("x")
    return [int(h), int(w)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description="dgseg's performance benchmark: training-step time and memory, inference, "
                                "scaling and FLOPs per method; writes BENCHMARKS.md (see benchmarks/run.py)")
    p.add_argument("--models", default="s,b", help="training table models: s, b, l (DINOv2 ViT-S/B/L) or tiny")
    p.add_argument("--paper-model", default="l", help="model run at the paper's batch (rein, full, rein+ckpt); none")
    p.add_argument("--paper-crop", type=int, default=512)
    p.add_argument("--paper-batch", type=int, default=4)
    p.add_argument("--paper-steps", type=int, default=1, help="timed steps at the paper's batch (after warm-up)")
    p.add_argument("--infer-models", default="s", help="inference models (none to skip)")
    p.add_argument("--scaling-model", default="s", help="model of the scaling section (none to skip)")
    p.add_argument("--scaling-crops", default="256,512,1024", help="crops at batch 1")
    p.add_argument("--scaling-batches", default="1,2,4", help="batches at --crop")
    p.add_argument("--scaling-steps", type=int, default=1, help="timed steps per scaling case (after warm-up)")
    p.add_argument("--crop", type=int, default=512, help="training crop of the main table")
    p.add_argument("--batch", type=int, default=1, help="training batch of the main table")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per case and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per case")
    p.add_argument("--rounds", type=int, default=1, help="rounds of the main training table (methods interleaved)")
    p.add_argument("--infer-rounds", type=int, default=1)
    p.add_argument("--image", type=_size, default=[1024, 2048], help="inference image HxW")
    p.add_argument("--slide-crop", type=int, default=512)
    p.add_argument("--stride", type=int, default=341)
    p.add_argument("--slide-batch", type=int, default=6, help="windows per forward of the batched sliding window")
    p.add_argument("--amp", default="bf16", choices=["bf16", "none", "fp16"], help="autocast dtype (bf16 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per case (0: torch's default, all cores). 1 by default: on a CPU shared with "
                        "other jobs, one thread per case keeps the timings and their ratios stable")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--quick", action="store_true",
                   help="a few-minute smoke run: ViT-S only, 256 crops, a 512x1024 image, one round; written to "
                        f"{QUICK_OUT} (not over the committed BENCHMARKS.md), without the notes")
    p.add_argument("--in-process", action="store_true",
                   help="run every case in this process (fast, for tests; memory figures are then not per case)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    p.add_argument("--jobs", type=int, default=1,
                   help="cases run at once (the paper-size cases always run alone). 1 by default: two cases "
                        "side by side share the memory bandwidth unevenly and moved the Rein / full ratios by up "
                        "to 10%%; --jobs 2 halves the run time for a rough look")
    p.add_argument("--retries", type=int, default=2, help="reruns of a case killed by a signal")
    p.add_argument("--max-load", type=float, default=None,
                   help="before each measured case, wait while the 1-min load average is above this (a shared "
                        "machine: other jobs inflate every timing); see --max-wait")
    p.add_argument("--max-wait", type=float, default=600, help="most seconds to wait per case for --max-load")
    p.add_argument("--out", default=None, help=f"the report (default BENCHMARKS.md; with --quick {QUICK_OUT})")
    p.add_argument("--json", default=None, help="raw runs (default: benchmarks/results.json, or next to --out)")
    p.add_argument("--notes", default=None,
                   help="hand-written analysis appended to the report (default benchmarks/NOTES.md, the analysis "
                        "of the committed CPU run; none: no notes, the default with --quick)")
    p.add_argument("--resume", action="store_true", help="keep the runs already in --json and do the rest")
    p.add_argument("--report-only", action="store_true", help="rewrite --out from --json without measuring")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else "BENCHMARKS.md"
    if args.notes is None:
        args.notes = "none" if args.quick else str(ROOT / "benchmarks" / "NOTES.md")
    if args.quick:
        args.models, args.paper_model, args.infer_models, args.scaling_model = "s", "none", "s", "s"
        args.crop, args.rounds, args.steps = 256, 1, 1
        args.image, args.scaling_crops, args.scaling_batches = [512, 1024], "128,256", "1,2"
        args.slide_crop, args.stride = 256, 171
    if args.json is None:
        out = Path(args.out).resolve()
        args.json = str(ROOT / "benchmarks" / "results.json") if out == ROOT / "BENCHMARKS.md" \
            else str(out.with_suffix(".json"))
    for name in ("models", "infer_models"):
        values = [] if getattr(args, name) == "none" else _csv(getattr(args, name))
        bad = [m for m in values if m not in MODELS]
        if bad:
            p.error(f"--{name.replace('_', '-')}: unknown {bad}; choose from {', '.join(MODELS)}")
        setattr(args, name, values)
    for name in ("paper_model", "scaling_model"):
        value = getattr(args, name)
        if value != "none" and value not in MODELS:
            p.error(f"--{name.replace('_', '-')}: unknown '{value}'; choose from {', '.join(MODELS)} or none")
    args.sections = _csv(args.sections)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    for name in ("scaling_crops", "scaling_batches"):
        try:
            sizes = _ints(getattr(args, name))  # empty: no such sweep
        except ValueError:
            sizes = None
        if sizes is None or any(size < 1 for size in sizes):
            p.error(f"--{name.replace('_', '-')}: expected whole numbers of 1 or more separated by commas, got "
                    f"{getattr(args, name)!r}")
    if args.device != "auto":
        import torch

        try:
            torch.device(args.device)
        except RuntimeError:
            p.error(f"--device: {args.device!r} is not a torch device; use auto, cpu, cuda or cuda:N")
    if Path(args.out).is_dir():
        p.error(f"--out {args.out}: is a folder; --out takes the report's file name")
    if Path(args.json).resolve() == Path(args.out).resolve():
        p.error(f"--json {args.json}: is the report (--out); the raw results need their own file")
    if args.notes != "none" and not Path(args.notes).is_file():
        p.error(f"--notes {args.notes}: no such file (none: no notes)")
    return args


# ------------------------------------------------------------------------------------------------ plan
