"""Reliability of runs, second pass (issue 16): divergence with the Mask2Former head, torn log lines,
configs that name nothing to train on, existing run folders, resume markers, skipped samples in the log,
messages in command-line terms, eval.json without NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

from dgseg.engine import train as train_module
from dgseg.engine.checkpoint import latest_checkpoint
from dgseg.engine.train import TrainingError, train
from dgseg.models.heads.matcher import HungarianMatcher
from dgseg.viz import read_log


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(**sections):
    sections.setdefault("train__max_iters", 3)
    return tiny_config(data__val=[], data__source=None, **sections)


def records(run) -> list[dict]:
    return read_log(run / "log.jsonl")[0]


# ------------------------------------------------------------------ item 3: divergence with the default head


def test_divergence_with_the_mask2former_head_stops_naming_step_losses_and_files(tmp_path):
    cfg = run_config(train__lr=1e30)
    assert cfg.model.head.name == "mask2former"
    with pytest.raises(TrainingError) as err:
        train(cfg, tmp_path, progress=False)
    msg = str(err.value)
    assert "non-finite loss or gradient at iteration 2" in msg and "'loss_cls': nan" in msg
    assert "batch files ['synthetic://game/train/" in msg and "(--set train.on_nan=skip)" in msg
    assert latest_checkpoint(tmp_path).name == "iter_0000001.safetensors" and "iter_0000001" in msg


def test_under_on_nan_skip_diverged_steps_are_skipped_then_stop_without_suggesting_skip(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "MAX_CONSECUTIVE_SKIPS", 2)
    cfg = run_config(train__lr=1e30, train__on_nan="skip")
    with pytest.raises(TrainingError) as err:
        train(cfg, tmp_path, progress=False)
    msg = str(err.value)
    assert "iteration 2 (2 non-finite iterations in a row" in msg and "train.on_nan" not in msg
    assert "--set train.lr=1e+29" in msg and "--set train.grad_clip=" in msg
    (skip,) = [r for r in records(tmp_path) if "skipped" in r]  # the Mask2Former loss reached on_nan=skip
    assert skip["iter"] == 2 and len(skip["files"]) == cfg.train.batch_size


def test_fp16_on_nan_skip_lowers_the_loss_scale_and_trains_on(tmp_path, monkeypatch):
    """With train.amp=fp16 (a GradScaler; its CPU twin here, the same unscale_/step/update cycle) a skipped
    step closes the scaler's step with update(): the scale halves, and the next step's unscale_ works."""
    import dgseg
    from dgseg.engine import train_setup

    scalers = []
    build = train_setup._build_model_and_optimizer

    def with_scaler(cfg, device, model):
        *rest, _ = build(cfg, device, model)
        scalers.append(torch.amp.GradScaler("cpu", enabled=True))
        return (*rest, scalers[-1])

    monkeypatch.setattr(train_setup, "_build_model_and_optimizer", with_scaler)
    cfg = run_config(train__max_iters=4, train__on_nan="skip")
    model = dgseg.build_model(cfg)
    forward, calls = model.forward, []

    def nan_at_the_second(*args, **kwargs):
        calls.append(1)
        losses = forward(*args, **kwargs)
        return {k: v * float("nan") if len(calls) == 2 and "loss" in k else v for k, v in losses.items()}

    monkeypatch.setattr(model, "forward", nan_at_the_second)
    result = train(cfg, tmp_path, progress=False, model=model)
    assert (result["step"], result["skipped_steps"]) == (4, 1)
    assert scalers[0].get_scale() == 2.0**16 * 0.5  # the initial scale, backed off once
    assert [r["iter"] for r in records(tmp_path) if "skipped" in r] == [2]


def test_the_matcher_refuses_a_non_finite_cost_by_name():
    cls = torch.zeros(3, 4)
    cls[0, 0] = float("nan")
    with pytest.raises(ValueError, match="HungarianMatcher: the cost matrix has NaN/Inf entries"):
        HungarianMatcher(num_points=16)(cls, torch.zeros(3, 8, 8), torch.tensor([0, 1]), torch.ones(2, 8, 8))


def test_max_consecutive_skips_is_pinned():
    assert train_module.MAX_CONSECUTIVE_SKIPS == 20


# ------------------------------------------------------------------ items 6, 8, 9: torn logs, run folders, resume


def test_a_rerun_folder_is_refused_resume_marks_the_log_and_force_moves_the_old_run(tmp_path, capsys):
    from dgseg.cli import main
    from dgseg.engine.run_folder import RunFolderError
    from dgseg.viz import _last_per_step

    run = tmp_path / "run"
    cfg = run_config(train__max_iters=4, train__checkpoint_interval=2)
    train(cfg, run, progress=False)
    for f in (run / "checkpoints").glob("iter_0000004.*"):  # as if killed after iteration 4 was logged
        f.unlink()
    (run / "checkpoints" / "latest").unlink()
    with open(run / "log.jsonl", "a") as f:
        f.write('{"iter": 4, "loss": 1.')  # and the disk filled up mid-line

    with pytest.raises(RunFolderError, match=r"run: already holds a run \(checkpoints/, log.jsonl, config.yaml, "
                                             r"curves.png, run.json\). Continue it with --resume.*--out.*--force"):
        train(cfg, run, progress=False)
    with pytest.warns(UserWarning, match=r"log.jsonl: 1 line\(s\) are not JSON objects .* line 5"):
        train(cfg, run, resume=True, progress=False)
    assert (run / "curves.png").is_file() and latest_checkpoint(run).name == "iter_0000004.safetensors"
    log = records(run)
    marker = next(i for i, r in enumerate(log) if "resumed_from" in r)
    assert log[marker] == {"iter": 2, "resumed_from": "iter_0000002.safetensors"}
    assert [r["iter"] for r in log if "loss" in r] == [1, 2, 3, 4, 3, 4]
    assert [r["iter"] for r in _last_per_step([r for r in log if "loss" in r])] == [1, 2, 3, 4]
    assert _last_per_step([r for r in log if "loss" in r])[2:] == log[marker + 1:marker + 3]

    config = tmp_path / "tiny.yaml"
    import yaml

    from dgseg.config import config_to_dict

    config.write_text(yaml.safe_dump(config_to_dict(run_config(train__max_iters=1))))
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(run), "--no-progress", "--force"]) == 0
    (old,) = run.glob("previous-*")
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "config.yaml", "curves.png", "log.jsonl",
                                                     "run.json"]
    assert len(json.loads((old / "run.json").read_text())["starts"]) == 2  # the first start and the resume
    assert len(json.loads((run / "run.json").read_text())["starts"]) == 1  # the new run's facts are its own
    assert [r["iter"] for r in records(run) if "loss" in r] == [1]
    assert [p.name for p in (run / "checkpoints").glob("*.safetensors")] == ["iter_0000001.safetensors"]


def test_force_moves_aside_everything_the_run_and_its_evaluations_wrote(tmp_path):
    from dgseg.cli import main
    from dgseg.engine.run_folder import RUN_FILES

    run = tmp_path / "run"
    cfg = tiny_config(train__max_iters=2, train__log_backends=["jsonl", "tensorboard"], eval__examples=1,
                      data__val=[{"name": "synthetic-game", "split": "val", "length": 1, "size": [48, 64]}])
    train(cfg, run, progress=False)
    assert main(["eval", "--checkpoint", str(run), "--corruptions", "fog", "--severities", "1", "--no-progress"]) == 0
    (run / "summary.json").write_text("{}")  # what dgseg demo and dgseg bench write beside a run
    first = sorted(p.name for p in run.iterdir())
    assert {"run.json", "tb", "examples", "corruptions.json", "corruptions.md", "corruptions.png"} <= set(first)
    assert set(first) <= set(RUN_FILES)  # a writer that adds a name to the run folder adds it to RUN_FILES

    train(run_config(train__max_iters=1), run, progress=False, force=True)
    (old,) = run.glob("previous-*")
    assert sorted(p.name for p in old.iterdir()) == first
    facts = json.loads((run / "run.json").read_text())
    assert len(facts["starts"]) == 1 and facts["started"] == facts["starts"][0]["started"]
    assert sorted(p.name for p in run.iterdir()) == sorted(["checkpoints", "config.yaml", "curves.png", "log.jsonl",
                                                            "run.json", old.name])


@pytest.mark.parametrize("entry", ["run.json", "tb/", "examples/", "corruptions.json", "summary.json"])
def test_a_folder_holding_any_run_file_is_refused_without_force(tmp_path, entry):
    from dgseg.engine.run_folder import RunFolderError, claim_run_folder

    if entry.endswith("/"):
        (tmp_path / entry).mkdir()
        (tmp_path / entry / "f").write_text("x")
    else:
        (tmp_path / entry).write_text("{}")
    with pytest.raises(RunFolderError, match=rf"already holds a run \({entry}\)"):
        claim_run_folder(tmp_path)
    moved = claim_run_folder(tmp_path, force=True)
    assert [p.name for p in moved.iterdir()] == [entry.rstrip("/")] and list(tmp_path.iterdir()) == [moved]


def test_end_of_run_failures_never_lose_the_trained_weights(tmp_path, monkeypatch, capsys):
    import errno

    import dgseg.viz

    calls = {"n": 0}
    from dgseg.engine import loggers

    real_append = loggers.append_line

    def full_disk_once(path, line):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(path, line)

    def broken_plot(*args):
        raise ValueError("log.jsonl:37: not a JSON object")

    monkeypatch.setattr(loggers, "append_line", full_disk_once)
    monkeypatch.setattr(dgseg.viz, "plot_curves", broken_plot)
    result = train(run_config(train__max_iters=3), tmp_path, progress=False)
    err = capsys.readouterr().err
    assert result["step"] == 3 and latest_checkpoint(tmp_path).name == "iter_0000003.safetensors"
    assert "log.jsonl (No space left on device); record lost: {\"iter\": 2" in err
    assert "curves.png not drawn (ValueError: log.jsonl:37" in err and "iter_0000003.safetensors" in err
    assert [r["iter"] for r in records(tmp_path)] == [1, 3]


# ------------------------------------------------------------------ item 7: a config that names nothing


@pytest.mark.parametrize("text, missing", [("", "name, data.train"), ("name: x\n", "data.train"),
                                           ("data:\n  train: [{name: synthetic-game}]\n", "name")])
def test_train_refuses_a_config_that_names_no_experiment_or_data(tmp_path, capsys, text, missing):
    from dgseg.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"c.yaml: nothing to train: the config does not set {missing} (" in err
    assert not (tmp_path / "run").exists()


def test_shipped_configs_name_their_experiment_and_data():
    from pathlib import Path

    from dgseg.engine.preflight import missing_for_training

    configs = sorted(Path(__file__).parents[1].glob("configs/*.yaml"))
    assert configs and {c.name: missing_for_training(c) for c in configs} == {c.name: [] for c in configs}


# ------------------------------------------------------------------ items 10, 11, 12: log, messages, strict JSON


def test_samples_left_out_while_pairing_are_written_to_the_log(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "ds" / "train"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "lonely"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        if name != "lonely":
            Image.fromarray(rng.integers(0, 19, (40, 48), dtype=np.uint8)).save(root / "labels" / f"{name}.png")
    spec = {"name": "folder", "root": str(tmp_path / "ds"), "split": "train"}
    with pytest.raises(Exception, match=r"lonely.png: .*leave such files out with --set data.on_error=skip"):
        train(run_config(data__train=[spec], train__max_iters=1), tmp_path / "strict", progress=False)
    with pytest.warns(UserWarning, match="left out while pairing"):
        train(run_config(data__train=[spec], data__on_error="skip", train__max_iters=1), tmp_path / "run",
              progress=False)
    (left,) = [r for r in records(tmp_path / "run") if "skipped_sample" in r]
    assert left["skipped_sample"].endswith("lonely.png") and left["while"] == "listing files" and left["reason"]


def test_a_truncated_checkpoint_names_the_previous_good_one(tmp_path):
    from dgseg.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    for step in (2, 4):
        save_checkpoint(tmp_path, step, {"w": torch.zeros(64)}, {"step": step})
    broken = tmp_path / "checkpoints" / "iter_0000004.safetensors"
    broken.write_bytes(broken.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"iter_0000004.safetensors: not a readable safetensors file .*"
                                              r"The previous checkpoint .*iter_0000002.safetensors reads fine"):
        load_checkpoint(tmp_path)


def test_eval_json_writes_null_for_nan_and_parses_strictly(tmp_path):
    from dgseg.engine.evaluate import write_results

    results = {"synthetic-game": {"mIoU": 50.0, "IoU": [100.0, float("nan")] + [0.0] * 17, "aAcc": 1.0,
                                  "mAcc": float("nan"), "images": 1}}
    write_results(results, tiny_config(), tmp_path)
    text = (tmp_path / "eval.json").read_text()

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    data = json.loads(text, parse_constant=refuse)
    assert data["domains"]["synthetic-game"]["IoU"][:2] == [100.0, None]
    assert data["domains"]["synthetic-game"]["mAcc"] is None


def two_class_folder_config(tmp_path, labels: dict[str, int]) -> Path:
    """A config of the tiny model on a `folder` dataset of two classes (a, b) with 2 images per split, every
    label pixel ``labels[split]`` (7: a value the class set does not define); returns the config file."""
    import numpy as np
    import yaml
    from PIL import Image
    from tiny import tiny_dict

    for split, value in labels.items():
        for sub in ("images", "labels"):
            (tmp_path / "data" / split / sub).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((48, 64, 3), 90 * i, np.uint8)).save(tmp_path / "data" / split / "images" / f"{i}.png")
            Image.fromarray(np.full((48, 64), value, np.uint8)).save(tmp_path / "data" / split / "labels" / f"{i}.png")
    data = tiny_dict(train__max_iters=1)
    data["model"].pop("num_classes", None)
    data["data"].update(classes={"names": ["a", "b"]}, source=None,
                        train=[{"name": "folder", "root": str(tmp_path / "data"), "split": "train"}],
                        val=[{"name": "folder", "root": str(tmp_path / "data"), "split": "val"}])
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def test_a_start_stopped_by_its_data_before_any_iteration_is_moved_aside_by_the_next_start(tmp_path, capsys):
    """A data error in the first batch stops a start after it wrote config.yaml and run.json. Rerunning the
    command with the fix the error names trains: nothing to resume there, and its files are kept aside."""
    from dgseg.cli import main

    # an unknown label in training's data only: the validation images pass the checks made before training
    # (their first one is read), the first batch does not
    config = two_class_folder_config(tmp_path, {"train": 7, "val": 1})
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 2
    assert "unknown_labels" in capsys.readouterr().err
    first = sorted(p.name for p in run.iterdir())
    assert "run.json" in first and "checkpoints" not in first
    assert [r for r in records(run) if "failed_before_first_step" in r][0]["iter"] == 0

    assert main(["train", str(config), "--out", str(run), "--no-progress", "--set", "data.unknown_labels=ignore"]) == 0
    (old,) = run.glob("previous-*")
    assert sorted(p.name for p in old.iterdir()) == first
    assert "held a start that failed before its first step" in capsys.readouterr().out
    assert (run / "checkpoints" / "latest").is_file()


def test_a_bad_first_validation_image_stops_training_before_it_writes_anything(tmp_path, capsys):
    """The first image of each data.val entry is read before training (its size checks): a label it cannot read
    is refused then, not at the first validation, and no run folder is made."""
    from dgseg.cli import main

    config = two_class_folder_config(tmp_path, {"train": 1, "val": 7})
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "unknown_labels" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_folder_with_trained_iterations_but_no_checkpoint_is_refused_naming_force(tmp_path):
    """Trained iterations without a checkpoint (a crash before the first one): not moved aside by itself, and
    the refusal does not send the user to --resume, which needs a checkpoint."""
    import shutil

    from dgseg.engine.run_folder import RunFolderError

    cfg = run_config(train__max_iters=1)
    train(cfg, tmp_path, progress=False)
    for name in ("checkpoints", "examples"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)
    for name in ("curves.png", "eval.json", "eval.md"):
        (tmp_path / name).unlink(missing_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "log.jsonl", "run.json"]  # the log decides
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"iter": 0, "failed_before_first_step": "as if"}\n')  # even beside a failure record
    with pytest.raises(RunFolderError, match=r"no checkpoint to continue \(--resume needs one\).*--force"):
        train(cfg, tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"--resume: no checkpoint in .*nothing to continue.*--force"):
        train(cfg, tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("log", ["", '{"iter": 0, "skipped_sample": "a.png", "reason": "truncated"}\n',
                                 '{"iter": null, "loss": 1.0}\n{"iter": 0, "failed_before_first_step": "x"}\n'])
def test_a_start_without_a_recorded_failure_may_still_be_running_and_is_refused(tmp_path, log):
    """run.json and config.yaml but no training record yet: also a live run before its first log line (every
    train.log_interval steps). Without the failure record (or with a log that cannot be read) it is refused."""
    from dgseg.engine.run_folder import RunFolderError

    cfg = run_config(train__max_iters=1)
    for name in ("run.json", "config.yaml"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "log.jsonl").write_text(log)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(cfg, tmp_path, progress=False)
    assert not list(tmp_path.glob("previous-*"))


def test_with_data_on_error_skip_a_bad_first_validation_image_does_not_hide_the_size_check(tmp_path):
    """A bad first file stands in the next good sample (data.on_error=skip): the sizes are checked on that one,
    before training, instead of the final evaluation failing after the whole schedule."""
    from dgseg.config import ConfigError, load_config

    config = two_class_folder_config(tmp_path, {"train": 1, "val": 1})
    (tmp_path / "data" / "val" / "images" / "0.png").write_bytes(b"not an image")
    cfg = load_config(config, ["data.on_error=skip", "eval.mode=slide", "eval.crop=8", "eval.stride=8"])
    with pytest.raises(ConfigError, match=r"data\.val folder .*eval\.crop 8: the sliding window is 8x8 px"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
