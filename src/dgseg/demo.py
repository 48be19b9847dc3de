"""``dgseg demo``: train on the synthetic source style, test on unseen styles, write a report.

Every method trains in its own process (so each peak-memory figure is its own) through the same
``train`` / ``evaluate`` code as real experiments, from the shipped ``configs/demo.yaml``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
import warnings
from pathlib import Path

import torch

from dgseg import metrics, strict_json
from dgseg.atomic import check_out_folder, write_atomic
from dgseg.config import Config, ConfigError, dump_config, load_config, parse_override
from dgseg.machine import machine_line, peak_rss_mb, usable_cores

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
QUICK = ["train.max_iters=30", "train.checkpoint_interval=30", "train.log_interval=5"]
QUICK_VAL_LENGTH = 4
METHODS = {
    "rein": [],
    "frozen": ["model.adapter.name=frozen", "model.adapter.link=false"],
    "full": ["model.adapter.name=full", "model.adapter.link=false"],
    # the paper's LoRA rank 8: without it LoRA would take demo.yaml's `adapter.rank: 16`, which is Rein's
    "lora": ["model.adapter.name=lora", "model.adapter.link=false", "model.adapter.rank=8"],
}
"""Method -> overrides of demo.yaml. ``model.adapter.rank`` and ``tokens`` are shared keys (Rein's rank and
token count; LoRA's rank; VPT's prompt count), so a method that reads one sets it."""


def method_overrides(command: str, methods: dict[str, list[str]], method: str, overrides: list[str]) -> list[str]:
    """The method's own overrides followed by the user's ``--set`` ones.

    A ``--set`` that gives a key the method defines itself another value is an error: it would silently
    change the method (``--set model.adapter.rank=32`` meant for Rein would also make LoRA rank 32, and
    ``model.adapter.link=true`` would link the frozen head's queries). The same value is allowed."""
    own = {}  # key -> (the method's own override, its value)
    for item in methods[method]:
        key, value = parse_override(item)
        own[key] = (item, value)
    for item in overrides:
        try:
            key, value = parse_override(item)
        except ConfigError:
            continue  # load_config names the malformed override
        if key in own and value != own[key][1]:
            raise ValueError(
                f"{command}: --set {item} changes what defines the method '{method}' ({own[key][0]}); "
                f"leave '{method}' out with --methods, or drop that --set")
    return methods[method] + list(overrides)


def demo_config(method: str, quick: bool, overrides: list[str]) -> Config:
    cfg = load_config(DEMO_CONFIG, method_overrides("demo", METHODS, method, [*(QUICK if quick else []),
                                                                              *overrides]))
    if quick:
        for spec in cfg.data.val:
            spec.length = min(spec.length or QUICK_VAL_LENGTH, QUICK_VAL_LENGTH)
    cfg.name = f"demo-{method}"
    return cfg


def _train_child(cfg_yaml: str, out_dir: str, summary_path: str) -> None:
    """Runs in a fresh process: train + evaluate, then write a summary with timing and peak memory."""
    import yaml

    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    cfg = config_from_dict(yaml.safe_load(cfg_yaml))
    torch.set_num_threads(usable_cores())
    result = train(cfg, out_dir, progress=True, force=True)  # a rerun moves the last one aside
    if result.get("stopped"):  # SIGINT/SIGTERM: train saved a checkpoint; there is nothing to summarise
        print(f"demo: training stopped at iteration {result['step']}; checkpoint in {out_dir}/checkpoints",
              flush=True)
        raise SystemExit(3)
    peak_mb = peak_rss_mb()
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    write_atomic(summary_path, json.dumps({
        "eval": result["eval"], "train_time_s": result["train_time_s"], "peak_memory_mb": peak_mb,
        "final_loss": sum(result["losses"][-10:]) / max(len(result["losses"][-10:]), 1),
    }))


def run_method(method: str, cfg: Config, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.json"
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_train_child, args=(dump_config(cfg), str(out), str(summary)))
    proc.start()
    proc.join()
    if proc.exitcode == 3:
        raise RuntimeError(f"demo: training '{method}' was interrupted; its last checkpoint is in {out}/checkpoints "
                           f"(continue it with: dgseg train {out}/config.yaml --out {out} --resume)")
    if proc.exitcode != 0 or not summary.exists():
        raise RuntimeError(f"demo: training '{method}' failed (exit code {proc.exitcode}); see the output above")
    return json.loads(summary.read_text())


def _example_rows(method_dir: Path, cfg: Config) -> list[dict]:
    """One (image, ground truth, prediction) row per evaluated domain, from the trained checkpoint."""
    from dgseg.config import domain_name
    from dgseg.data.transforms import denormalize
    from dgseg.engine.data import build_eval_set
    from dgseg.engine.evaluate import predict_labels
    from dgseg.engine.inference import load_model

    model, _ = load_model(method_dir)
    rows = []
    for spec in cfg.data.val:
        item = build_eval_set(spec, cfg=cfg)[0]
        pred = predict_labels(model, item["image"][None], tuple(item["label"].shape), "whole", cfg.eval.crop,
                              cfg.eval.stride, 1)[0]
        image = (denormalize(item["image"]).clamp(0, 255)).to(torch.uint8)
        rows.append({"domain": domain_name(spec, cfg.data.val), "image": image, "label": item["label"].numpy(),
                     "pred": pred.numpy()})
    return rows


def _precision(cfg: Config) -> str:
    from dgseg.engine.distributed import default_device
    from dgseg.engine.precision import resolve_amp

    device = default_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        amp = resolve_amp(cfg.train.amp, device)
    if amp == cfg.train.amp:
        return "float32" if amp == "none" else f"{amp} autocast"
    where = "this GPU" if device.type == "cuda" else "this CPU"
    return f"float32 (train.amp={cfg.train.amp} asked; {where} has no native {cfg.train.amp})"


def robustness_section(found: dict[str, dict]) -> str:
    """Report rows: per method, clean mIoU, mPC and rPC on the source's held-out scenes (Cityscapes-C)."""
    first = next(iter(found.values()))
    names, sev = ", ".join(first["corruptions"]), ",".join(map(str, first["severities"]))
    lines = ["| method | domain | clean mIoU | mPC | rPC % |", "|---|---|---|---|---|"]
    for method, r in found.items():
        for domain, d in r["domains"].items():
            lines.append(f"| {method} | {domain} | {d['clean']:.1f} | {d['mPC']:.1f} | {d['rPC']:.1f} |")
    return (f"## Robustness (Cityscapes-C protocol)\n\nCorruptions {names} at severities {sev}, seed "
            f"{first['seed']}; mPC = mean mIoU over them, rPC = 100 x mPC / clean mIoU. Inference: "
            f"{first['inference']['precision']}. Per corruption and severity: <method>/corruptions.md.\n\n"
            + "\n".join(lines) + "\n\n")


def _gigabytes(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.2f} GB"


def report_markdown(results: dict[str, dict], cfg: Config, settings: str, wall_s: float, extra: str = "") -> str:
    domains = list(next(iter(results.values()))["eval"].keys())
    source = cfg.data.source
    targets = [d for d in domains if d != source]
    head = ["method", *[f"{d}{' (source)' if d == source else ''}" for d in domains], "mean targets", "rPD",
            "trainable params", "train time", "peak memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in results.items():
        ev = r["eval"]
        mean_t = sum(ev[d]["mIoU"] for d in targets) / max(len(targets), 1)
        rpd = metrics.rpd(mean_t, ev[source]["mIoU"]) if source else float("nan")
        cells = [method, *[f"{ev[d]['mIoU']:.1f}" for d in domains], f"{mean_t:.1f}", f"{rpd:.1f}",
                 f"{r['trainable']:,}", f"{r['train_time_s'] / 60:.1f} min", _gigabytes(r["peak_memory_mb"])]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    return (
        f"# dgseg demo report\n\n"
        f"Trained on `{source}` (synthetic source style), evaluated on it (held-out scenes) and on unseen "
        f"target styles. mIoU in %, over the classes present; rPD = 100 x mean target mIoU / source mIoU.\n\n"
        f"{table}\n\n"
        f"Machine: {machine_line()}. Precision: {_precision(cfg)}. "
        f"Whole demo wall time: {wall_s / 60:.1f} min.\n\n"
        f"{extra}## Settings\n\n{settings}\n"
    )


def demo_robustness(out: Path, methods: list[str], corruptions: list[str], severities: list[int]) -> dict[str, dict]:
    """Corruption robustness of each trained method on the source domain's held-out scenes."""
    from dgseg.config import domain_name, source_entry
    from dgseg.engine.distributed import default_device
    from dgseg.engine.eval_record import evaluation_record
    from dgseg.engine.inference import load_model
    from dgseg.engine.robustness import evaluate_corruptions, write_corruptions

    found = {}
    device = default_device()  # the GPU the methods trained on, when there is one
    for method in methods:
        model, cfg = load_model(out / method)
        specs = [source_entry(cfg) or cfg.data.val[0]]
        print(f"== demo: corruption robustness of {method} on {domain_name(specs[0], cfg.data.val)} ==", flush=True)
        found[method] = evaluate_corruptions(model.to(device), cfg, corruptions, severities, device=device,
                                             specs=specs)
        write_corruptions(found[method], out / method, title=f"demo {method}",
                          evaluated=evaluation_record(out / method, cfg, device, "dgseg demo"))
    return found


def run_demo(quick: bool = False, compare: bool = False, out: str | Path = "runs/demo",
             overrides: list[str] | None = None, methods: list[str] | None = None,
             corruptions: list[str] | None = None, severities: list[int] | None = None) -> dict:
    """Train and evaluate ``methods`` (default: rein; ``compare``: rein, frozen, full, lora); write the report.
    With ``corruptions``: also each method's robustness on the source domain (a report section)."""
    import dgseg
    from dgseg.data.classes import config_class_set
    from dgseg.models.pretrained import EMBEDDED, embedded_weights_path
    from dgseg.viz import report_figure

    t0 = time.perf_counter()
    out = check_out_folder(out)
    methods = methods or (list(METHODS) if compare else ["rein"])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"demo: unknown methods {unknown}; choose from {', '.join(METHODS)}")
    # every method's config (a --set too) is checked before any folder is made or any method trains
    configs = {method: demo_config(method, quick, overrides or []) for method in methods}
    results: dict[str, dict] = {}
    for method, cfg in configs.items():  # run_method makes out/<method>
        if cfg.model.backbone.weights in EMBEDDED:
            embedded_weights_path(cfg.model.backbone.weights)  # import once, before the children start
        counts = dgseg.build_model(cfg).parameter_counts()
        print(f"== demo: training {method} ({counts['trainable']:,} trainable parameters, "
              f"{cfg.train.max_iters} iterations) ==", flush=True)
        r = run_method(method, cfg, out / method)
        r["trainable"] = counts["trainable"]
        results[method] = r
    extra = ""
    if corruptions:
        robust = demo_robustness(out, methods, corruptions, severities or [1, 2, 3, 4, 5])
        extra = robustness_section(robust)
        for method in methods:
            results[method]["robustness"] = robust[method]["domains"]
    cfg = demo_config(methods[0], quick, overrides or [])
    settings = "```yaml\n" + dump_config(cfg) + "```"
    md = report_markdown(results, cfg, settings, time.perf_counter() - t0, extra)
    write_atomic(out / "report.md", md)
    rows = _example_rows(out / methods[0], cfg)
    bars = {m: {d: v["mIoU"] for d, v in r["eval"].items()} for m, r in results.items()}
    classes = config_class_set(cfg)
    report_figure(rows, bars, out / "report.png", palette=classes.palette, class_names=classes.names)
    write_atomic(out / "results.json", strict_json.dumps(results, indent=2))
    from dgseg.report import write_report

    page = write_report([out / m for m in methods], out, title="dgseg demo")
    print(md.split("## Settings")[0])
    print(f"report: {out / 'report.md'}, figure: {out / 'report.png'}, page: {page}, runs: {', '.join(str(out / m) for m in methods)}")
    return results
