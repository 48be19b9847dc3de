"""Corruption robustness, the Cityscapes-C protocol (Kamann & Rother, CVPR 2020) on any ``data.val`` set.

Every image of a domain is corrupted on the fly (at its native resolution, before the eval resize and
normalisation) by each corruption at each severity, seeded per image (data/corruptions.py), and scored.
Per domain: mIoU per corruption and severity, **mPC** = the mean of those mIoUs over corruptions and
severities, and **rPC** = 100 x mPC / clean mIoU (how much of the clean performance survives, in %).
Written as ``corruptions.json``, ``corruptions.md`` and ``corruptions.png`` (mIoU vs severity per family).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dgseg import strict_json
from dgseg.atomic import write_atomic
from dgseg.config import Config, DatasetSpec, domain_name
from dgseg.data.corruptions import FAMILIES, FAMILY_OF, corrupt, corruption_seed, implementation
from dgseg.engine.data import build_eval_set
from dgseg.engine.eval_sizes import check_eval_sizes
from dgseg.engine.evaluate import eval_setup, evaluate_domain


class CorruptedSet(Dataset):
    """An eval set whose images are corrupted before its transform: items as :func:`build_eval_set`'s."""

    def __init__(self, spec: DatasetSpec, name: str, severity: int, seed: int = 0, on_error: str = "raise",
                 cfg: Config | None = None) -> None:
        self.dataset = build_eval_set(spec, on_error, cfg)
        if not hasattr(self.dataset, "transform"):
            raise TypeError(f"{spec.name}: dataset has no 'transform' to apply after the corruption")
        self.transform, self.dataset.transform = self.dataset.transform, None
        self.left_out = list(getattr(self.dataset, "left_out", ()))  # files left out while pairing
        self.name, self.severity, self.seed = name, severity, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        rgb = item["image"].permute(1, 2, 0).numpy()
        try:
            out = corrupt(rgb, self.name, self.severity, corruption_seed(self.seed, self.name, self.severity,
                                                                         item["path"]))
        except ValueError as e:
            raise ValueError(f"{item['path']}: {e}") from e
        image = torch.from_numpy(out).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image, item["label"] = self.transform(image, item["label"])
        item["image"] = image
        return item


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def summarize(clean: float, miou: dict[str, dict[str, float]]) -> dict[str, Any]:
    """mPC, rPC (%), and the means per corruption and per family of ``miou[name][severity]``."""
    per_corruption = {n: _mean(list(by_sev.values())) for n, by_sev in miou.items()}
    families: dict[str, list[float]] = {}
    for n, by_sev in miou.items():
        families.setdefault(FAMILY_OF[n], []).extend(by_sev.values())
    mpc = _mean([v for by_sev in miou.values() for v in by_sev.values()])
    return {
        "clean": clean, "mPC": mpc, "rPC": 100.0 * mpc / clean if clean > 0 else float("nan"),
        "per_corruption": per_corruption, "per_family": {f: _mean(v) for f, v in families.items()},
    }


def evaluate_corruptions(model: nn.Module, cfg: Config, corruptions: list[str], severities: list[int],
                         seed: int = 0, device: torch.device | None = None, rank: int = 0, world: int = 1,
                         progress: bool = True, specs: list[DatasetSpec] | None = None) -> dict[str, Any]:
    """Clean and corrupted mIoU of every ``data.val`` entry (or ``specs``); see the module docstring."""
    device, specs, amp, was_training = eval_setup(model, cfg, device, specs)
    sets = {domain_name(s, specs): (s, build_eval_set(s, cfg.data.on_error, cfg)) for s in specs}
    check_eval_sizes(model, cfg, device, sets, before="evaluating")  # not after the domains before it are done
    domains: dict[str, Any] = {}
    for domain, (spec, dataset) in sets.items():
        clean = evaluate_domain(model, spec, cfg, device, rank, world, progress, amp, dataset=dataset, domain=domain)
        miou: dict[str, dict[str, float]] = {}
        for name in corruptions:
            miou[name] = {}
            for severity in severities:
                ds = CorruptedSet(spec, name, severity, seed, cfg.data.on_error, cfg)
                r = evaluate_domain(model, spec, cfg, device, rank, world, progress, amp, dataset=ds,
                                    desc=f"{domain} {name} {severity}", domain=domain)
                miou[name][str(severity)] = r["mIoU"]
        domains[domain] = {**summarize(clean["mIoU"], miou), "mIoU": miou, "images": clean["images"],
                           **({"skipped": clean["skipped"]} if clean.get("skipped") else {})}  # as in eval.json
    model.train(was_training)
    from dgseg.machine import machine_line

    precision = "float32" if amp == "none" else f"{amp} autocast"
    return {"protocol": "Cityscapes-C (Kamann & Rother 2020), imagecorruptions", "corruptions": list(corruptions),
            "severities": list(severities), "seed": seed, "tta": cfg.eval.tta.enabled,
            "inference": {"machine": machine_line(), "device": device.type, "precision": precision,
                          "mode": cfg.eval.mode},
            "implementation": {n: implementation(n) for n in corruptions}, "domains": domains}


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.1f}"


