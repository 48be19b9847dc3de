"""benchmarks/gpu_check.py: the GPU checks' bookkeeping (the checks themselves need a GPU; see the README)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))
from benchmarks.gpu_check import main, markdown, training_facts  # noqa: E402


def _log(run_dir: Path, losses: list[float]) -> None:
    run_dir.mkdir()
    rows = [{"iter": 5 * (i + 1), "loss": loss, "time_per_iter": 0.1 * (i + 1)} for i, loss in enumerate(losses)]
    rows.insert(1, {"iter": 5, "eval": {"mIoU": 1.0}})  # a validation line has no loss: not a training row
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_training_log_gives_iterations_finiteness_and_the_time_after_the_first_line(tmp_path):
    _log(tmp_path / "run", [46.0, 45.0, 44.0])
    facts = training_facts(tmp_path / "run")
    assert facts["iterations"] == 15 and facts["losses finite"] is True
    assert facts["first loss"] == 46.0 and facts["last loss"] == 44.0
    assert facts["s per iteration"] == pytest.approx(0.25)  # the first line (warm-up) left out


def test_a_nan_loss_fails_the_check(tmp_path):
    _log(tmp_path / "run", [46.0, math.nan])
    assert training_facts(tmp_path / "run")["losses finite"] is False


def test_the_report_names_every_failed_check():
    text = markdown({"GPU": "x"}, {"a": {"ok": True, "exit": 0}, "b": {"ok": False, "exit": 124}})
    assert "**a**: pass (exit 0)" in text and "**b**: FAIL (exit 124)" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_the_gpu_without_one_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "out"), "--device", "cuda"])
    assert "torch sees no GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_folder_that_holds_files_or_an_unknown_precision_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "gpu_check.md").write_text("an earlier run")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "old"), "--device", "cpu"])
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "new"), "--device", "cpu", "--amps", "fp16"])  # fp16 needs a GPU
    assert "--amps 'fp16'" in capsys.readouterr().err and not (tmp_path / "new").exists()
