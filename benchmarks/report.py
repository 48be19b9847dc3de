"""BENCHMARKS.md from the collected runs: tables, ratios to full fine-tuning, goal checks, projection."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.cases import MODEL_LABELS

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

METHOD_ORDER = ["rein", "rein+ckpt", "full", "frozen", "lora"]
METHOD_LABELS = {
    "rein": "Rein",
    "rein+ckpt": "Rein + grad checkpointing",
    "full": "full fine-tuning",
    "frozen": "frozen backbone",
    "lora": "LoRA (r=8, q/v)",
}


# ------------------------------------------------------------------------------------------------ merging
def merge_runs(runs: list[dict]) -> dict[str, dict]:
    """Runs of the same case key (one per round) merged: timing lists concatenated, memory per round kept."""
    merged: dict[str, dict] = {}
    for run in runs:
        key, spec, result = run["key"], run["spec"], run["result"]
        entry = merged.setdefault(key, {"spec": spec, "rounds": 0, "errors": []})
        if "error" in result:
            entry["errors"].append(result["error"])
            continue
        entry["rounds"] += 1
        if spec["kind"] == "train":
            for name in ("step_s", "cpu_s", "fwd_s", "bwd_s", "opt_s", "warmup_s"):
                entry.setdefault(name, []).extend(result[name])
            for name in ("peak_mib", "model_mib", "saved_mib"):
                entry.setdefault(name + "_rounds", []).append(result[name])
            for name in ("trainable", "total_params", "checks", "threads", "device"):
                entry[name] = result[name]
            entry.setdefault("loadavg", []).append(result.get("loadavg_start"))
        elif spec["kind"] == "infer":
            phases = entry.setdefault("phases", {})
            for ph in result["phases"]:
                p = phases.setdefault(f"{ph['mode']}:{ph['batch']}", {"time_s": [], "cpu_s": [], "peak_mib": []})
                p["time_s"].append(ph["time_s"])
                p["cpu_s"].append(ph["cpu_s"])
                p["peak_mib"].append(ph["peak_mib"])
                if "max_abs_diff_vs_first_slide" in ph:
                    p.setdefault("max_abs_diff", []).append(ph["max_abs_diff_vs_first_slide"])
            entry["windows"] = result.get("windows")
            entry.setdefault("loadavg", []).append(result.get("loadavg_start"))
        else:
            entry.update(result)
    return merged


def med(values) -> float | None:
    values = [v for v in (values or []) if v is not None]
    return statistics.median(values) if values else None


def _min(values) -> float | None:
    values = [v for v in (values or []) if v is not None]
    return min(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def f(x, digits: int = 2, suffix: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, int) or (isinstance(x, float) and abs(x) >= 1000):
        return f"{x:,.0f}{suffix}"
    return f"{x:.{digits}f}{suffix}"


def g(x) -> str:
    """Three significant digits (FLOP counts from a tiny test model to ViT-L)."""
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def params(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _method(spec: dict) -> str:
    return spec["adapter"] + ("+ckpt" if spec.get("ckpt") else "")


def _cases(merged: dict, section: str) -> dict:
    return {k: v for k, v in merged.items() if k.startswith(section + "/")}


def _flops_for(merged: dict, model: str, method: str, crop: int, batch: int, train: bool = True) -> dict | None:
    entry = merged.get(flops_key(model, method, crop, batch, train))
    return entry if entry and "flops" in entry else None


def flops_key(model: str, method: str, crop: int, batch: int, train: bool = True) -> str:
    return f"flops/{model}/{method}/{crop}x{batch}/{'train' if train else 'forward'}"


def single_thread(entry: dict) -> bool:
    return entry.get("spec", {}).get("threads") == 1


def step_times(entry: dict) -> list[float]:
    """The step times the ratios use: with one thread per case, the CPU time of the step (the time its one
    thread ran); wall time then also holds time the process was descheduled or stopped by other jobs."""
    return entry.get("cpu_s" if single_thread(entry) else "step_s") or []


# ------------------------------------------------------------------------------------------------ sections
def train_rows(merged: dict, section: str) -> tuple[list[list[str]], dict]:
    """Rows of a training table and, per model, the summary numbers the goals use."""
    by_model: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in _cases(merged, section).values():
        by_model[entry["spec"]["model"]][_method(entry["spec"])] = entry
    rows, summary = [], {}
    for model, methods in by_model.items():
        full = methods.get("full")
        full_t = med(step_times(full)) if full else None
        full_tmin = _min(step_times(full)) if full else None
        full_wall = med(full.get("step_s")) if full else None
        full_m = med(full.get("peak_mib_rounds")) if full else None
        full_s = med(full.get("saved_mib_rounds")) if full else None
        summary[model] = {}
        for method in sorted(methods, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99):
            e = methods[method]
            spec = e["spec"]
            if e.get("errors") and not e.get("rounds"):
                rows.append([MODEL_LABELS.get(model, model), METHOD_LABELS.get(method, method),
                             f"{spec['crop']}x{spec['batch']}", "failed: " + e["errors"][0][:120]]
                            + [""] * 11)
                continue
            t, tmin, wall = med(step_times(e)), _min(step_times(e)), med(e["step_s"])
            peak, saved = med(e["peak_mib_rounds"]), med(e["saved_mib_rounds"])
            fl = _flops_for(merged, model, method, spec["crop"], spec["batch"])
            gflop = fl["flops"] / 1e9 if fl else None
            summary[model][method] = {
                "time": t, "time_min": tmin, "peak": peak, "saved": saved, "wall": wall,
                "time_vs_full": ratio(t, full_t), "time_min_vs_full": ratio(tmin, full_tmin),
                "wall_vs_full": ratio(wall, full_wall), "cpu_time": single_thread(e),
                "peak_vs_full": ratio(peak, full_m), "saved_vs_full": ratio(saved, full_s),
                "samples": len(e["step_s"]), "crop": spec["crop"], "batch": spec["batch"],
                "checks": e.get("checks", {}),
            }
            rows.append([
                MODEL_LABELS.get(model, model), METHOD_LABELS.get(method, method), f"{spec['crop']}x{spec['batch']}",
                params(e.get("trainable")), f(wall), f(_min(e["step_s"])), f(med(e["cpu_s"])),
                f"{f(med(e['fwd_s']))} / {f(med(e['bwd_s']))} / {f(med(e['opt_s']), 3)}",
                f(peak, 0), f(saved, 0), f(ratio(t, full_t)), f(ratio(wall, full_wall)), f(ratio(peak, full_m)),
                g(gflop), g(ratio(gflop, t)),
            ])
    return rows, summary


TRAIN_HEADER = ["model", "method", "crop x batch", "trainable", "step s (wall, median)", "step s (wall, min)",
                "CPU s/step (median)", "fwd / bwd / opt s (wall)", "peak MiB", "saved act. MiB", "time / full",
                "wall / full", "peak / full",
                "GFLOP/step", "GFLOP/s"]


def infer_rows(merged: dict, slide_batch: int) -> tuple[list[list[str]], dict]:
    by_model: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in _cases(merged, "infer").values():
        by_model[entry["spec"]["model"]][entry["spec"]["adapter"]] = entry
    rows, summary = [], {}
    for model, methods in by_model.items():
        summary[model] = {}

        def phase(e, name, field=None):
            field = field or ("cpu_s" if single_thread(e) else "time_s")
            return med(e.get("phases", {}).get(name, {}).get(field))

        def shown(e, name):  # "wall (CPU)" seconds
            return f"{f(phase(e, name, 'time_s'))} ({f(phase(e, name, 'cpu_s'))})"

        frozen = methods.get("frozen")
        fw = phase(frozen, "whole:1") if frozen else None
        fs = phase(frozen, f"slide:{slide_batch}") if frozen else None
        for method in sorted(methods, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99):
            e = methods[method]
            if e.get("errors") and not e.get("rounds"):
                rows.append([MODEL_LABELS.get(model, model), METHOD_LABELS.get(method, method),
                             "failed: " + e["errors"][0][:120]] + [""] * 7)
                continue
            whole, slide, slide1 = phase(e, "whole:1"), phase(e, f"slide:{slide_batch}"), phase(e, "slide:1")
            diffs = e.get("phases", {}).get(f"slide:{slide_batch}", {}).get("max_abs_diff")
            summary[model][method] = {
                "whole": whole, "slide": slide, "slide1": slide1, "whole_vs_frozen": ratio(whole, fw),
                "slide_vs_frozen": ratio(slide, fs), "batch_speedup": ratio(slide1, slide),
                "max_abs_diff": max(diffs) if diffs else None, "windows": e.get("windows"),
                "samples": e.get("rounds"),
            }
            rows.append([
                MODEL_LABELS.get(model, model), METHOD_LABELS.get(method, method), shown(e, "whole:1"),
                shown(e, f"slide:{slide_batch}"), shown(e, "slide:1") if slide1 else "n/a",
                f(ratio(whole, fw)), f(ratio(slide, fs)),
                f(phase(e, "whole:1", "peak_mib"), 0), f(phase(e, f"slide:{slide_batch}", "peak_mib"), 0),
                f(ratio(slide1, slide)),
            ])
    return rows, summary


def goal_rows(train: dict, paper: dict, infer: dict) -> list[list[str]]:
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
        where = MODEL_LABELS.get(model, model) + ", 1024x2048" if model != "tiny" else "tiny"
        rows.append(["Rein inference / frozen (whole image)", where, f(rein["whole_vs_frozen"]),
                     f"<= {GOAL_INFER_VS_FROZEN}", status(rein["whole_vs_frozen"], GOAL_INFER_VS_FROZEN)])
        rows.append(["Rein inference / frozen (sliding window)", where, f(rein["slide_vs_frozen"]),
                     f"<= {GOAL_INFER_VS_FROZEN}", status(rein["slide_vs_frozen"], GOAL_INFER_VS_FROZEN)])
        rows.append(["sliding window: batched vs one window at a time (speed-up)", where,
                     f"{f(rein['batch_speedup'])} (max abs. difference of the scores {f(rein['max_abs_diff'], 4)})",
                     f">= {GOAL_SLIDE_BATCH_SPEEDUP}",
                     status(rein["batch_speedup"], GOAL_SLIDE_BATCH_SPEEDUP, below=False)])
    return rows


def scaling_rows(merged: dict, scaling_model: str | None = None) -> list[list[str]]:
    """Rein at several crops and batches; the main table's Rein case of the same model joins in."""
    entries = list(_cases(merged, "scale").values())
    if entries or scaling_model:
        model = scaling_model or entries[0]["spec"]["model"]
        main = merged.get(f"train/{model}/rein")
        if main and main.get("rounds"):
            entries.append(main)
    entries.sort(key=lambda e: (e["spec"]["model"], e["spec"]["crop"], e["spec"]["batch"]))
    rows, base = [], None
    for e in entries:
        spec = e["spec"]
        if e.get("errors") and not e.get("rounds"):
            rows.append([MODEL_LABELS.get(spec["model"], spec["model"]), f"{spec['crop']}x{spec['batch']}",
                         "failed: " + e["errors"][0][:120]] + [""] * 7)
            continue
        t, peak, saved = med(step_times(e)), med(e["peak_mib_rounds"]), med(e["saved_mib_rounds"])
        fl = _flops_for(merged, spec["model"], "rein", spec["crop"], spec["batch"])
        gflop = fl["flops"] / 1e9 if fl else None
        pixels = spec["crop"] ** 2 * spec["batch"]
        if base is None:
            base = (t, pixels, peak, saved)
        rows.append([
            MODEL_LABELS.get(spec["model"], spec["model"]), f"{spec['crop']}x{spec['batch']}", f(t),
            f(t / spec["batch"] if t else None), f(ratio(t, base[0]) / (pixels / base[1]) if t else None),
            f(peak, 0), f(saved, 0), f(saved / spec["batch"] if saved else None, 0), g(gflop),
            f(ratio(gflop, t) if gflop else None, 0),
        ])
    return rows


