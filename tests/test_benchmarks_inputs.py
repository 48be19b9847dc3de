"""The benchmark scripts' inputs: a smoke run that leaves the committed report alone, options refused up front
by name, and a user's mistake as one error line (exit code 2) rather than a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))
from benchmarks import report, run  # noqa: E402
from dgseg.errors import run_main  # noqa: E402


def test_the_quick_smoke_run_writes_beside_the_committed_report_and_without_the_notes():
    args = run.parse_args(["--quick"])
    assert args.out == "runs/benchmarks-quick/BENCHMARKS.md"
    assert Path(args.json) == Path("runs/benchmarks-quick/BENCHMARKS.json").resolve()
    assert args.notes == "none"
    assert run.parse_args([]).out == "BENCHMARKS.md"
    full = run.parse_args(["--out", str(ROOT / "BENCHMARKS.md")])  # the committed run's report, from any folder
    assert Path(full.json) == ROOT / "benchmarks" / "results.json"
    assert Path(full.notes) == ROOT / "benchmarks" / "NOTES.md"


@pytest.mark.parametrize(("argv", "message"), [
    (["--sections", "trian"], "--sections: unknown ['trian']"),
    (["--scaling-crops", "32,a"], "--scaling-crops: expected whole numbers"),
    (["--scaling-batches", "0"], "--scaling-batches: expected whole numbers"),
    (["--scaling-batches", "2,"], None),  # an empty item is left out; an empty list: no batch sweep
    (["--scaling-crops", ""], None),
    (["--device", "gpu"], "--device: 'gpu' is not a torch device"),
    (["--notes", "/nonexistent/notes.md"], "--notes /nonexistent/notes.md: no such file"),
])
def test_harness_options_are_refused_before_anything_runs(argv, message, capsys):
    if message is None:
        run.parse_args(argv)
        return
    with pytest.raises(SystemExit) as exit_:
        run.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_out_that_is_a_folder_or_the_json_itself_is_refused_before_the_cases_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--out", str(tmp_path)])
    assert f"--out {tmp_path}: is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.parse_args(["--out", str(tmp_path / "r.json")])  # the raw results would go to the same file
    assert "is the report (--out)" in capsys.readouterr().err


def test_damaged_raw_results_are_named(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{bad}: not the JSON results of a benchmark run"):
        run._load(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="no 'runs' list"):
        run._load(bad)
    assert run._load(tmp_path / "none.json") is None


def test_the_goals_name_the_image_that_was_measured():
    infer = {"s": {"rein": {"whole_vs_frozen": 1.0, "slide_vs_frozen": 1.0, "batch_speedup": 1.0,
                            "max_abs_diff": 0.0}}}
    rows = report.goal_rows({}, {}, infer, "512x1024")
    assert {r[1] for r in rows} == {"DINOv2 ViT-S, 512x1024"}


def test_run_main_turns_a_users_mistake_into_one_error_line(capsys, monkeypatch):
    monkeypatch.delenv("DGSEG_DEBUG", raising=False)

    def missing():
        raise FileNotFoundError("runs/x: no such run folder")

    assert run_main("python -m benchmarks.x", missing) == 2
    assert capsys.readouterr().err == "python -m benchmarks.x: error: runs/x: no such run folder\n"
    assert run_main("p", lambda: {"results": 1}) == 0  # a main that returns its results (onnx_large)
    assert run_main("p", lambda: 1) == 1
    monkeypatch.setenv("DGSEG_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_main("p", missing)


@pytest.mark.parametrize(("script", "args", "message"), [
    ("rein_queries", ["/nonexistent/run"], "python -m benchmarks.rein_queries: error: "),
    ("onnx_large", ["--config", "/nonexistent/x.yaml"], "python -m benchmarks.onnx_large: error: "),
])
def test_a_script_given_a_missing_file_says_so_in_one_line(script, args, message):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"),
                                                                    os.environ.get("PYTHONPATH")])))
    env.pop("DGSEG_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr and "/nonexistent/" in proc.stderr


def test_rein_queries_needs_a_run_folder_or_init(capsys):
    from benchmarks import rein_queries

    with pytest.raises(SystemExit) as exit_:
        rein_queries.main([])
    assert exit_.value.code == 2 and "give run folders, --init CONFIG, or both" in capsys.readouterr().err


def test_gpu_check_writes_its_logs_and_images_by_rename_never_through_a_link(tmp_path):
    from benchmarks import gpu_check

    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("the user's file")
    log = tmp_path / "eval.log"
    log.symlink_to(elsewhere)
    code, seconds = gpu_check.run([sys.executable, "-c", "print('checked')"], log, timeout=60)
    assert code == 0 and seconds > 0
    assert not log.is_symlink() and log.read_text() == "checked\n"
    assert elsewhere.read_text() == "the user's file"
    code, _ = gpu_check.run([sys.executable, "-c", "import time; print('slow', flush=True); time.sleep(30)"],
                            tmp_path / "slow.log", timeout=1)
    assert code == 124 and (tmp_path / "slow.log").read_text() == "slow\n"  # what it said before it was stopped
    assert not list(tmp_path.glob("*.running"))
    images = gpu_check.write_images(tmp_path / "images")
    assert sorted(p.name for p in images.iterdir()) == ["tall.png", "wide.png"]


def test_gpu_check_keeps_the_log_of_a_check_interrupted_by_ctrl_c(tmp_path, monkeypatch):
    import subprocess

    from benchmarks import gpu_check

    wait = subprocess.Popen.wait

    def interrupted(self, timeout=None):
        if timeout is not None:  # the check's own wait: Ctrl-C arrives while the command runs
            wait(self, timeout=5)  # (it has finished printing by then)
            raise KeyboardInterrupt
        return wait(self)

    monkeypatch.setattr(subprocess.Popen, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.run([sys.executable, "-c", "print('started')"], tmp_path / "train.log", timeout=60)
    assert (tmp_path / "train.log").read_text() == "started\n" and not list(tmp_path.glob("*.running"))


def test_the_scripts_name_a_missing_input_before_their_long_part(tmp_path, capsys):
    from benchmarks import feature_shift

    with pytest.raises(SystemExit):
        feature_shift.main([str(tmp_path / "no-run")])
    assert "no such run folder or checkpoint" in capsys.readouterr().err
