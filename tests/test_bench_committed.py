"""The committed comparison runs (``benchmarks/bench``, ``benchmarks/bench-48000``) are what ``dgseg bench``
builds today: ``configs/bench.yaml`` and each method's overrides pinned to the runs the README's tables and
figures report. A change to the benchmark setting (head size, crop, lengths, lr, a method's definition) fails
here, naming the run and the key, instead of leaving the committed numbers describing another setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgseg.bench import bench_config, run_state
from dgseg.bench_report import collect

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# folder -> the --iters it was built with (None: bench.yaml's own 12,000)
COMMITTED = {"bench": None, "bench-48000": 48000}


def _runs() -> list[tuple[str, str, int]]:
    """(folder, method, seed) of every finished run, read as the report reads them (``bench_report.collect``)."""
    return [(folder, method, seed) for folder in COMMITTED
            for method, seeds in collect(BENCHMARKS / folder).items() for seed in seeds]


def test_the_committed_comparisons_hold_finished_runs_of_every_method():
    runs = _runs()
    assert {m for f, m, _ in runs if f == "bench"} == {"rein", "rein-nolink", "frozen", "full", "lora",
                                                       "adaptformer", "vpt"}
    assert len([r for r in runs if r[0] == "bench"]) == 21
    assert {"rein", "frozen", "full"} <= {m for f, m, _ in runs if f == "bench-48000"}


@pytest.mark.parametrize("folder,method,seed", _runs(), ids=lambda v: str(v))
def test_each_committed_run_is_what_dgseg_bench_builds_today(folder, method, seed):
    cfg = bench_config(method, seed, COMMITTED[folder], [])
    assert run_state(BENCHMARKS / folder / method / f"seed{seed}", cfg) == "done"
