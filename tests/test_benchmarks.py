"""The benchmark harness (benchmarks/run.py) end to end at a tiny size: it runs and writes the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_RUN = [
    "--models", "tiny", "--paper-model", "none",
    "--infer-models", "tiny", "--scaling-model", "tiny", "--crop", "32", "--scaling-crops", "48",
    "--scaling-batches", "2", "--steps", "1", "--rounds", "1", "--image", "48x64", "--slide-crop", "32",
    "--stride", "21", "--slide-batch", "4", "--in-process", "--notes", "none",
]


def run_harness(tmp_path: Path, *extra: str) -> tuple[str, dict]:
    out = tmp_path / "BENCH.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", *TINY_RUN, "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


def rows_of(text: str, section: str) -> list[list[str]]:
    """The table rows (cells) of a report section ('## 1. Training step' ...), header and separator dropped."""
    part = text.split(section, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_harness_writes_the_report_at_a_tiny_size(tmp_path):
    text, data = run_harness(tmp_path)
    assert text.startswith("# dgseg benchmarks")
    for heading in ("## Machine, versions, command", "## 1. Training step", "## 2. Inference", "## 3. Goals",
                    "## 4. Scaling", "## 5. FLOPs per step", "## Reproduce"):
        assert heading in text, heading
    assert "python -m benchmarks.run --models tiny" in text  # the command to reproduce
    assert "| torch |" in text and "| timm |" in text and "| CPU |" in text

    train = rows_of(text, "## 1. Training step")
    header = train[0]
    for col in ("method", "step s (wall, median)", "CPU s/step (median)", "peak MiB", "saved act. MiB", "time / full",
                "peak / full", "GFLOP/step"):
        assert col in header, col
    body = [r for r in train[2:] if r[0] != "model" and not set(r[0]) <= {"-"}]
    methods = [r[header.index("method")] for r in body]
    for name in ("Rein", "Rein + grad checkpointing", "full fine-tuning", "frozen backbone", "LoRA (r=8, q/v)"):
        assert name in methods, name
    full = body[methods.index("full fine-tuning")]
    assert full[header.index("time / full")] == "1.00" and full[header.index("peak / full")] == "1.00"
    for row in body:
        assert float(row[header.index("step s (wall, median)")]) > 0
        assert float(row[header.index("GFLOP/step")]) > 0

    infer = rows_of(text, "## 2. Inference")
    assert {r[1] for r in infer[2:]} == {"Rein", "frozen backbone", "LoRA (r=8, q/v)"}
    goals = rows_of(text, "## 3. Goals")
    assert goals[0] == ["goal", "where", "measured", "target", "status"]
    names = {r[0] for r in goals[2:]}
    assert {"Rein step time / full", "Rein peak memory / full", "Rein inference / frozen (whole image)",
            "sliding window: batched vs one window at a time (speed-up)",
            "grad checkpointing: Rein peak-memory cut", "grad checkpointing: Rein step time x"} <= names
    assert all(r[4] in ("**met**", "**not met**") for r in goals[2:])
    scaling = rows_of(text, "## 4. Scaling")
    assert {r[1] for r in scaling[2:]} >= {"32x1", "48x1", "32x2"}

    # the raw runs: nothing failed, the frozen weights got no gradient, batched windows equal one at a time
    assert not [r["key"] for r in data["runs"] if "error" in r["result"]]
    for run in data["runs"]:
        if run["spec"]["kind"] == "train":
            assert run["result"]["checks"]["frozen_params_with_grad"] == 0
            if run["spec"]["adapter"] != "full":
                assert run["result"]["checks"]["backbone_params_with_grad"] == 0
        if run["spec"]["kind"] == "infer":
            for phase in run["result"]["phases"][1:]:
                if phase["mode"] == "slide":
                    assert phase["max_abs_diff_vs_first_slide"] < 0.05


    # the report is a function of the JSON alone (what --report-only rewrites it from)
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.report import render
    finally:
        sys.path.remove(str(ROOT))
    assert render(data) == text


def test_onnx_large_exports_and_checks_the_config_it_is_given(tmp_path, monkeypatch):
    """benchmarks/onnx_large.py at a tiny size: the files that landed (size and mode), onnxruntime's difference."""
    import pytest
    import yaml

    pytest.importorskip("onnxruntime")
    monkeypatch.syspath_prepend(str(ROOT))
    from tiny import tiny_dict

    from benchmarks.onnx_large import main
    from dgseg.atomic import file_mode

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_dict()))
    found = main(["--config", str(config), "--size", "32", "48", "--out", str(tmp_path / "out")])
    assert set(found["files"]) == {"tiny.onnx"} and found["files"]["tiny.onnx"]["mode"] == oct(file_mode())
    assert found["max_abs_difference"] <= 1e-3 and found["size"] == [32, 48]
    assert json.loads((tmp_path / "out" / "onnx_large.json").read_text()) == found
