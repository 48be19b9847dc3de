"""A refused command leaves no folder behind that it made, and never removes one that was there before or
anything written: the commands check before they make their output folder, and ``dgseg`` removes the new
output folders a refusal left empty (:mod:`dgseg.made_folders`)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dgseg.cli import main
from dgseg.made_folders import no_folder_left_on_error


@pytest.fixture()
def small(tmp_path):
    """An image smaller than the tiny model takes (8-px patches: at least 9 px a side)."""
    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8), (90, 120, 30)).save(path)
    return path


def refused(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    return capsys.readouterr().err


def test_a_refused_command_leaves_no_folder_it_made(tmp_path, run, small, capsys):
    new = tmp_path / "new"
    commands = {
        "unknown config key": ["demo", "--out", new / "demo", "--set", "nokey=1"],
        "smaller than the model takes": ["predict", "--checkpoint", run, small, "--out", new / "a" / "b", "--no-progress"],
        "unknown method 'nosuch'": ["bench", "--out", new / "bench", "--methods", "nosuch"],
    }
    for message, argv in commands.items():
        assert message in refused(capsys, argv)
        assert not new.exists(), argv  # nor the folders above the --out it would have made


def test_a_folder_that_was_there_before_stays_when_a_command_is_refused(tmp_path, run, small, capsys):
    kept = tmp_path / "kept"
    kept.mkdir()
    assert "smaller than the model takes" in refused(
        capsys, ["predict", "--checkpoint", run, small, "--out", kept, "--no-progress"])
    assert "unknown config key" in refused(capsys, ["demo", "--out", kept / "demo", "--set", "nokey=1"])
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_the_folders_a_failed_export_made_are_removed(tmp_path, run, monkeypatch, capsys):
    """The net under every command: a failure after the output's folders were made (here the exporter's, or in
    the onnxruntime check, which runs before the file is published)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "new" / "sub" / "model.onnx"

    def failing(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", failing)
    assert "exporter failed" in refused(capsys, ["export", "--checkpoint", run, "--format", "onnx", "--out", out])
    assert list(tmp_path.iterdir()) == []  # new/sub/ (and the exporter's temp folder in it) are gone

    monkeypatch.undo()
    monkeypatch.setattr("dgseg.engine.inference.check_onnx", failing)  # fails on the written temp file
    assert "exporter failed" in refused(capsys, ["export", "--checkpoint", run, "--format", "onnx", "--out", out])
    assert list(tmp_path.iterdir()) == []  # nothing published: no model.onnx, no folders


def test_only_new_folders_that_are_still_empty_are_removed(tmp_path):
    there = tmp_path / "there"
    there.mkdir()
    with pytest.raises(ValueError), no_folder_left_on_error([there / "a" / "b", tmp_path / "c" / "d", None, ""]):
        (there / "a" / "b").mkdir(parents=True)
        (tmp_path / "c" / "d").mkdir(parents=True)
        (tmp_path / "c" / "note.txt").write_text("written")
        raise ValueError("refused")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c", "note.txt", "there"]  # c holds a file: kept
    with no_folder_left_on_error([tmp_path / "e"]):  # no error: nothing removed
        (tmp_path / "e").mkdir()
    assert (tmp_path / "e").is_dir()


def test_the_library_calls_check_before_they_make_their_folder(tmp_path, run, small):
    """Without the command line's net: ``run_demo``, ``run_bench`` and ``write_predictions`` refuse first."""
    from dgseg.bench import run_bench
    from dgseg.demo import run_demo
    from dgseg.engine.inference import load_model
    from dgseg.engine.submission import write_predictions

    with pytest.raises(ValueError, match="unknown config key 'nokey'"):
        run_demo(quick=True, out=tmp_path / "demo", overrides=["nokey=1"])
    with pytest.raises(ValueError, match="unknown config key 'nokey'"):
        run_bench(["rein"], [0], tmp_path / "bench", overrides=["nokey=1"], isolate=False)
    model, cfg = load_model(run)
    with pytest.raises(ValueError, match="smaller than the model takes"):
        write_predictions(model, cfg, [(small, small.with_suffix("").relative_to(tmp_path))], tmp_path / "pred",
                          progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.png"]