def _evaluated_line(results: dict[str, Any]) -> list[str]:
    if not isinstance(results.get("evaluated"), dict):
        return []
    from dgseg.engine.eval_record import header_line

    return [header_line(results["evaluated"]), ""]


def corruptions_markdown(results: dict[str, Any], title: str = "") -> str:
    """A summary table (one row per domain) and, per domain, mIoU per corruption x severity."""
    sev = results["severities"]
    fams = [f for f in FAMILIES if any(FAMILY_OF[n] == f for n in results["corruptions"])]
    head = ["domain", "clean mIoU", "mPC", "rPC %", *fams]
    lines = [f"# Corruption robustness{': ' + title if title else ''}", "", *_evaluated_line(results),
             f"Cityscapes-C protocol: {len(results['corruptions'])} corruptions x severities "
             f"{', '.join(map(str, sev))}, seed {results['seed']}. mIoU in %; mPC = mean mIoU over corruptions "
             "and severities; rPC = 100 x mPC / clean mIoU.", "",
             f"Inference: {results['inference']['machine']}, {results['inference']['precision']}"
             f"{', test-time augmentation' if results['tta'] else ''}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d, r in results["domains"].items():
        cells = [d, _fmt(r["clean"]), _fmt(r["mPC"]), _fmt(r["rPC"]), *[_fmt(r["per_family"][f]) for f in fams]]
        lines.append("| " + " | ".join(cells) + " |")
    for d, r in results["domains"].items():
        head = ["corruption", "family", *map(str, sev), "mean"]
        lines += ["", f"## {d} ({r['images']} images, clean mIoU {_fmt(r['clean'])})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n, by_sev in r["mIoU"].items():
            lines.append("| " + " | ".join([n, FAMILY_OF[n], *[_fmt(by_sev[str(s)]) for s in sev],
                                            _fmt(r["per_corruption"][n])]) + " |")
    own = [n for n, who in results["implementation"].items() if who == "dgseg"]
    if own:
        lines += ["", f"Computed by dgseg's copies of the package's definitions: {', '.join(own)} "
                      "(they fail in imagecorruptions 1.1.2 on current NumPy / scikit-image)."]
    return "\n".join(lines) + "\n"


def corruptions_figure(results: dict[str, Any], out_png: str | Path) -> Path:
    """mIoU vs severity (0 = clean), one panel per domain and corruption family, one line per corruption."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dgseg.viz import plain_text

    domains = list(results["domains"])
    fams = [f for f in FAMILIES if any(FAMILY_OF[n] == f for n in results["corruptions"])]
    fig = Figure(figsize=(3.2 * len(fams), 2.6 * len(domains)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(domains), len(fams), squeeze=False))
    sev = results["severities"]
    for i, d in enumerate(domains):
        r = results["domains"][d]
        for j, f in enumerate(fams):
            ax = axes[i, j]
            for n in (n for n in results["corruptions"] if FAMILY_OF[n] == f):
                ax.plot([0, *sev], [r["clean"], *[r["mIoU"][n][str(s)] for s in sev]], marker="o", label=n)
            ax.set_title(f"{plain_text(d)}: {f}", fontsize=9)
            ax.set_xticks([0, *sev])
            ax.set_xlabel("severity (0 = clean)", fontsize=8)
            ax.set_ylabel("mIoU %", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return write_atomic(out_png, lambda fh: fig.savefig(fh, format="png"))


def write_corruptions(results: dict[str, Any], out_dir: str | Path, title: str = "",
                      evaluated: dict | None = None) -> list[Path]:
    """``corruptions.json`` (NaN as null), ``corruptions.md`` and ``corruptions.png`` in ``out_dir``; with
    ``evaluated`` (:func:`dgseg.engine.eval_record.evaluation_record`), the checkpoint and settings they come
    from, in the record and a line under the title, as ``eval.json`` / ``eval.md``."""
    if evaluated is not None:
        results = {"evaluated": evaluated, **results}
    out = Path(out_dir)
    paths = [out / "corruptions.json", out / "corruptions.md"]
    texts = [strict_json.dumps(results, indent=2), corruptions_markdown(results, title)]
    for path, text in zip(paths, texts):
        write_atomic(path, text)
    return [*paths, corruptions_figure(results, out / "corruptions.png")]
