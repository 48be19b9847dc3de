"""Every file dgseg writes goes to a temp file in the target folder and is renamed over the name: never
written through a symlink, never left half-written, with the umask's mode (issue 16, items 2 and 12)."""

from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_config

import dgseg
from dgseg.atomic import (
    LinkError,
    OutputExistsError,
    append_line,
    atomic_path,
    check_new_output,
    write_atomic,
)
from dgseg.cli import main
from dgseg.engine.checkpoint import save_checkpoint
from dgseg.engine.train import checkpoint_meta

SRC = Path(dgseg.__file__).parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with an untrained tiny checkpoint (eval/predict need only its weights and config)."""
    cfg = tiny_config(data__val=[{"name": "synthetic-game", "split": "val", "length": 1, "size": [48, 64]}])
    torch.manual_seed(0)
    model = dgseg.build_model(cfg)
    root = tmp_path_factory.mktemp("run")
    save_checkpoint(root, 2, model.trainable_state_dict(), checkpoint_meta(cfg, 2))
    return root


def outside_file(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    return victim


def test_predict_replaces_a_symlink_at_an_output_name_and_leaves_its_target_alone(tmp_path, run):
    image = tmp_path / "in" / "street.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    out.mkdir()
    victim = outside_file(tmp_path)
    for suffix in ("labelTrainIds", "color", "overlay"):
        (out / f"street_{suffix}.png").symlink_to(victim)
    assert main(["predict", "--checkpoint", str(run), str(image), "--out", str(out), "--no-progress"]) == 0
    assert victim.read_text() == "keep me"
    for suffix in ("labelTrainIds", "color", "overlay"):
        written = out / f"street_{suffix}.png"
        assert not written.is_symlink() and Image.open(written).size == (32, 24)


def test_eval_out_replaces_symlinked_report_files_and_leaves_their_targets_alone(tmp_path, run):
    out = tmp_path / "report"
    out.mkdir()
    victim = outside_file(tmp_path)
    (out / "eval.md").symlink_to(victim)
    (out / "eval.json").symlink_to(victim)
    assert main(["eval", "--checkpoint", str(run), "--out", str(out), "--no-progress"]) == 0
    assert victim.read_text() == "keep me"
    assert not (out / "eval.md").is_symlink() and (out / "eval.md").read_text().startswith("# Evaluation: tiny")
    assert not (out / "eval.json").is_symlink()


def test_a_named_output_file_that_exists_is_refused_unless_forced_and_a_folder_always(tmp_path):
    """``export --out``, ``text-embed --out`` and ``predict --zip`` check their file with one helper."""
    free = tmp_path / "new.bin"
    assert check_new_output(free) == free and not free.exists()
    kept = tmp_path / "kept.bin"
    kept.write_text("mine")
    dangling = tmp_path / "link.bin"
    dangling.symlink_to(tmp_path / "nowhere")
    for path in (kept, dangling):
        with pytest.raises(OutputExistsError, match=f"{path}: already exists; pass --force to replace it, or "
                                                    "choose another --zip FILE"):
            check_new_output(path, option="--zip FILE")
        assert check_new_output(path, force=True) == path
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}: is a folder; --out takes a file name"):
        check_new_output(tmp_path, force=True)
    assert kept.read_text() == "mine" and dangling.is_symlink()
    with pytest.raises(NotADirectoryError, match=f"{kept / 'x.bin'}: is inside {kept}, which is a file, not a "
                                                 "folder; choose another --out"):
        check_new_output(kept / "x.bin")


def test_write_atomic_leaves_the_old_file_whole_when_the_writer_fails(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")

    def fails(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, fails)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("export failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_append_line_refuses_a_symlink_and_mends_a_cut_last_line(tmp_path):
    victim = outside_file(tmp_path)
    log = tmp_path / "log.jsonl"
    log.symlink_to(victim)  # followed, it writes elsewhere; replaced, the log restarts without the lines behind it
    with pytest.raises(LinkError, match=r"log.jsonl: is a symbolic link; dgseg does not write through links"):
        append_line(log, '{"iter": 1}')
    assert victim.read_text() == "keep me" and log.is_symlink()
    log.unlink()
    log.write_text('{"iter": 1}\n{"iter": 2, "lo')  # a cut line from a crash elsewhere
    append_line(log, '{"iter": 3}')
    assert log.read_text().splitlines() == ['{"iter": 1}', '{"iter": 2, "lo', '{"iter": 3}']


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder with every entry a resumed run appends to or writes into (log, facts, checkpoints, examples,
    TensorBoard events)."""
    from dgseg.engine.train import train

    root = tmp_path_factory.mktemp("trained") / "run"
    cfg = tiny_config(train__max_iters=2, train__log_backends=["jsonl", "tensorboard"], eval__examples=1,
                      data__val=[{"name": "synthetic-game", "split": "val", "length": 1, "size": [48, 64]}])
    train(cfg, root, progress=False)
    return cfg, root


