"""`dgseg bench`: a multi-seed comparison built in pieces, resumed, and reported with its spread."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tiny import tiny_dict

import dgseg.engine.train as train_module
from dgseg.bench import bench_config, parse_list, run_bench, run_one, run_order
from dgseg.bench_child import fair_share
from dgseg.bench_report import (
    LOG_RISE,
    PLATEAU_POINTS,
    doubling_gain,
    eval_points,
    markdown,
    quarter_rise,
    ties,
    write_report,
)
from dgseg.bench_status import bench_status, run_pace, time_left, total_left
from dgseg.demo import demo_config
from dgseg.models.adapters import ADAPTERS


@pytest.fixture
def tiny_bench(tmp_path):
    data = tiny_dict(train__max_iters=4, train__checkpoint_interval=2, train__eval_interval=2)
    path = tmp_path / "tiny_bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_interrupted_comparison_resumes_without_retraining_finished_runs(tmp_path, tiny_bench, monkeypatch):
    out = tmp_path / "bench"
    calls = []
    real_train = train_module.train

    def spy(cfg, out_dir, resume=False, **kw):
        calls.append((cfg.model.adapter.name, resume))
        result = real_train(cfg, out_dir, resume=resume, **kw)
        if len(calls) == 2 and not resume:
            raise KeyboardInterrupt  # the sitting ends after the second run trained, before its evaluation
        return result

    monkeypatch.setattr(train_module, "train", spy)
    with pytest.raises(KeyboardInterrupt):
        run_bench(["rein", "frozen"], [0], out, config=tiny_bench, isolate=False)
    assert (out / "rein" / "seed0" / "summary.json").exists()
    assert not (out / "frozen" / "seed0" / "summary.json").exists()
    rein_summary = (out / "rein" / "seed0" / "summary.json").read_bytes()

    table = run_bench(["rein", "frozen"], [0], out, config=tiny_bench, isolate=False)
    assert calls == [("rein", False), ("frozen", False), ("frozen", True)]  # rein was not trained again
    assert (out / "rein" / "seed0" / "summary.json").read_bytes() == rein_summary
    assert list(table) == ["rein", "frozen"]
    iters = [r["iter"] for r in map(json.loads, (out / "frozen" / "seed0" / "log.jsonl").read_text().splitlines())
             if "loss" in r]
    assert iters == [1, 2, 3, 4]  # the resumed run did not repeat its steps
    report = (out / "bench.md").read_text()
    assert "| rein | 1 |" in report and "| frozen | 1 |" in report
    assert (out / "bench.png").stat().st_size > 5_000 and (out / "bench_curves.png").stat().st_size > 5_000
    evals = json.loads((out / "frozen" / "seed0" / "eval.json").read_text())["domains"]
    assert set(evals) == {"synthetic-game", "synthetic-night"}  # the finished run is scored on every domain
    record = json.loads((out / "frozen" / "seed0" / "eval.json").read_text())["evaluated"]
    assert record["by"] == "dgseg bench" and record["final"] is True and "data.val" in record["changed"]
    for name in ("bench.json", "rein/seed0/summary.json"):  # strict JSON: a NaN IoU is null, never bare NaN
        json.loads((out / name).read_text(), parse_constant=pytest.fail)
    assert "different precisions" not in report and "Runs trained on (method seed)" in report

    # a comparison continued on a machine that trained in another precision says so in the table
    # and lists each machine with the runs it trained, a run resumed on another under both
    facts = json.loads((out / "frozen" / "seed0" / "run.json").read_text())
    (out / "frozen" / "seed0" / "run.json").write_text(
        json.dumps({**facts, "precision": "float32 (test)", "machine": "box A + box B"}))
    write_report(out)
    report = (out / "bench.md").read_text()
    assert "The runs used different precisions" in report and "| float32 (test) |" in report
    assert "- box A: frozen 0 (part)\n" in report and "- box B: frozen 0 (part)\n" in report
    # a run resumed in another precision counts each precision once, in the row and in the warning
    facts = json.loads((out / "rein" / "seed0" / "run.json").read_text())
    (out / "rein" / "seed0" / "run.json").write_text(
        json.dumps({**facts, "precision": "float32 (test) + bf16 (test)"}))
    write_report(out)
    report = (out / "bench.md").read_text()
    assert "different precisions (bf16 (test), float32 (test)):" in report
    assert "| bf16 (test) + float32 (test) |" in report


def test_status_says_where_each_run_stands_and_changes_nothing(tmp_path, tiny_bench, monkeypatch, capsys):
    out = tmp_path / "bench"
    run_bench(["rein"], [0], out, config=tiny_bench, isolate=False)
    real_train = train_module.train

    def stopped_after_training(cfg, out_dir, resume=False, **kw):
        real_train(cfg, out_dir, resume=resume, **kw)
        raise KeyboardInterrupt  # trained and checkpointed, then stopped before its evaluation

    monkeypatch.setattr(train_module, "train", stopped_after_training)
    with pytest.raises(KeyboardInterrupt):
        run_bench(["frozen"], [0], out, config=tiny_bench, isolate=False)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    table, total = bench_status(["rein", "frozen", "lora"], [0], out, config=tiny_bench).split("\n\n")
    assert total.startswith("Left: 4 iterations of 2 runs (1 under way, 1 not started): about 1 min at --jobs 1")
    rows = table.splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[:3] for c in cells] == [["rein", "0", "finished (4 iterations)"],
                                      ["frozen", "0", "checkpoint at iteration 4 of 4"],
                                      ["lora", "0", "not started"]]
    assert cells[0][3].endswith("at iteration 4") and cells[1][3].endswith("at iteration 4")
    assert cells[2][3:] == ["-", "-", "-", "-"]
    assert cells[0][6] == cells[1][6] == "float32"  # the precision each run trained in (run.json)
    assert cells[1][5] == "the final evaluation" and cells[0][5] == "-"  # trained to its last iteration; finished
    assert bench_status(["rein", "frozen"], [0], out, config=tiny_bench).endswith(
        "\n\nLeft: the final evaluation of 1 run under way.")
    with monkeypatch.context() as m:  # the frozen run as it stood at its checkpoint of iteration 2
        m.setattr("dgseg.engine.checkpoint_read.latest_step", lambda run_dir: 2)
        table, total = bench_status(["rein", "frozen", "lora"], [0], out, config=tiny_bench).split("\n\n")
        assert "| frozen | 0 | checkpoint at iteration 2 of 4 |" in table
        assert total.startswith("Left: 6 iterations of 2 runs (1 under way, 1 not started): about 1 min at --jobs 1")
        one = bench_status(["rein", "frozen"], [0], out, config=tiny_bench, jobs=2)
        assert "at --jobs 2 (1 at a time: fewer runs are left than that)" in one
        spied = []
        m.setattr("dgseg.bench_status.total_left", lambda lefts, *a, **kw: spied.append(lefts) or "")
        bench_status(["lora", "rein", "frozen"], [0], out, config=tiny_bench, jobs=2)
    assert spied == [[2, 4]]  # in the order the bench trains them: the run under way first
    with pytest.raises(ValueError, match=r"--jobs 0: expected 1 or more runs at a time"):
        bench_status(["rein"], [0], out, config=tiny_bench, jobs=0)
    other = bench_status(["rein"], [0], out, iters=6, config=tiny_bench)  # another setting: shown, not raised
    assert "another setting" in other and "train.max_iters" in other
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files  # nothing written, nothing removed

    from dgseg.cli import main

    capsys.readouterr()
    assert main(["bench", "--status", "--methods", "rein,lora", "--seeds", "0", "--out", str(out),
                 "--config", str(tiny_bench)]) == 0
    printed = capsys.readouterr().out
    assert "| rein | 0 | finished (4 iterations) |" in printed and "| lora | 0 | not started |" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files


def test_time_left_is_the_iterations_left_at_the_runs_recent_median_pace():
    records = [{"iter": 25 * i, "time_per_iter": 9.0} for i in range(1, 11)]  # an earlier, slower sitting
    records += [{"iter": 250 + 25 * i, "time_per_iter": v} for i, v in enumerate([0.5] * 15 + [0.4, 0.6, 3.0, 0.5, 0.5])]
    records.append({"iter": 500, "eval": {"s": {"mIoU": 1.0}}})  # evaluations carry no pace
    assert time_left(120, run_pace(records)) == "about 1 min (0.50 s per iteration)"
    assert time_left(20000, run_pace(records)) == "about 2.8 h (0.50 s per iteration)"
    assert time_left(0, run_pace(records)) == "the final evaluation"
    assert time_left(100, run_pace([])) == "-"
    assert run_pace(records, cycle=250) == (0.5, "")  # no two whole blocks yet: the median logged step


def test_the_line_under_the_status_table_totals_what_is_left_at_the_pace_of_the_runs_under_way():
    states = ["done", "resume", "resume", "new", "new", "new"]
    lefts = [4000, 6000, 10000, 10000, 10000]  # two slots: 4k + 10k + 10k and 6k + 10k, so 24k of wall clock
    assert total_left(lefts, states, [0.4, 0.6, 0.5], jobs=2) == (
        "Left: 40,000 iterations of 5 runs (2 under way, 3 not started): about 3.3 h at --jobs 2, final evaluations "
        "on top, at the median pace of the runs under way (0.50 s per iteration each, as measured beside the runs "
        "that ran with them).")
    assert "about 5.6 h at --jobs 1" in total_left(lefts, states, [0.5])
    assert total_left([40000], ["done", "new"], []) == ("Left: 40,000 iterations of 1 run (0 under way, 1 not "
                                                        "started); no run under way has logged a pace to estimate "
                                                        "the time from.")
    assert total_left([0, 0], ["resume", "resume"], [0.5]) == "Left: the final evaluation of 2 runs under way."
    assert total_left([], ["done", "done"], []) == "Left: nothing; every run shown has finished."
    assert total_left([], [], []) == "Left: no run shown is of this setting."


def test_the_total_runs_no_more_side_by_side_than_runs_are_left():
    """One run of 27,500 iterations at 0.32 s takes 2.4 h at --jobs 2, not half of that: it has no partner."""
    from dgseg.bench_status import makespan

    alone = total_left([27500], ["done", "resume"], [0.32], jobs=2)
    assert "about 2.4 h at --jobs 2 (1 at a time: fewer runs are left than that)" in alone
    assert makespan([27500], 2) == 27500 and makespan([27500], 1) == 27500
    assert makespan([30000, 10000, 10000], 2) == 30000  # the short ones follow each other beside the long one
    assert makespan([10000, 30000, 10000], 2) == 30000
    assert makespan([10000, 10000, 30000], 2) == 40000  # the long one starts last: its slot ends last
    assert makespan([5, 5, 5], 3) == 5 and makespan([5, 5, 5], 8) == 5
    assert "at a time" not in total_left([10000, 10000], ["resume", "new"], [0.5], jobs=2)


def test_the_total_says_when_the_runs_under_way_were_measured_with_other_threads_than_jobs_gives_each():
    """A pace measured alone on both cores (2 threads) is not the pace of two runs side by side (1 each)."""
    states = ["resume", "new"]
    alone = total_left([20000, 20000], states, [0.26], jobs=2, threads=[2], per_run=1)
    assert alone.endswith("That pace was measured with 2 threads per run; --jobs 2 gives each 1 here, so the "
                          "time will differ (runs side by side share the cores; a run with fewer threads steps slower).")
    assert "measured with 1 thread per run; --jobs 1 gives each 2" in total_left([20000, 20000], states, [0.46], 1, [1], 2)
    same = total_left([20000, 20000], states, [0.46], jobs=2, threads=[1], per_run=1)
    assert same == total_left([20000, 20000], states, [0.46], jobs=2) and "measured with" not in same
    assert "measured with" not in total_left([20000, 20000], states, [0.46], 2, [None], 1)  # a run.json without threads


def logged(start: int, paces: list[float], every: int = 25) -> list[dict]:
    return [{"iter": start + every * (i + 1), "time_per_iter": v} for i, v in enumerate(paces)]


def test_the_wall_pace_is_the_median_block_of_the_last_start_so_validations_count_and_a_pause_does_not():
    from dgseg.bench_status import cycle_pace, status_cycle

    before = logged(0, [9.0] * 20)  # an earlier start to iteration 500, slower: not this start's pace
    block = [0.4] * 9 + [2.4]  # 250 iterations: 9 intervals at 0.4 s, one holding a validation (+50 s)
    paused = [0.4] * 9 + [0.4 + 3600 / 25]  # a block with an hour suspended in it
    records = before + [{"iter": 500, "resumed_from": "iter_0000500"}] + logged(500, [5.0] * 10 + block * 3
                                                                                 + paused + block + [0.4] * 4)
    pace, blocks = cycle_pace(records, 250)
    assert blocks == 5 and pace == pytest.approx((9 * 0.4 + 2.4) / 10)  # 0.6 s: the validation counts, the hour not
    assert time_left(20000, run_pace(records, 250)) == ("about 3.3 h (0.60 s per iteration, median of its last 5 "
                                                        "blocks of 250, validations included)")
    assert cycle_pace(records, 250, recent=3) == (pytest.approx(0.6), 3)  # the paused block among the last three
    assert cycle_pace(records[:20 + 1 + 10 + 20], 250) is None  # the start's first block and one whole: too few
    assert cycle_pace(before + logged(0, [0.5] * 40), 250) == (pytest.approx(0.5), 2)  # a start from 0 again

    class Train:
        eval_interval, checkpoint_interval, log_interval = 250, 1000, 30
    assert status_cycle(Train) == 1000
    Train.eval_interval = Train.checkpoint_interval = 0
    assert status_cycle(Train) == 300  # no validation, no checkpoint: ten log intervals


def test_a_run_trained_to_another_setting_is_refused_by_name(tmp_path, tiny_bench):
    out = tmp_path / "bench"
    run_bench(["frozen"], [1], out, config=tiny_bench, isolate=False)
    with pytest.raises(ValueError, match=r"frozen/seed1 was trained with another setting \(train.max_iters"):
        run_bench(["frozen"], [1], out, iters=6, config=tiny_bench, isolate=False)


def test_status_names_the_keys_of_another_setting_without_dumping_whole_values(tmp_path):
    """The refusal (the bench's and --status's row) names differing keys entry by entry, values cut."""
    # a finished run of the bench's seven-domain setting, recorded with 24 scenes per domain and another lr
    from dgseg.config import config_to_dict

    out, cfg = tmp_path / "bench", bench_config("frozen", 0, None, [])
    recorded = config_to_dict(cfg)
    for spec in recorded["data"]["val"]:
        spec["length"] = 24
    recorded["train"]["lr"] *= 2
    run = out / "frozen" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"config": recorded}))
    row = bench_status(["frozen"], [0], out).splitlines()[2]
    assert f"bench: {run} was trained with another setting (data.val[0].length: run has 24, asked 48; " in row
    assert "data.val[3].length: run has 24, asked 48; and 4 more); use another --out" in row  # 3 domains, train.lr
    assert "synthetic-photo" not in row and len(row) < 400
    recorded["data"]["val"] = recorded["data"]["val"][:6]  # a list of another length: its value, cut
    (run / "summary.json").write_text(json.dumps({"config": recorded}))
    row = bench_status(["frozen"], [0], out).splitlines()[2]
    assert re.search(r"data\.val: run has \[\{'name': 'synthetic-game'.{40,60}\.\.\., asked \[\{", row)
    assert len(row) < 600


def test_a_key_set_to_null_differs_from_a_missing_one_in_the_refusal():
    from dgseg.bench import _setting_error

    text = _setting_error(Path("r"), {"a": [{"x": None}]}, {"a": [{}]})
    assert "(a[0].x: run has None, asked (absent))" in text


def test_a_run_whose_checkpoints_were_lost_is_refused_by_name_not_erased(tmp_path, tiny_bench, monkeypatch):
    out = tmp_path / "bench"
    run = out / "frozen" / "seed0"
    real_train = train_module.train

    def stopped_after_training(cfg, out_dir, resume=False, **kw):
        real_train(cfg, out_dir, resume=resume, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", stopped_after_training)
    with pytest.raises(KeyboardInterrupt):
        run_bench(["frozen"], [0], out, config=tiny_bench, isolate=False)
    monkeypatch.setattr(train_module, "train", real_train)
    facts = (run / "run.json").read_text()
    (run / "run.json").write_text("{cut")
    assert "frozen/seed0/run.json: not valid JSON" in bench_status(["frozen"], [0], out, config=tiny_bench)  # shown
    (run / "run.json").write_text(facts)
    latest = run / "checkpoints" / "latest"
    pointer = latest.read_text()
    latest.write_text("garbage\n")  # a damaged pointer: that run refused by name, --status shows it in its row
    assert "frozen/seed0/checkpoints/latest: holds 'garbage'" in bench_status(["frozen"], [0], out, config=tiny_bench)
    with pytest.raises(ValueError, match=r"frozen/seed0/checkpoints/latest: holds 'garbage'"):
        run_bench(["frozen"], [0], out, config=tiny_bench, isolate=False)
    latest.write_text(pointer)
    shutil.rmtree(run / "checkpoints")  # a sitting that did not keep them
    log = (run / "log.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"frozen/seed0 has a training log to iteration 4 but no checkpoint"):
        run_bench(["frozen", "rein"], [0], out, config=tiny_bench, isolate=False)
    assert (run / "log.jsonl").read_bytes() == log  # nothing written is lost
    assert (out / "rein" / "seed0" / "summary.json").exists()  # the other runs of the bench still train
    assert "has a training log to iteration 4" in bench_status(["frozen"], [0], out, config=tiny_bench)
    (run / "log.jsonl").write_text(json.dumps({"iter": 1, "loss": 9.0}) + "\n")  # died before its first checkpoint
    run_bench(["frozen"], [0], out, config=tiny_bench, isolate=False)  # nothing to lose: set aside, started afresh
    assert json.loads((run / "summary.json").read_text())["step"] == 4
    assert [r["iter"] for r in map(json.loads, next(run.glob("previous-*/log.jsonl")).read_text().splitlines())] == [1]


def test_a_finished_run_recorded_before_a_key_existed_still_counts_as_done(tmp_path, tiny_bench):
    from dgseg.bench import run_state

    out = tmp_path / "bench"
    run_bench(["frozen"], [0], out, config=tiny_bench, isolate=False)
    cfg = bench_config("frozen", 0, None, [], tiny_bench)
    summary = out / "frozen" / "seed0" / "summary.json"
    data = json.loads(summary.read_text())
    del data["config"]["eval"]["tta"]  # as if written by a dgseg from before eval.tta existed
    summary.write_text(json.dumps(data))
    assert run_state(out / "frozen" / "seed0", cfg) == "done"
    data["config"]["train"]["lr"] *= 2  # a changed value is another setting
    summary.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="train.lr"):
        run_state(out / "frozen" / "seed0", cfg)


def test_seeds_and_methods_become_config_keys():
    cfg = bench_config("full", 2, 100, [])
    assert (cfg.model.adapter.name, cfg.model.adapter.link, cfg.train.seed, cfg.train.max_iters) == ("full", False, 2, 100)
    assert bench_config("rein", 0, None, []).model.adapter.link is True  # Rein as the paper defines it
    assert bench_config("vpt", 0, None, []).model.adapter.name == "vpt"
    with pytest.raises(ValueError, match="unknown method 'dora'"):
        bench_config("dora", 0, None, [])


def test_each_baseline_has_the_papers_size_not_the_shared_keys_rein_set():
    # demo.yaml sets Rein's `adapter.rank: 16` and `tokens: 50`; the keys are shared with LoRA (rank) and VPT
    # (prompts). REFERENCE.md section 1: LoRA rank 8 on q and v; AdaptFormer width 64, scale 0.1. VPT keeps the
    # demo's 50 prompts per block, the demo's Rein token count (a deviation the README states).
    vit_s = SimpleNamespace(depth=12, embed_dim=384, patch_size=14)
    sizes = {}
    for method in ("lora", "adaptformer", "vpt"):
        cfg = bench_config(method, 0, None, []).model.adapter
        sizes[method] = sum(p.numel() for p in ADAPTERS[method](cfg, vit_s).parameters())
    assert sizes == {"lora": 12 * 2 * 2 * 384 * 8, "adaptformer": 12 * (2 * 384 * 64 + 64 + 384),
                     "vpt": 12 * 50 * 384}
    assert demo_config("lora", False, []).model.adapter.rank == 8  # `dgseg demo --compare` too


def test_a_set_that_would_change_what_defines_a_method_is_refused_by_name():
    # a --set meant for Rein's rank would silently make LoRA rank 32; linking would change the frozen head
    with pytest.raises(ValueError, match=r"--set model.adapter.rank=32 changes what defines the method 'lora' "
                                         r"\(model.adapter.rank=8\)"):
        bench_config("lora", 0, None, ["model.adapter.rank=32"])
    with pytest.raises(ValueError, match="'frozen'.*model.adapter.link=false"):
        demo_config("frozen", False, ["model.adapter.link=true"])
    assert bench_config("rein", 0, None, ["model.adapter.rank=32"]).model.adapter.rank == 32  # Rein's own key
    assert bench_config("lora", 0, None, ["model.adapter.rank= 8"]).model.adapter.rank == 8  # same value: fine


def test_a_comparison_trains_seed_by_seed_so_every_method_has_a_run_early():
    assert run_order(["rein", "frozen", "full"], [0, 1]) == [
        ("rein", 0), ("frozen", 0), ("full", 0), ("rein", 1), ("frozen", 1), ("full", 1)]


def test_interrupted_runs_resume_before_new_ones_start(monkeypatch, tmp_path):
    from dgseg.bench import resume_first

    steps = {("lora", 0): 132, ("frozen", 1): 24508, ("full", 1): 6893}  # checkpoints of unfinished runs

    def key(run_dir):
        return run_dir.parent.name, int(run_dir.name[4:])

    monkeypatch.setattr("dgseg.bench.run_state", lambda run_dir, cfg: "resume" if key(run_dir) in steps else "new")
    monkeypatch.setattr("dgseg.engine.checkpoint_read.latest_step", lambda run_dir: steps[key(run_dir)])
    cfg = bench_config("rein", 0, 48000, [])
    plan = [(m, s, cfg) for m, s in run_order(["rein", "frozen", "full", "lora"], [0, 1])]
    assert [(m, s) for m, s, _ in resume_first(plan, tmp_path)] == [
        ("frozen", 1), ("full", 1), ("lora", 0), ("rein", 0), ("frozen", 0), ("full", 0), ("rein", 1), ("lora", 1)]


def test_a_broken_interrupted_run_keeps_its_place_and_is_refused_on_its_turn(tmp_path):
    from dgseg.bench import resume_first

    cfg = bench_config("rein", 0, 48000, [])
    (tmp_path / "rein" / "seed0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "rein" / "seed0" / "checkpoints" / "iter_0000002.safetensors").write_bytes(b"")  # no config.yaml
    (tmp_path / "frozen" / "seed0").mkdir(parents=True)
    (tmp_path / "frozen" / "seed0" / "config.yaml").write_text("a: [")
    (tmp_path / "frozen" / "seed0" / "checkpoints").mkdir()
    (tmp_path / "frozen" / "seed0" / "checkpoints" / "iter_0000002.safetensors").write_bytes(b"")
    plan = [(m, 0, cfg) for m in ("rein", "frozen", "full")]
    assert resume_first(plan, tmp_path) == plan


def _row(values, source="s"):
    stats = {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "std": 0.0, "n": len(values)}
    return {"seeds": list(range(len(values))), "scores": {"mean targets": stats}, "source": source}


def test_the_bench_trains_every_method_at_the_papers_optimiser_and_schedule():
    # REFERENCE.md section 2 (Rein's configs/dinov2/*_512x512_bs1x4.py): AdamW lr 1e-4, weight decay 0.05,
    # poly power 0.9, no warm-up. The demo's lr 1e-3 made linked Rein unstable over a long schedule
    # (benchmarks/bench-12000-lr1e-3), so the bench must not inherit it.
    for method in ("rein", "frozen", "full", "lora", "adaptformer", "vpt"):
        train = bench_config(method, 0, None, []).train
        assert (train.optimizer, train.lr, train.weight_decay, train.power, train.warmup_iters) == (
            "adamw", 1e-4, 0.05, 0.9, 0)
        assert (train.max_iters, train.batch_size, train.eval_interval) == (12000, 2, 250)


def test_a_difference_inside_the_spread_is_a_tie():
    table = {"a": _row([30.0, 32.0, 34.0]), "b": _row([28.0, 29.0, 30.5]), "c": _row([20.0, 21.0, 22.0])}
    assert ties(table, "mean targets") == ("a", ["b"])


def test_a_comparison_of_one_method_ranks_nothing(tmp_path):
    out = tmp_path / "bench"
    _fake_run(out, "frozen", 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
    assert "best frozen" not in markdown_of(out)
    _fake_run(out, "rein", 0, {"src": [80.0, 10.0, 50.0], "t1": [60.0, 20.0, 40.0]})
    assert "best frozen" in markdown_of(out)


def test_the_plateau_check_compares_the_last_quarter_mean_with_the_quarter_before(tmp_path):
    log = tmp_path / "log.jsonl"
    evals = {250: 5.0, 500: 10.0, 750: 20.0, 1000: 22.0, 1250: 18.0, 1500: 24.0, 1750: 19.0, 2000: 23.0}
    log.write_text("".join(json.dumps({"iter": i, "eval": {"s": {"mIoU": v}}}) + "\n" for i, v in evals.items()))
    # (1500, 2000] = {19, 23} against (1000, 1500] = {18, 24}: no rise, though the last point is 4 above 1750
    assert quarter_rise(eval_points(log, "s")) == pytest.approx(0.0)
    log.write_text("".join(json.dumps({"iter": i, "eval": {"s": {"mIoU": v + (i > 1500) * 1.5}}}) + "\n"
                           for i, v in evals.items()))
    assert quarter_rise(eval_points(log, "s")) == pytest.approx(1.5)
    assert PLATEAU_POINTS == 1.0  # the threshold: less than one point
    assert math.isnan(quarter_rise(eval_points(tmp_path / "missing.jsonl", "s")))


def test_the_report_says_when_nothing_has_finished():
    assert "No finished runs yet" in markdown({})


def test_jobs_train_runs_side_by_side_in_their_own_processes(tmp_path, tiny_bench):
    out = tmp_path / "bench"
    table = run_bench(["rein", "frozen"], [0], out, config=tiny_bench, jobs=2, threads=1)
    assert list(table) == ["rein", "frozen"]
    for method in ("rein", "frozen"):
        assert json.loads((out / method / "seed0" / "summary.json").read_text())["step"] == 4
    with pytest.raises(ValueError, match="needs every run in its own process"):
        run_bench(["rein"], [0], out, config=tiny_bench, jobs=2, isolate=False)
    with pytest.raises(ValueError, match="--jobs 0"):
        run_bench(["rein"], [0], out, config=tiny_bench, jobs=0)


def test_the_cores_are_shared_by_the_runs_left_not_by_the_jobs():
    assert fair_share(2, 2, 18) == 1 and fair_share(2, 2, 2) == 1
    assert fair_share(2, 2, 1) == 2  # the last run of a --jobs 2 bench gets both cores
    assert fair_share(16, 6, 4) == 4 and fair_share(1, 2, 1) == 1


def test_the_last_run_of_a_bench_gets_the_cores_of_the_runs_that_finished(tmp_path, tiny_bench, monkeypatch):
    import dgseg.bench as bench

    shares = {}

    def fake_run_one(method, seed, cfg, run_dir, isolate, threads, fair_threads):
        time.sleep({"rein": 0.2, "frozen": 0.6, "full": 1.2}[method])
        shares[method] = (threads, fair_threads())  # at its end: the runs still unfinished then
        return "new"

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    run_bench(["rein", "frozen", "full"], [0], tmp_path / "bench", config=tiny_bench, jobs=2)
    assert shares == {"rein": (1, 1), "frozen": (1, 1), "full": (1, 2)}


def test_a_run_left_alone_is_resumed_with_the_threads_the_finished_runs_freed(tmp_path, capsys):
    data = tiny_dict(train__max_iters=30, train__checkpoint_interval=3, train__eval_interval=1000,
                     train__log_interval=1)
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(data))
    cfg = bench_config("frozen", 0, None, [], config)
    run = tmp_path / "bench" / "frozen" / "seed0"
    calls = []

    def fair_threads():  # one core when the child starts, two from then on (the run beside it finished)
        calls.append(1)
        return 1 if len(calls) == 1 else 2

    assert run_one("frozen", 0, cfg, run, threads=1, fair_threads=fair_threads, poll_s=0.05) == "new"
    assert "frozen seed 0: resumed with 2 threads" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["step"] == 30
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["iter"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # stopped with a checkpoint, resumed where it stopped
    assert sum("resumed_from" in r for r in records) == 1  # one stop, through the training's SIGTERM handler
    starts = json.loads((run / "run.json").read_text())["starts"]
    assert [s["threads"] for s in starts] == [1, 2]


def test_a_child_is_widened_only_inside_its_training_loop_and_far_from_its_end(tmp_path, tiny_bench):
    from dgseg.bench_child import _training

    cfg = bench_config("frozen", 0, 100, [], tiny_bench)
    cfg.train.checkpoint_interval = 10
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    log = run / "log.jsonl"
    log.write_text('{"iter": 40, "resumed_from": "iter_0000040"}\n')  # setup logs before the loop
    assert not _training(run, cfg, 0)
    with log.open("a") as f:
        f.write('{"iter": 41, "loss": 1.0, "time_per_iter": 0.5}\n')
    assert _training(run, cfg, 0)
    assert not _training(run, cfg, log.stat().st_size)  # nothing logged since this child started
    (run / "checkpoints" / "iter_0000085.safetensors").write_bytes(b"")
    (run / "checkpoints" / "iter_0000085.json").write_text("{}")
    (run / "checkpoints" / "latest").write_text("iter_0000085.safetensors")
    assert not _training(run, cfg, 0)  # 15 iterations left: near its final save and evaluation


def test_a_run_asked_to_stop_by_sigterm_finishes_its_checkpoint_through_a_ctrl_c():
    stop = train_module._StopRequest()
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGINT, None)  # the terminal's Ctrl-C while it saves: not a second request
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGTERM, None)  # the same signal twice: stop at once


def test_a_stopping_bench_starts_no_run():
    from dgseg.bench_child import _STOPPING, stop_children, train_in_child

    stop_children()
    try:
        with pytest.raises(RuntimeError, match="was not started: the bench is stopping"):
            train_in_child("frozen seed 0", None, None, Path("unused"), False, 1)
    finally:
        _STOPPING.clear()


def test_an_interrupt_just_after_a_child_starts_still_stops_it(tmp_path, tiny_bench, monkeypatch):
    from multiprocessing.context import SpawnProcess

    import dgseg.bench_child as bench_child

    started, start = [], SpawnProcess.start

    def start_then_interrupt(self):
        start(self)
        started.append(self)
        raise RuntimeError("interrupted between the start and anything after it")

    monkeypatch.setattr(SpawnProcess, "start", start_then_interrupt)
    cfg = bench_config("frozen", 0, None, [], tiny_bench)
    with pytest.raises(RuntimeError, match="interrupted between the start"):
        bench_child.train_in_child("frozen seed 0", cfg, cfg, tmp_path / "run", False, 1)
    assert started and not started[0].is_alive() and started[0].exitcode is not None  # stopped, reaped
    assert not bench_child._LIVE and not bench_child._STOPPING.is_set()


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        cmdline = (status.parent / "cmdline").read_bytes() if (status.parent / "cmdline").exists() else b""
        if fields.get("PPid", "").strip() == str(pid) and b"resource_tracker" not in cmdline:
            kids.append(int(status.parent.name))  # the run (multiprocessing's resource tracker exits by itself)
    return kids


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads child processes from /proc (Linux)")
def test_a_terminated_bench_stops_its_run_which_checkpoints_and_resumes(tmp_path):
    data = tiny_dict(train__max_iters=100_000, train__checkpoint_interval=50_000, train__eval_interval=50_000)
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "bench"
    log = out / "frozen" / "seed0" / "log.jsonl"
    parent = subprocess.Popen([sys.executable, "-m", "dgseg", "bench", "--methods", "frozen", "--seeds", "0",
                               "--config", str(config), "--out", str(out), "--threads", "1"],
                              env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (log.exists() and '"loss"' in log.read_text()):
        assert parent.poll() is None and time.monotonic() < deadline, parent.communicate()[0]
        time.sleep(0.2)
    children = _children(parent.pid)
    assert children, "the run trains in a child process"
    parent.send_signal(signal.SIGTERM)
    output = parent.communicate(timeout=120)[0]
    assert parent.returncode != 0
    for pid in children:  # no run keeps training without its parent (a zombie would be reaped by init)
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text(), output
    from dgseg.engine.checkpoint import latest_checkpoint

    assert latest_checkpoint(out / "frozen" / "seed0") is not None, output  # the same command resumes it


def _fake_run(out, method, seed, ious, names=("road", "tram", "bird")):
    """A finished run folder with only a summary: per domain the IoU of classes ``names``."""
    run = out / method / f"seed{seed}"
    run.mkdir(parents=True)
    summary = {
        "config": {"data": {"source": "src", "classes": {"names": list(names)}},
                   "train": {"max_iters": 10}},
        "eval": {d: {"mIoU": sum(v for v in iou if v is not None) / len(iou), "IoU": iou} for d, iou in ious.items()},
        "trainable": 1, "train_time_s": 60.0,
    }
    (run / "summary.json").write_text(json.dumps(summary))


def test_the_report_has_per_class_iou_source_and_mean_over_targets_for_any_class_set(tmp_path):
    out = tmp_path / "bench"
    _fake_run(out, "frozen", 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, None], "t2": [50.0, 40.0, 30.0]})
    _fake_run(out, "frozen", 1, {"src": [80.0, 30.0, 60.0], "t1": [60.0, 0.0, None], "t2": [40.0, 20.0, 10.0]})
    _fake_run(out, "rein", 0, {"src": [95.0, 5.0, 70.0], "t1": [75.0, 5.0, None], "t2": [55.0, 15.0, 20.0]})
    table = write_report(out)
    assert table["frozen"]["per_class"]["tram"]["source"]["mean"] == pytest.approx(20.0)
    assert table["frozen"]["per_class"]["tram"]["targets"]["mean"] == pytest.approx(20.0)  # (30 + 10) / 2
    # bird is absent from t1 (IoU null): the target mean is over t2 alone
    assert table["frozen"]["per_class"]["bird"]["targets"]["mean"] == pytest.approx(20.0)
    report = (out / "bench.md").read_text()
    assert "| class | rein | frozen |" in report
    assert "| road | 95.0 / 65.0 | 85.0 / 55.0 |" in report and "| bird | 70.0 / 20.0 | 55.0 / 20.0 |" in report


def test_the_per_class_table_holds_every_methods_classes_not_only_the_first_methods(tmp_path):
    out = tmp_path / "bench"
    _fake_run(out, "rein", 0, {"src": [90.0, 10.0], "t1": [70.0, 20.0]}, names=("road", "tram"))
    _fake_run(out, "frozen", 0, {"src": [95.0, 5.0, 70.0], "t1": [75.0, 5.0, 30.0]})
    write_report(out)
    report = (out / "bench.md").read_text()
    assert "| class | rein | frozen |" in report  # rein's row comes first, and it has no bird
    assert "| bird | - | 70.0 / 30.0 |" in report and "| tram | 10.0 / 20.0 | 5.0 / 5.0 |" in report


def test_the_table_shows_the_mean_rise_over_seeds_and_the_largest_and_names_each_run_not_flat(tmp_path):
    out = tmp_path / "bench"
    for seed, rise in ((0, 0.5), (1, 1.5)):
        _fake_run(out, "frozen", seed, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
        evals = {i: 50.0 + (i > 7.5) * rise for i in range(1, 11)}  # (7.5, 10] against (5, 7.5]
        (out / "frozen" / f"seed{seed}" / "log.jsonl").write_text(
            "".join(json.dumps({"iter": i, "eval": {"src": {"mIoU": v}}}) + "\n" for i, v in evals.items()))
    write_report(out)
    report = (out / "bench.md").read_text()
    assert "| +1.0 (max +1.5) |" in report
    assert "Not plateaued" in report and "frozen seed 0" not in report
    # seed 1's second half: 50, 50, then 51.5 from iteration 8 on; its slope against log2(iteration)
    gain = doubling_gain({i: 50.0 + (i > 7.5) * 1.5 for i in range(6, 11)})
    assert f"frozen seed 1 (+1.5; {gain:+.1f} per doubling)" in report and "under 2.04." in report


def test_the_report_compares_each_source_curve_with_the_frozen_heads_per_quarter(tmp_path):
    out = tmp_path / "bench"
    for method, offset in (("frozen", 0.0), ("rein", -2.0)):
        _fake_run(out, method, 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
        evals = {i: 50.0 + offset for i in range(1, 11)}
        evals[1] = math.nan if method == "rein" else 50.0  # a NaN validation compares nothing
        (out / method / "seed0" / "log.jsonl").write_text(
            "".join(json.dumps({"iter": i, "eval": {"src": {"mIoU": v}}}) + "\n" for i, v in evals.items()))
    write_report(out)
    report = (out / "bench.md").read_text()
    assert "## Source curves against frozen, per quarter of the schedule" in report
    assert "| rein | -2.0 | -2.0 | -2.0 | -2.0 | 0 of 9 |" in report  # quarters of 10 iterations: (0, 2.5], ...
    gap = json.loads((out / "bench.json").read_text())["rein"]["source_curve_gap"]
    assert gap["reference"] == "frozen" and gap["quarters"] == [-2.0] * 4 and gap["shared"] == 9


def test_a_run_without_a_plateau_measure_is_named_and_no_plateau_is_claimed(tmp_path):
    out = tmp_path / "bench"
    _fake_run(out, "frozen", 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})  # no log.jsonl
    _fake_run(out, "rein", 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
    (out / "rein" / "seed0" / "log.jsonl").write_text(
        "".join(json.dumps({"iter": i, "eval": {"src": {"mIoU": 50.0}}}) + "\n" for i in range(1, 11)))
    report = markdown_of(out)
    assert "No plateau check (no log.jsonl, or no source validation in one of the two quarters): frozen seed 0." in report
    assert "Every run has plateaued" not in report and "Not plateaued" not in report
    (out / "frozen" / "seed0" / "log.jsonl").write_text((out / "rein" / "seed0" / "log.jsonl").read_text())
    assert "Every run has plateaued" in markdown_of(out)


def markdown_of(out):
    write_report(out)
    return (out / "bench.md").read_text()


def test_a_summary_or_run_facts_the_report_cannot_read_are_refused_by_file_before_any_training(tmp_path, tiny_bench):
    out = tmp_path / "bench"
    _fake_run(out, "frozen", 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
    summary = out / "frozen" / "seed0" / "summary.json"
    for text, expected in (('{"eval": ', "not valid JSON"), ("[]", "a JSON list; expected an object"),
                           ('{"eval": {}}', "no config, trainable, train_time_s")):
        summary.write_text(text)
        with pytest.raises(ValueError, match=f"frozen/seed0/summary.json: {re.escape(expected)}"):
            run_bench(["rein"], [0], out, config=tiny_bench, isolate=False)
        assert not (out / "rein").exists()  # refused before anything trained
    _fake_run(out, "lora", 0, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
    summary.unlink()
    (out / "lora" / "seed0" / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="lora/seed0/run.json: not valid JSON"):
        write_report(out)
    (out / "lora" / "seed0" / "run.json").unlink()  # a folder copied without it: 'unknown', not an error
    (out / "vpt" / "seed0").mkdir(parents=True)  # an unfinished run's facts are read before training too
    (out / "vpt" / "seed0" / "run.json").write_text("[1]")
    with pytest.raises(ValueError, match="vpt/seed0/run.json: a JSON list"):
        run_bench(["rein", "vpt"], [0], out, config=tiny_bench, isolate=False)
    assert not (out / "rein").exists()
    shutil.rmtree(out / "vpt")
    assert write_report(out)["lora"]["precision"] == ["unknown"]


def test_only_folders_named_seed_k_are_runs_and_the_others_are_named_in_the_report(tmp_path):
    out = tmp_path / "bench"
    _fake_run(out, "frozen", 1, {"src": [90.0, 10.0, 50.0], "t1": [70.0, 20.0, 40.0]})
    for name in ("seed0.old", "seed01"):  # a run moved aside; a name the bench never writes
        (out / "frozen" / name).mkdir()
        (out / "frozen" / name / "summary.json").write_text((out / "frozen" / "seed1" / "summary.json").read_text())
    table = write_report(out)
    assert table["frozen"]["seeds"] == [1]
    assert "Not read (a run folder is named seed<k>" in (out / "bench.md").read_text()
    assert "frozen/seed0.old, frozen/seed01." in (out / "bench.md").read_text()


def test_symlinked_run_folders_are_refused_and_nothing_behind_them_changes(tmp_path, tiny_bench):
    out = tmp_path / "bench"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "seed0").mkdir(parents=True)
    (elsewhere / "seed0" / "precious.txt").write_text("keep")
    out.mkdir()
    (out / "rein").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match=r"bench/rein is a symbolic link"):
        run_bench(["rein"], [0], out, config=tiny_bench, isolate=False)
    (out / "rein").unlink()
    (out / "rein").mkdir()
    (out / "rein" / "seed0").symlink_to(elsewhere / "seed0", target_is_directory=True)
    with pytest.raises(ValueError, match=r"rein/seed0 is a symbolic link"):
        run_bench(["rein"], [0], out, config=tiny_bench, isolate=False)
    assert [p.name for p in (elsewhere / "seed0").iterdir()] == ["precious.txt"]


def test_a_start_that_logged_no_iteration_is_moved_aside_not_deleted_and_a_cut_log_is_refused(tmp_path, tiny_bench):
    out = tmp_path / "bench"
    run = out / "frozen" / "seed0"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    (run / "log.jsonl").write_text(json.dumps({"iter": 0, "started": True}) + "\n")
    run_bench(["frozen"], [0], out, config=tiny_bench, isolate=False)
    kept = list(run.glob("previous-*"))
    assert len(kept) == 1 and (kept[0] / "notes.txt").read_text() == "mine" and (kept[0] / "log.jsonl").exists()
    assert (run / "summary.json").exists()
    other = out / "rein" / "seed0"
    other.mkdir(parents=True)
    (other / "log.jsonl").write_text('{"iter": 4000, "loss": 0.5\n')  # cut short, no checkpoint
    with pytest.raises(ValueError, match=r"rein/seed0/log.jsonl: line 1 not a JSON record"):
        run_bench(["rein"], [0], out, config=tiny_bench, isolate=False)
    assert (other / "log.jsonl").read_text() == '{"iter": 4000, "loss": 0.5\n'


def test_methods_and_seeds_lists_name_the_option_and_what_is_expected():
    assert parse_list("0, 1,2", int, "--seeds") == [0, 1, 2] and parse_list("rein,lora") == ["rein", "lora"]
    for text, message in (("0,a", "--seeds '0,a': 'a' is not a seed"), ("0,,1", "--seeds '0,,1': an empty item"),
                          ("1.0", "'1.0' is not a seed"), ("-1", "'-1' is not a seed"), ("01", "'01' is not a seed"),
                          (",", "an empty item")):
        with pytest.raises(ValueError, match=re.escape(message) + ".*whole numbers such as 0,1,2"):
            parse_list(text, int, "--seeds")
    with pytest.raises(ValueError, match=re.escape("--methods 'rein,,lora': an empty item; expected comma-separated names")):
        parse_list("rein,,lora")


def test_the_gain_per_doubling_is_the_slope_against_log2_of_the_iteration_over_the_second_half():
    # a curve that gains 3 points per doubling of the iterations, validated every 250 as the bench does
    log_curve = {i: 30.0 + 3.0 * math.log2(i) for i in range(250, 48001, 250)}
    assert doubling_gain(log_curve) == pytest.approx(3.0)
    # its last-quarter rise is LOG_RISE x the gain at any schedule length (the validations every 250
    # iterations sample the quarters: 0.463 x at 3,000 iterations, 0.488 x at 48,000): under 1 point needs
    # under 2.04 points per doubling
    assert LOG_RISE == pytest.approx(0.4903, abs=1e-4)
    for last in (3000, 12000, 48000):
        points = {i: v for i, v in log_curve.items() if i <= last}
        assert quarter_rise(points) == pytest.approx(LOG_RISE * 3.0, rel=0.06)
        assert doubling_gain(points) == pytest.approx(3.0)
    # only the second half counts: a steep first half changes nothing
    steep = {i: (v if i > 24000 else v - 20.0 * (24000 - i) / 24000) for i, v in log_curve.items()}
    assert doubling_gain(steep) == pytest.approx(3.0)
    assert math.isnan(doubling_gain({1000: 5.0, 2000: 6.0})) and math.isnan(doubling_gain({}))


def test_the_source_validation_during_training_is_the_entry_whose_results_row_is_data_source():
    """data.source names a results row (an entry's label, or name:split when a name repeats): the bench
    validates that entry while training, under the same row name, which bench --status reads from the log."""
    from dgseg.bench import training_config
    from dgseg.config import config_from_dict

    cfg = config_from_dict(tiny_dict(data__source="game-val", data__val=[
        {"name": "synthetic-game", "split": "train", "length": 2},
        {"name": "synthetic-game", "split": "val", "length": 2, "label": "game-val"},
        {"name": "synthetic-night", "length": 2}]))
    assert [(s.split, s.label) for s in training_config(cfg).data.val] == [("val", "game-val")]
    cfg = config_from_dict(tiny_dict(data__source="synthetic-game:val", data__val=[
        {"name": "synthetic-game", "split": "train", "length": 2},
        {"name": "synthetic-game", "split": "val", "length": 2}]))
    assert [(s.split, s.label) for s in training_config(cfg).data.val] == [("val", "synthetic-game:val")]
    assert [(s.split, s.label) for s in cfg.data.val] == [("train", None), ("val", None)]  # a copy changed
