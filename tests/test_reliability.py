"""Reliability of training: killed and signalled runs resume exactly, non-finite steps, bad samples,
a full disk, and configuration errors reported before anything trains (issue 9).

Other suites cover the rest: test_checkpoint.py (atomic saves, ENOSPC while saving, corrupt files),
test_engine.py (NaN stop, in-process resume), test_config.py (unknown keys, types, impossible values),
test_data_datasets.py (pairing, truncated files, size mismatch, unknown label values).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny import tiny_config

import dgseg
from dgseg.cli import main as cli
from dgseg.config import config_to_dict
from dgseg.data import DataError
from dgseg.engine import checkpoint as ckpt
from dgseg.engine import train as train_module
from dgseg.engine.checkpoint import latest_checkpoint, load_checkpoint, load_train_state, save_checkpoint
from dgseg.engine.train import TrainingError, checkpoint_meta, train

MAX_ITERS = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the subprocesses: the same arithmetic in both, and no
    oversubscription of a busy CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(**sections):
    sections.setdefault("train__max_iters", MAX_ITERS)
    sections.setdefault("train__checkpoint_interval", 2)
    return tiny_config(data__val=[], data__source=None, **sections)


def write_config(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def start_training(config: Path, out: Path, log: Path) -> subprocess.Popen:
    """``dgseg train`` in its own process group (as a shell job: Ctrl-C reaches the group)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "dgseg", "train", str(config), "--out", str(out), "--no-progress"],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd=out.parent, start_new_session=True,
        )


def wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before the test could interrupt it:\n"
                        f"{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for the training subprocess:\n{log.read_text()}")
        time.sleep(0.005)


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    a, meta_a = load_checkpoint(latest_checkpoint(run_a))
    b, meta_b = load_checkpoint(latest_checkpoint(run_b))
    assert meta_a["step"] == meta_b["step"] == MAX_ITERS
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(run_config(), out, progress=False)
    return out


# ------------------------------------------------------------------------------------------ interruptions