def snapshot(path: Path) -> dict[str, bytes]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): p.read_bytes() for p in files}


@pytest.mark.parametrize("entry", ["log.jsonl", "run.json", "checkpoints", "examples", "tb"])
def test_resume_refuses_a_run_folder_whose_log_facts_or_own_folders_are_links(tmp_path, trained_run, entry):
    import shutil

    from dgseg.engine.train import train

    cfg, trained = trained_run
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    target = tmp_path / "elsewhere" / entry  # e.g. on another disk: the history is there
    target.parent.mkdir()
    (run / entry).rename(target)
    (run / entry).symlink_to(target)
    before = {name: snapshot(run / name) for name in ("log.jsonl", "run.json", "checkpoints")}
    kept = snapshot(target)
    with pytest.raises(LinkError, match=rf"run/{entry}: is a symbolic link; dgseg does not write through links"):
        train(cfg, run, resume=True, progress=False)
    assert snapshot(target) == kept and (run / entry).is_symlink()  # refused before anything was written
    assert {name: snapshot(run / name) for name in before} == before


def test_writers_refuse_a_symlinked_checkpoints_examples_or_tb_folder(tmp_path):
    from dgseg.engine.examples import save_examples
    from dgseg.engine.tb_events import AtomicEventWriter

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoints", "examples", "tb"):
        (run / name).symlink_to(elsewhere)
    with pytest.raises(LinkError, match=r"run/checkpoints: is a symbolic link"):
        save_checkpoint(run, 1, {"w": torch.zeros(1)}, {"x": 1})
    example = {"image": np.zeros((4, 4, 3), np.uint8), "label": np.zeros((4, 4), np.uint8),
               "pred": np.zeros((4, 4), np.uint8)}
    with pytest.raises(LinkError, match=r"run/examples: is a symbolic link"):
        save_examples(run, {"game": [example]})
    with pytest.raises(LinkError, match=r"run/tb: is a symbolic link"):
        AtomicEventWriter(run / "tb")
    assert list(elsewhere.iterdir()) == []
    (run / "examples").unlink()
    (run / "examples").mkdir()
    (run / "examples" / "game").symlink_to(elsewhere)  # a domain's folder inside it too
    with pytest.raises(LinkError, match=r"examples/game: is a symbolic link"):
        save_examples(run, {"game": [example]})
    assert list(elsewhere.iterdir()) == []


def test_a_new_evaluation_replaces_the_example_images_only_after_eval_json_names_the_new_ones(tmp_path,
                                                                                             monkeypatch):
    """An evaluation that dies between writing its images and eval.json leaves the old eval.json naming the
    old, unchanged images; a finished one removes the old images and keeps the user's own files."""
    import dgseg.engine.evaluate as evaluate_module
    from dgseg.engine.evaluate import write_results

    results = {"synthetic-game": {"mIoU": 50.0, "IoU": [50.0] * 19, "aAcc": 1.0, "mAcc": 1.0, "images": 1}}

    def examples(value):
        return {"synthetic-game": [{"image": np.full((4, 6, 3), value, np.uint8),
                                    "label": np.full((4, 6), value, np.uint8), "pred": np.full((4, 6), value, np.uint8)}]}

    def named(run):
        record = json.loads((run / "eval.json").read_text())
        return {run / v for items in record["examples"].values() for item in items for v in item.values()}

    run = tmp_path / "run"
    run.mkdir()
    write_results(results, tiny_config(), run, examples=examples(1))
    first = named(run)
    mine = run / "examples" / "synthetic-game" / "notes.txt"
    mine.write_text("mine")
    with monkeypatch.context() as m:
        def crash(path, data, *args, **kwargs):
            raise OSError("disk full")

        m.setattr(evaluate_module, "write_atomic", crash)
        with pytest.raises(OSError, match="disk full"):
            write_results(results, tiny_config(), run, examples=examples(2))
    assert named(run) == first
    assert all(np.asarray(Image.open(f)).max() == 1 for f in first if f.suffix == ".png")  # the old images
    write_results(results, tiny_config(), run, examples=examples(3))
    second = named(run)
    assert second.isdisjoint(first) and all(np.asarray(Image.open(f)).max() == 3 for f in second
                                            if f.suffix == ".png")
    left = set((run / "examples" / "synthetic-game").iterdir())
    assert left == second | {mine}  # the first and the crashed evaluation's images are gone, notes.txt kept
    write_results(results, tiny_config(), run, examples={})  # eval.examples: 0 -> eval.json names none
    assert set((run / "examples" / "synthetic-game").iterdir()) == {mine}


