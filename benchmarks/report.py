"""BENCHMARKS.md from the collected runs: tables, ratios to full fine-tuning, goal checks, projection.

This module renders the page (:func:`render`, :func:`write`), checks the goals and projects the paper recipe;
the merging of rounds, the number formats and the rows of the measured tables are in
:mod:`benchmarks.report_tables` (re-exported here).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.cases import MODEL_LABELS
from benchmarks.report_tables import (
    FLOPS_HEADER,
    METHOD_LABELS,
    METHOD_ORDER,
    SCALING_HEADER,
    TRAIN_HEADER,
    f,
    flops_for,
    flops_key,
    flops_rows,
    g,
    infer_rows,
    med,
    merge_runs,
    params,
    ratio,
    scaling_rows,
    single_thread,
    step_times,
    table,
    train_rows,
)
from dgseg.atomic import write_atomic

__all__ = [
    "render", "write", "goal_rows", "projection", "merge_runs", "med", "ratio", "f", "g", "params", "table",
    "flops_key", "flops_for", "single_thread", "step_times", "train_rows", "infer_rows", "scaling_rows",
    "flops_rows", "TRAIN_HEADER", "SCALING_HEADER", "FLOPS_HEADER", "METHOD_ORDER", "METHOD_LABELS",
]

# The goals (all ratios measured in the same run).
GOAL_TIME_VS_FULL = 0.75
GOAL_MEMORY_VS_FULL = 0.65
GOAL_INFER_VS_FROZEN = 1.10
GOAL_SLIDE_BATCH_SPEEDUP = 1.5
GOAL_CKPT_MEMORY_CUT = 0.40
GOAL_CKPT_TIME = 1.4

# Projection constants (public spec-sheet numbers, not measurements).
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM, dense BF16 tensor-core peak
PROJECTION_UTILISATION = (0.15, 0.4)  # model-FLOP utilisation range assumed for the projection
PAPER_ITERS = 40_000
PAPER_HOURS = {"rein": 9.5, "full": 11.2}  # Rein paper, DINOv2-L, one RTX 3090 Ti, 40k iterations
PAPER_GB = {"rein": 10.0, "full": 14.7}


def goal_rows(train: dict, paper: dict, infer: dict, image: str = "1024x2048") -> list[list[str]]:
    """The efficiency goals' rows; ``image``: the inference image measured (HxW)."""
    rows = []

    def status(value, target, below=True):
        if value is None:
            return "not measured"
        ok = value <= target if below else value >= target
        return "**met**" if ok else "**not met**"

    for label, summary in (("main", train), ("paper size", paper)):
        for model, s in summary.items():
            rein, full = s.get("rein"), s.get("full")
            if not rein or not full:
                continue
            where = f"{MODEL_LABELS.get(model, model)}, {rein['crop']}x{rein['batch']} ({label})"
            rows.append(["Rein step time / full", where,
                         f"{f(rein['time_vs_full'])} (min-based {f(rein['time_min_vs_full'])}, wall "
                         f"{f(rein['wall_vs_full'])}; "
                         f"{rein['samples']} vs {full['samples']} steps)",
                         f"<= {GOAL_TIME_VS_FULL}", status(rein["time_vs_full"], GOAL_TIME_VS_FULL)])
            rows.append(["Rein peak memory / full", where,
                         f"{f(rein['peak_vs_full'])} (saved activations {f(rein['saved_vs_full'])})",
                         f"<= {GOAL_MEMORY_VS_FULL}", status(rein["peak_vs_full"], GOAL_MEMORY_VS_FULL)])
            ck = s.get("rein+ckpt")
            if ck:
                cut = 1 - ck["peak"] / rein["peak"] if ck["peak"] and rein["peak"] else None
                saved_cut = 1 - ck["saved"] / rein["saved"] if ck["saved"] and rein["saved"] else None
                slow = ratio(ck["time"], rein["time"])
                rows.append(["grad checkpointing: Rein peak-memory cut", where,
                             f"{f(cut)} (saved activations {f(saved_cut)})", f">= {GOAL_CKPT_MEMORY_CUT}",
                             status(cut, GOAL_CKPT_MEMORY_CUT, below=False)])
                rows.append(["grad checkpointing: Rein step time x", where, f(slow), f"<= {GOAL_CKPT_TIME}",
                             status(slow, GOAL_CKPT_TIME)])
    for model, s in infer.items():
        rein = s.get("rein")
        if not rein:
            continue
        where = f"{MODEL_LABELS.get(model, model)}, {image}" if model != "tiny" else "tiny"
        rows.append(["Rein inference / frozen (whole image)", where, f(rein["whole_vs_frozen"]),
                     f"<= {GOAL_INFER_VS_FROZEN}", status(rein["whole_vs_frozen"], GOAL_INFER_VS_FROZEN)])
        rows.append(["Rein inference / frozen (sliding window)", where, f(rein["slide_vs_frozen"]),
                     f"<= {GOAL_INFER_VS_FROZEN}", status(rein["slide_vs_frozen"], GOAL_INFER_VS_FROZEN)])
        rows.append(["sliding window: batched vs one window at a time (speed-up)", where,
                     f"{f(rein['batch_speedup'])} (max abs. difference of the scores {f(rein['max_abs_diff'], 4)})",
                     f">= {GOAL_SLIDE_BATCH_SPEEDUP}",
                     status(rein["batch_speedup"], GOAL_SLIDE_BATCH_SPEEDUP, below=False)])
    return rows