def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, uninterrupted):
    config = write_config(tmp_path / "tiny.yaml", run_config())
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_training(config, out, log)
    wait_until(lambda: (out / "checkpoints" / "latest").exists(), proc, log)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    killed_at = load_checkpoint(latest_checkpoint(out))[1]["step"]
    assert 0 < killed_at < MAX_ITERS

    assert cli(["train", str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert_same_weights(uninterrupted, out)


@pytest.mark.parametrize("sig, num_workers, group", [
    (signal.SIGTERM, 0, False),  # e.g. `kill PID`, a scheduler's notice
    (signal.SIGINT, 1, True),    # Ctrl-C: the loader worker gets it too
], ids=["SIGTERM", "SIGINT-to-the-group-with-a-worker"])
def test_a_signal_saves_a_checkpoint_exits_cleanly_and_resume_completes(tmp_path, uninterrupted, sig,
                                                                        num_workers, group):
    cfg = run_config(train__checkpoint_interval=1000, data__num_workers=num_workers)
    config = write_config(tmp_path / "tiny.yaml", cfg)
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_training(config, out, log)
    wait_until(lambda: (out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 1, proc, log)
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    assert proc.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert "stopped by signal at iteration" in text, text
    stopped_at = int(text.split("stopped by signal at iteration ")[1].split(";")[0])
    assert 0 < stopped_at < MAX_ITERS
    assert latest_checkpoint(out).name == f"iter_{stopped_at:07d}.safetensors"
    assert load_train_state(out)["step"] == stopped_at

    assert cli(["train", str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert_same_weights(uninterrupted, out)


# ------------------------------------------------------------------------------------------ numerical faults


def build_model(cfg):
    """The model train() would build (its frozen random-init backbone depends on the seed)."""
    torch.manual_seed(cfg.train.seed)
    return dgseg.build_model(cfg)


def poison_loss(monkeypatch, model, calls_to_poison):
    """Make the head's loss NaN on the given (1-based) calls; returns the call counter."""
    real = type(model.head).loss
    calls = {"n": 0}

    def poisoned(self, outputs, labels):
        calls["n"] += 1
        losses = real(self, outputs, labels)
        if calls_to_poison == "all" or calls["n"] in calls_to_poison:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    monkeypatch.setattr(type(model.head), "loss", poisoned)
    return calls


def test_on_nan_skip_skips_the_step_logs_the_batch_files_and_completes(tmp_path, monkeypatch, capsys):
    cfg = run_config(train__max_iters=3, train__on_nan="skip")
    model = build_model(cfg)
    calls = poison_loss(monkeypatch, model, {2})
    result = train(cfg, tmp_path, progress=False, model=model)
    assert result["step"] == 3 and result["skipped_steps"] == 1 and calls["n"] == 4
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    (skip,) = [r for r in records if "skipped" in r]
    assert skip["iter"] == 2 and skip["skipped"] == "non-finite"
    assert np.isnan(skip["losses"]["loss_cls"])
    assert len(skip["files"]) == cfg.train.batch_size and all(f.startswith("synthetic://") for f in skip["files"])
    assert [r["iter"] for r in records if "loss" in r] == [1, 2, 3]
    assert "1 non-finite steps skipped" in capsys.readouterr().out
    assert load_train_state(tmp_path)["skipped_steps"] == 1


def test_resume_after_a_skipped_step_continues_the_same_data_stream(tmp_path, monkeypatch):
    cfg = run_config(train__max_iters=4, train__on_nan="skip")
    model = build_model(cfg)
    poison_loss(monkeypatch, model, {2})
    full = tmp_path / "full"
    train(cfg, full, progress=False, model=model)
    monkeypatch.undo()

    part = tmp_path / "part"  # the run as it was when killed after iteration 2 (one skipped batch behind it)
    (part / "checkpoints").mkdir(parents=True)
    for f in (full / "checkpoints").glob("iter_0000002.*"):
        (part / "checkpoints" / f.name).write_bytes(f.read_bytes())
    result = train(cfg, part, resume=True, progress=False)
    assert result["skipped_steps"] == 1
    a, _ = load_checkpoint(latest_checkpoint(full))
    b, _ = load_checkpoint(latest_checkpoint(part))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_endless_non_finite_steps_stop_even_when_skipping(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "MAX_CONSECUTIVE_SKIPS", 3)
    cfg = run_config(train__max_iters=3, train__on_nan="skip")
    model = build_model(cfg)
    poison_loss(monkeypatch, model, "all")
    with pytest.raises(TrainingError, match=r"iteration 1 \(3 non-finite iterations in a row.*synthetic://"):
        train(cfg, tmp_path, progress=False, model=model)
    assert latest_checkpoint(tmp_path).name == "iter_0000000.safetensors"


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step:UserWarning")
def test_fp16_gradient_overflow_is_left_to_the_grad_scaler(tmp_path, monkeypatch):
    """An overflow of the scaled gradient is what a GradScaler expects (it skips that update and lowers
    its scale); it is not a NaN fault. Simulated on CPU with a scale that overflows any loss."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled=True: real("cpu", init_scale=2.0**127))
    cfg = run_config(train__max_iters=2)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    result = train(cfg, tmp_path, progress=False, model=model)
    assert result["step"] == 2
    assert load_train_state(tmp_path)["scaler"]["scale"] == 2.0**125  # halved on each overflow
    weights, _ = load_checkpoint(tmp_path)
    assert all(torch.equal(weights[k], before[k]) for k in before)  # both updates were skipped


# ------------------------------------------------------------------------------------------ bad data


def folder_dataset(root: Path) -> dict[str, Path]:
    """Four good image/label pairs (40 x 48), a truncated image and a label of another size."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    files = {}
    for name in ("a", "b", "c_truncated", "d", "e_other_size", "f"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        size = (30, 48) if name == "e_other_size" else (40, 48)
        Image.fromarray(rng.integers(0, 19, size, dtype=np.uint8)).save(root / "labels" / f"{name}.png")
        files[name] = root / "images" / f"{name}.png"
    data = files["c_truncated"].read_bytes()
    files["c_truncated"].write_bytes(data[: len(data) // 2])
    return files


def folder_config(root: Path, on_error: str, num_workers: int = 0):
    return run_config(train__max_iters=3, data__train=[{"name": "folder", "root": str(root), "split": "train"}],
                      data__on_error=on_error, data__num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_bad_samples_are_skipped_counted_and_reported_at_the_end(tmp_path, capsys, num_workers):
    files = folder_dataset(tmp_path / "data")
    cfg = folder_config(tmp_path / "data", "skip", num_workers)  # 3 iterations x 2 = every sample once
    # a worker's warnings go to its own stderr; the report at the end is what must be complete
    with pytest.warns(UserWarning, match="skipping a bad sample") if num_workers == 0 else contextlib.nullcontext():
        result = train(cfg, tmp_path / "run", progress=False)
    assert result["step"] == 3
    reasons = dict(result["skipped_samples"])
    assert set(reasons) == {str(files["c_truncated"]), str(files["e_other_size"])}
    assert "unreadable or truncated image" in reasons[str(files["c_truncated"])]
    assert "label is 48x30 but its image" in reasons[str(files["e_other_size"])]
    out = capsys.readouterr().out
    assert "note: 2 bad samples skipped" in out
    assert f"skipped {files['c_truncated']}: " in out and f"skipped {files['e_other_size']}: " in out
    logged = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {r["skipped_sample"] for r in logged if "skipped_sample" in r} == set(reasons)
    assert len(load_train_state(tmp_path / "run")["skipped_samples"]) == 2  # kept across --resume


def test_bad_sample_with_on_error_raise_stops_naming_the_file(tmp_path):
    folder_dataset(tmp_path / "data")
    cfg = folder_config(tmp_path / "data", "raise")
    with pytest.raises(DataError, match=r"(c_truncated\.png: unreadable or truncated)|(e_other_size\.png: label is)"):
        train(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unknown_label_values_stop_training_unless_ignored_then_each_file_is_logged_and_counted(
        tmp_path, capsys, num_workers):
    root = tmp_path / "data"
    folder_dataset(root)
    for name in ("c_truncated", "e_other_size"):  # only the unknown values are under test here
        (root / "images" / f"{name}.png").unlink()
        (root / "labels" / f"{name}.png").unlink()
    lab = np.zeros((40, 48), np.uint8)
    lab[0, :3] = (40, 254, 7)  # 40 and 254: beyond the 19 classes, not 255
    Image.fromarray(lab).save(root / "labels" / "b.png")
    with pytest.raises(DataError, match=r"b\.png: label values \[40, 254\] are not defined by folder .*19 classes"):
        train(folder_config(root, "raise", num_workers), tmp_path / "stopped", progress=False)
    cfg = run_config(train__max_iters=3, data__train=[{"name": "folder", "root": str(root), "split": "train"}],
                     data__unknown_labels="ignore", data__num_workers=num_workers)
    result = train(cfg, tmp_path / "run", progress=False)  # 3 iterations x 2 = every sample at least once
    label_b = str(root / "labels" / "b.png")
    assert [p for p, _ in result["unknown_labels"]] == [label_b]
    assert "note: 1 label files had values the dataset does not define" in capsys.readouterr().out
    logged = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    (line,) = [r for r in logged if "unknown_labels" in r]
    assert line["unknown_labels"] == label_b and "[40, 254] read as 255" in line["reason"]
    assert [p for p, _ in load_train_state(tmp_path / "run")["unknown_labels"]] == [label_b]  # across --resume


def test_full_disk_while_checkpointing_stops_with_the_file_and_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "tiny.yaml", run_config(train__max_iters=3, train__checkpoint_interval=1))
    real_save, real_fsync, saves = train_module.save_checkpoint, os.fsync, []

    def save(*args, **kwargs):
        saves.append(args[1])
        return real_save(*args, **kwargs)

    def fsync(fd):
        if len(saves) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(train_module, "save_checkpoint", save)
    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    assert cli(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "could not write checkpoint file" in err and "iter_0000002" in err
    assert "no space left on device" in err and "iter_0000001.safetensors) is kept" in err
    assert latest_checkpoint(tmp_path / "run").name == "iter_0000001.safetensors"
    assert load_train_state(tmp_path / "run")["step"] == 1
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ config errors


def test_missing_weights_file_is_an_error_before_anything_is_written(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", run_config())
    missing = tmp_path / "weights" / "dinov2_vits14_pretrain.pth"
    code = cli(["train", str(config), "--out", str(tmp_path / "run"), "--set", f"model.backbone.weights={missing}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.backbone.weights: file not found" in err and str(missing) in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run folder with a checkpoint of the tiny model (19 classes), written without training."""
    out = tmp_path_factory.mktemp("untrained")
    cfg = run_config()
    model = dgseg.build_model(cfg)
    save_checkpoint(out, 0, model.trainable_state_dict(), checkpoint_meta(cfg, 0))
    return out


@pytest.mark.parametrize("override, expected", [
    ("data.classes=synthia16", "num_classes: checkpoint has 19, current setup has 16"),
    ("model.backbone.name=vit_base_patch16_224",
     "backbone.name: checkpoint has 'vit_small_patch14_dinov2', current setup has 'vit_base_patch16_224'"),
])
def test_eval_of_a_checkpoint_of_another_setup_names_the_file_and_the_field(untrained_run, capsys, override,
                                                                            expected):
    code = cli(["eval", "--checkpoint", str(untrained_run), "--set", override, "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and str(untrained_run) in err


def test_resume_from_a_checkpoint_of_another_num_classes_is_refused(tmp_path, untrained_run, capsys):
    config = write_config(tmp_path / "tiny.yaml", run_config(data__classes="synthia16"))
    assert cli(["train", str(config), "--out", str(untrained_run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "iter_0000000.safetensors does not fit this model" in err and "num_classes" in err


def test_missing_checkpoint_file_is_an_error(tmp_path, capsys):
    assert cli(["eval", "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors: no such checkpoint file" in capsys.readouterr().err
