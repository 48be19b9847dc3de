"""The tables of BENCHMARKS.md from the collected runs: the rounds of a case merged, the number formats,
and one row builder per measured table (training, inference, scaling, FLOPs). The page itself, the goals
and the projection are in :mod:`benchmarks.report`, which re-exports these names.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from benchmarks.cases import MODEL_LABELS

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


def flops_for(merged: dict, model: str, method: str, crop: int, batch: int, train: bool = True) -> dict | None:
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
            fl = flops_for(merged, model, method, spec["crop"], spec["batch"])
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
        fl = flops_for(merged, spec["model"], "rein", spec["crop"], spec["batch"])
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
