"""train.log_backends: log.jsonl always; TensorBoard scalars and images when asked."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from tiny import tiny_config

from dgseg.config import ConfigError, load_config
from dgseg.engine import loggers
from dgseg.engine.loggers import RunLogger, scalars


def test_a_log_record_becomes_losses_lr_throughput_and_val_scalars():
    record = {"iter": 10, "loss": 2.0, "lr": 1e-4, "grad_norm": 3.0, "time_per_iter": 0.5, "loss_cls": 1.0,
              "eval": {"cityscapes": {"mIoU": 45.5}}}
    assert scalars(record, batch_size=4) == {
        "train/loss": 2.0, "train/lr": 1e-4, "train/grad_norm": 3.0, "train/time_per_iter": 0.5,
        "train/images_per_s": 8.0, "train/loss_cls": 1.0, "val/cityscapes/mIoU": 45.5}


def test_backends_are_validated_and_jsonl_is_required(tmp_path):
    with pytest.raises(ConfigError, match="train.log_backends: expected a list of jsonl, tensorboard"):
        load_config(None, ["train.log_backends=[jsonl, wandb]"])
    with pytest.raises(ConfigError, match="includes jsonl"):
        load_config(None, ["train.log_backends=[tensorboard]"])


def _without_tensorboard(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tb(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tb)


def test_a_missing_tensorboard_package_names_the_extra(tmp_path, monkeypatch):
    _without_tensorboard(monkeypatch)
    with pytest.raises(RuntimeError, match=r"dgseg\[tensorboard\]"):
        loggers._tensorboard_writer(tmp_path)


def test_without_tensorboard_dgseg_train_stops_before_it_writes_anything(tmp_path, monkeypatch, capsys):
    """An error line and exit code 2, not a traceback; no config.yaml left behind that would refuse the same
    command once the package is installed."""
    from dgseg.cli import main

    cfg_file = tmp_path / "tiny.yaml"
    from dgseg.config import dump_config

    cfg_file.write_text(dump_config(tiny_config()))
    _without_tensorboard(monkeypatch)
    out = tmp_path / "run"
    assert main(["train", str(cfg_file), "--out", str(out), "--set", "train.log_backends=[jsonl,tensorboard]"]) == 2
    err = capsys.readouterr().err
    assert "dgseg train: error: train.log_backends includes tensorboard, but the tensorboard package is missing" in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_receives_every_scalar_and_prediction_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dgseg.engine.train import train

    cfg = tiny_config(train__max_iters=2, train__log_interval=1, train__log_backends=["jsonl", "tensorboard"],
                      eval__examples=1)
    train(cfg, tmp_path / "run", progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "train/loss_cls",
            "val/synthetic-game/mIoU", "val/synthetic-night/mIoU"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert "predictions/synthetic-night/0" in tags["images"]
    assert (tmp_path / "run" / "log.jsonl").read_text().count('"loss"') == 2


def test_the_logger_appends_one_json_line_per_record(tmp_path):
    log = RunLogger(tmp_path)
    log.log({"iter": 1, "loss": 1.0})
    log.log({"iter": 2, "loss": 0.5})
    log.images(2, {"d": [{"image": np.zeros((2, 2, 3), np.uint8), "label": np.zeros((2, 2), np.uint8),
                          "pred": np.zeros((2, 2), np.uint8)}]}, np.zeros((1, 3), np.uint8))  # no TB: nothing
    assert (tmp_path / "log.jsonl").read_text().splitlines() == ['{"iter": 1, "loss": 1.0}',
                                                                  '{"iter": 2, "loss": 0.5}']


needs_tb = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")


def _steps(log_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@needs_tb
def test_each_tensorboard_flush_is_one_new_whole_file_and_earlier_files_are_never_touched(tmp_path):
    from dgseg.engine.tb_events import AtomicEventWriter

    tb = AtomicEventWriter(tmp_path, flush_secs=1e9)
    assert tb.flush() is None and list(tmp_path.iterdir()) == []  # nothing pending: no file
    tb.add_scalar("train/loss", 2.0, 1)
    first = tb.flush()
    before = first.read_bytes()
    tb.add_scalar("train/loss", 1.0, 2)
    tb.close()
    assert first.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, first.name[:-6] + "000001"]
    assert _steps(tmp_path, "train/loss") == [(1, 2.0), (2, 1.0)]


@needs_tb
def test_scalars_flush_by_themselves_after_flush_secs(tmp_path):
    from dgseg.engine.tb_events import FLUSH_SECS, AtomicEventWriter

    assert FLUSH_SECS == 120.0  # SummaryWriter's default
    assert not AtomicEventWriter(tmp_path / "a").flush_due()
    log = RunLogger(tmp_path / "b", backends=["jsonl", "tensorboard"])
    log.tb.flush_secs = 0.0
    log.log({"iter": 5, "lr": 1e-4})
    assert len(log.tb.files) == 1 and _steps(tmp_path / "b" / "tb", "train/lr") == [(5, pytest.approx(1e-4))]


@needs_tb
def test_a_failed_tensorboard_write_warns_and_keeps_the_events_for_the_next_flush(tmp_path, monkeypatch, capsys):
    from dgseg.engine import tb_events

    log = RunLogger(tmp_path, backends=["jsonl", "tensorboard"])
    log.log({"iter": 1, "loss": 2.0})

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tb_events, "write_atomic", full_disk)
    log.flush()
    assert "No space left on device" in capsys.readouterr().err and log.tb.files == []
    monkeypatch.undo()
    log.log({"iter": 2, "loss": 1.0})
    log.close()
    assert _steps(tmp_path / "tb", "train/loss") == [(1, 2.0), (2, 1.0)]


@needs_tb
def test_a_symlink_at_an_event_file_name_is_replaced_and_its_target_left_alone(tmp_path):
    from dgseg.engine.tb_events import AtomicEventWriter

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    tb = AtomicEventWriter(tmp_path / "tb")
    (tmp_path / "tb" / f"{tb.prefix}.000000").symlink_to(victim)
    tb.add_scalar("train/loss", 3.0, 1)
    path = tb.flush()
    assert victim.read_text() == "keep me" and not path.is_symlink()
    assert _steps(tmp_path / "tb", "train/loss") == [(1, 3.0)]