def test_a_run_folder_that_is_itself_a_link_trains_into_the_folder_it_points_to(tmp_path):
    from dgseg.engine.train import train

    big_disk = tmp_path / "big" / "run"
    big_disk.mkdir(parents=True)
    (tmp_path / "run").symlink_to(big_disk)
    cfg = tiny_config(train__max_iters=2, train__checkpoint_interval=1, data__val=[], data__source=None)
    train(cfg, tmp_path / "run", progress=False)
    train(tiny_config(train__max_iters=3, train__checkpoint_interval=1, data__val=[], data__source=None),
          tmp_path / "run", resume=True, progress=False)
    assert (big_disk / "checkpoints" / "iter_0000003.safetensors").is_file()
    assert len(json.loads((big_disk / "run.json").read_text())["starts"]) == 2


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_and_checkpoints_get_the_umask_mode_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "run", 1, {"w": torch.zeros(2)}, {"x": 1}, train_state={"step": 1})
        write_atomic(tmp_path / "eval.md", "x")
        with atomic_path(tmp_path / "m.onnx") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    files = [*(tmp_path / "run" / "checkpoints").iterdir(), tmp_path / "eval.md", tmp_path / "m.onnx"]
    assert len(files) == 6
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(0o666 & ~umask)
                                                                             for p in files}


WRITE_CALLS = {"write_text", "write_bytes", "save_file", "mkstemp", "NamedTemporaryFile", "savefig", "save",
               "SummaryWriter", "FileWriter", "EventFileWriter", "save_model", "mkdtemp"}  # TensorBoard's appending writers


def test_no_module_writes_a_file_except_through_dgseg_atomic():
    """A new writer must use dgseg.atomic (write_atomic / atomic_path / write_temp): no direct file writes."""
    found = []
    for file in SRC.rglob("*.py"):
        if file.name == "atomic.py":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "save" and isinstance(node.func, ast.Name):
                continue  # safetensors.torch.save: returns bytes
            torch_save = getattr(node.func, "value", None) is not None and getattr(node.func.value, "id", "") == "torch"
            target = node.args[1 if torch_save else 0] if len(node.args) > int(torch_save) else None
            if name in ("save", "savefig") and isinstance(target, ast.Name):
                continue  # writes into a file object handed over by dgseg.atomic
            mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None)
            mode = next((k.value.value for k in node.keywords if k.arg == "mode"
                         and isinstance(k.value, ast.Constant)), mode)
            writes_open = name == "open" and isinstance(mode, str) and any(c in mode for c in "wax+")
            if name in WRITE_CALLS or writes_open or (name == "replace" and isinstance(node.func, ast.Attribute)
                                                      and getattr(node.func.value, "id", "") == "os"):
                found.append(f"{file.relative_to(SRC)}:{node.lineno} {name}")
    # checkpoint.py renames the temp files of one checkpoint set in order; run_folder.py moves an old run aside
    # fileio.py makes the temp files dgseg.atomic writes; onnx_files.py writes in a private temp folder and
    # publishes through dgseg.atomic
    allowed = {"engine/checkpoint.py": {"replace"}, "engine/run_folder.py": {"replace"}, "fileio.py": {"mkstemp"},
               "engine/onnx_files.py": {"save_model", "mkdtemp"}}
    found = [f for f in found if f.split(" ")[1] not in allowed.get(f.split(":")[0], set())]
    assert found == []