SCALING_HEADER = ["model", "crop x batch", "step s", "s / image", "time per pixel vs first row", "peak MiB",
                  "saved act. MiB", "saved act. MiB / image", "GFLOP/step", "GFLOP/s"]


def flops_rows(merged: dict) -> list[list[str]]:
    rows = []
    entries = [e for e in _cases(merged, "flops").values() if "flops" in e]
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for e in entries:
        s = e["spec"]
        groups[(s["model"], s["crop"], s["batch"], s.get("train", True))][_method(s)] = e
    for (model, crop, batch, train), methods in groups.items():
        full = methods.get("full")
        for method in sorted(methods, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99):
            e = methods[method]
            rows.append([
                MODEL_LABELS.get(model, model), METHOD_LABELS.get(method, method), f"{crop}x{batch}",
                "train step" if train else "forward", f(e["flops"] / 1e12, 3), f(e["backbone_flops"] / 1e12, 3),
                "n/a" if e["spec"].get("ckpt") else f(e["adapter_flops"] / 1e12, 3), f(e["head_flops"] / 1e12, 3),
                f(ratio(e["flops"], full["flops"]) if full and train else None),
            ])
    return rows


FLOPS_HEADER = ["model", "method", "crop x batch", "pass", "TFLOP", "backbone (incl. adapter)", "adapter",
                "head", "/ full"]


def projection(merged: dict, model: str, crop: int, batch: int) -> str:
    rein = _flops_for(merged, model, "rein", crop, batch)
    full = _flops_for(merged, model, "full", crop, batch)
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
        f"{settings.get('image', '1024,2048').replace(',', 'x')} image after a one-window warm-up. "
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
        out += ["", f"## 2. Inference (one {settings.get('image', '1024,2048').replace(',', 'x')} image)", ""]
        out.append(table(["model", "method", "whole s, wall (CPU)", f"slide s (batch {slide_batch}), wall (CPU)",
                          "slide s (batch 1), wall (CPU)",
                          "whole / frozen", "slide / frozen", "peak MiB whole", "peak MiB slide",
                          f"slide batch {slide_batch} speed-up"], infer_r))
        out += ["", "Full fine-tuning runs the same network as the frozen backbone at inference (only the weights "
                f"differ), so it is not measured separately. Sliding window: crop {settings.get('slide_crop')}, "
                f"stride {settings.get('stride')}."]
    out += ["", "## 3. Goals", "", table(["goal", "where", "measured", "target", "status"],
                                        goal_rows(train_s, paper_s, infer_s))]
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
    Path(path).write_text(text)
    return text
