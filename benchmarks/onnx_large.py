"""An ONNX export over 2 GB, run for real: the path the tests only simulate (README, Export).

    python -m benchmarks.onnx_large [--config configs/rein_sam_h_gta.yaml] [--size 512 512] [--out DIR]

Builds the config's model with a randomly initialised backbone (``model.backbone.weights`` unset: the size and
the graph are the shipped config's, the values do not matter to the export), then does what ``dgseg export
--format onnx`` does after loading a checkpoint: ``export_onnx`` (PyTorch writes a model over 2 GB as one file
per tensor; dgseg gathers them into ``<out>.data``) and ``check_onnx`` (onnxruntime on a random image against
PyTorch). Prints, and writes to ``DIR/onnx_large.json``: the parameter count, the float32 weight bytes, the
files that landed with their sizes, the max abs difference, wall times and the process's peak memory.
The default, Rein on SAM ViT-H (632 M backbone parameters, 2.5 GB of float32 weights), is the largest
shipped config.
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    import dgseg
    from dgseg.atomic import write_atomic
    from dgseg.config import load_config
    from dgseg.engine.inference import check_onnx, export_onnx, require_onnx
    from dgseg.engine.onnx_files import data_file_of
    from dgseg.machine import machine_line, peak_rss_mb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/rein_sam_h_gta.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="default: the crop")
    parser.add_argument("--out", default="onnx-large")
    args = parser.parse_args(argv)
    require_onnx()  # before the large model is built and exported

    cfg = load_config(args.config)
    cfg.model.backbone.weights = None  # random weights: no checkpoint file is needed to test the export
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = dgseg.build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    built = time.perf_counter() - t0
    size = tuple(args.size) if args.size else tuple(cfg.data.crop_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_file = out / f"{cfg.name}.onnx"
    t0 = time.perf_counter()
    path = export_onnx(model, cfg, onnx_file, size, replace=True)
    exported = time.perf_counter() - t0
    t0 = time.perf_counter()
    diff = check_onnx(model, path, size)
    checked = time.perf_counter() - t0
    result = {
        "config": args.config, "size": list(size), "parameters": params, "weight_bytes": weight_bytes,
        "files": {f.name: {"bytes": f.stat().st_size, "mode": oct(stat.S_IMODE(f.stat().st_mode))}
                  for f in (path, data_file_of(path)) if f.exists()},
        "max_abs_difference": diff, "build_s": round(built, 1), "export_s": round(exported, 1),
        "check_s": round(checked, 1),
        "peak_rss_gib": None if (peak := peak_rss_mb()) is None else round(peak / 1024, 2),
        "machine": machine_line(), "precision": "float32",
    }
    write_atomic(out / "onnx_large.json", json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from dgseg.errors import run_main

    sys.exit(run_main("python -m benchmarks.onnx_large", main))