def projection(merged: dict, model: str, crop: int, batch: int) -> str:
    rein = flops_for(merged, model, "rein", crop, batch)
    full = flops_for(merged, model, "full", crop, batch)
    if not rein or not full:
        return "_(no FLOP count for the paper recipe in this run)_"
    lo, hi = PROJECTION_UTILISATION
    lines = [
        f"Paper recipe: {MODEL_LABELS.get(model, model)}, {crop} crops, batch {batch}, {PAPER_ITERS:,} iterations. "
        "FLOPs counted by `FlopCounterMode` on the meta device (matmul, convolution and attention; "
        "elementwise ops, normalisation, the deformable attention's `grid_sample` and the optimizer not counted).",
        "",
    ]
    rows = []
    for name, e in (("rein", rein), ("full", full)):
        tflop = e["flops"] / 1e12
        total_pflop = tflop * PAPER_ITERS / 1e3
        step_hi = tflop / (H100_BF16_DENSE_TFLOPS * lo)
        step_lo = tflop / (H100_BF16_DENSE_TFLOPS * hi)
        paper_step = PAPER_HOURS[name] * 3600 / PAPER_ITERS
        rows.append([
            METHOD_LABELS[name], f(tflop, 2), f(total_pflop, 0),
            f"{step_lo * 1e3:.0f}-{step_hi * 1e3:.0f} ms",
            f"{step_lo * PAPER_ITERS / 3600:.2f}-{step_hi * PAPER_ITERS / 3600:.2f} h",
            f"{paper_step:.3f} s -> {tflop / paper_step:.1f} TFLOP/s achieved",
        ])
    lines.append(table(["method", "TFLOP / step", "PFLOP / 40k steps",
                        f"H100 step ({int(lo * 100)}-{int(hi * 100)}% of {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s)",
                        "H100, 40k iterations", "paper (RTX 3090 Ti) implies"], rows))
    lines.append("")
    lines.append(
        f"Projected Rein / full step-time ratio if time followed the counted FLOPs: "
        f"**{rein['flops'] / full['flops']:.2f}** (the paper measured {PAPER_HOURS['rein'] / PAPER_HOURS['full']:.2f}).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ document
def render(data: dict, notes: str | None = None) -> str:
    meta = data["meta"]
    settings = meta["settings"]
    image = str(settings.get("image", "1024,2048")).replace(",", "x")  # the inference image, HxW
    merged = merge_runs(data["runs"])
    out = ["# dgseg benchmarks", ""]
    out.append(
        "Generated by `benchmarks/run.py`; every number below was measured on the machine described here, "
        "in the run whose command is given, unless it is labelled a projection."
    )
    out += ["", "## Machine, versions, command", ""]
    out.append(table(["item", "value"], [[k, f"`{v}`" if k == "command" else str(v)] for k, v in meta["machine"].items()]
                     + [["command", f"`{meta['command']}`"], ["started", meta.get("started", "")],
                        ["wall time of the run", f"{meta.get('elapsed_s', 0) / 60:.1f} min"],
                        ["load average during the run (1 min; min / median / max)", meta.get("load", "n/a")]]))
    used = sorted({run["result"]["amp"] for run in data["runs"]
                   if isinstance(run.get("result"), dict) and "amp" in run["result"]})
    out += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), ""]
    if used:
        out += [f"Precision the cases ran in: {', '.join('float32' if a == 'none' else a + ' autocast' for a in used)} "
                "(`--amp bf16` runs in float32 on a CPU without native bf16, see `dgseg.engine.precision`).", ""]
    out.append(
        "How it measures: each case is one fresh process (`python -m benchmarks.cases`), so its peak memory is "
        "its own. Training: `dgseg.build_model(cfg)` (Mask2Former head at the recipe's sizes, random weights), "
        "`model.loss` + backward + AdamW (`dgseg.engine.optim.build_optimizer`) on random images with blocky "
        "labels; warm-up step(s) first, then timed steps; the step time is the median of all timed steps of "
        "all rounds (rounds interleave the methods). *peak MiB*: peak RSS minus the RSS after the imports "
        "(weights + gradients + optimizer state + activations + allocator slack; on CUDA "
        "`max_memory_allocated`). *saved act. MiB*: bytes autograd saved for the backward in one step "
        "(counted once per storage, the weights left out): the activation memory, without allocator noise. "
        "*CPU s/step*: process CPU time (all its threads). Inference: `model.predict` on one random "
        f"{image} image after a one-window warm-up. "
        f"Cases run {settings.get('jobs', 1)} at a time (the paper-size cases alone). "
        f"CPU threads per case: **{settings.get('threads') or 'all'}**"
        + (" (one thread per case: this machine's two cores are shared with other jobs, and a two-thread "
           "process loses whole time slices at every parallel barrier when a core is taken, which made "
           "two-thread timings of identical steps swing by up to 9x; one thread per case gives stable "
           "timings and ratios). With one thread, the ratios (*time / full*, the goals) use the CPU time of "
           "the step, which is the time its one thread ran: the wall time also holds the time the process "
           "waited for a core or was stopped by other jobs (both happened on this machine while the harness was developed), so it is shown "
           "but not used." if settings.get("threads") == 1 else ".")
    )
    if settings.get("in_process"):
        out += ["", "_In-process run (a test): the memory figures are not per case._"]
    train_r, train_s = train_rows(merged, "train")
    out += ["", "## 1. Training step", "", table(TRAIN_HEADER, train_r)]
    paper_r, paper_s = train_rows(merged, "paper")
    if paper_r:
        out += ["", f"### At the paper's size ({settings.get('paper_crop')} crops, batch {settings.get('paper_batch')})",
                "", table(TRAIN_HEADER, paper_r)]
    checks = []
    for summary in (train_s, paper_s):
        for model, methods in summary.items():
            for method, s in methods.items():
                c = s.get("checks", {})
                if c:
                    checks.append(f"{MODEL_LABELS.get(model, model)} {method}: frozen parameters with a gradient "
                                  f"{c.get('frozen_params_with_grad')}, backbone parameters with a gradient "
                                  f"{c.get('backbone_params_with_grad')}")
    if checks:
        out += ["", "Gradient check after the first backward (a frozen weight must get no gradient; only full "
                "fine-tuning may give backbone parameters one): " + "; ".join(checks) + "."]
    slide_batch = settings.get("slide_batch", 6)
    infer_r, infer_s = infer_rows(merged, slide_batch)
    if infer_r:
        out += ["", f"## 2. Inference (one {image} image)", ""]
        out.append(table(["model", "method", "whole s, wall (CPU)", f"slide s (batch {slide_batch}), wall (CPU)",
                          "slide s (batch 1), wall (CPU)",
                          "whole / frozen", "slide / frozen", "peak MiB whole", "peak MiB slide",
                          f"slide batch {slide_batch} speed-up"], infer_r))
        out += ["", "Full fine-tuning runs the same network as the frozen backbone at inference (only the weights "
                f"differ), so it is not measured separately. Sliding window: crop {settings.get('slide_crop')}, "
                f"stride {settings.get('stride')}."]
    out += ["", "## 3. Goals", "", table(["goal", "where", "measured", "target", "status"],
                                        goal_rows(train_s, paper_s, infer_s, image))]
    scale_model = settings.get("scaling_model")
    scale_r = scaling_rows(merged, scale_model if scale_model not in (None, "none") else None)
    if scale_r:
        out += ["", "## 4. Scaling of Rein with crop and batch size (measured)", "",
                table(SCALING_HEADER, scale_r), "",
                "Step times are " + ("CPU seconds of the one-thread step" if settings.get("threads") == 1
                                     else "wall seconds") + "; memory as in section 1."]
    flops_r = flops_rows(merged)
    if flops_r:
        out += ["", "## 5. FLOPs per step and a GPU projection", "", table(FLOPS_HEADER, flops_r), "",
                "### Projection for the paper recipe on one modern GPU (a projection, not a measurement)", "",
                projection(merged, settings.get("paper_model") or "l", settings.get("paper_crop", 512),
                           settings.get("paper_batch", 4))]
    if notes:
        out += ["", notes.strip()]
    out += ["", "## Reproduce", "", "```", meta["command"], "```", ""]
    return "\n".join(out)


def write(data: dict, path: str | Path, notes_path: str | Path | None = None) -> str:
    notes = None
    if notes_path and notes_path != "none" and Path(notes_path).is_file():
        notes = Path(notes_path).read_text()
    text = render(data, notes)
    write_atomic(path, text)
    return text
