"""Named single-file outputs (``export``, ``text-embed``, ``predict --zip``) never replace a file that was not
there when dgseg checked, and an ONNX export over 2 GB lands whole: its graph and one ``<name>.data`` file,
nothing else in the user's folder. The temp folder a killed export leaves is removed by the next export to that
name when its export is gone, kept and named otherwise."""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

import dgseg
from dgseg.atomic import OutputExistsError, publish, write_atomic
from dgseg.cli import main
from dgseg.data.classes import config_class_set
from dgseg.engine.checkpoint import save_checkpoint
from dgseg.engine.classes_meta import onnx_class_metadata
from dgseg.engine.export_temps import LOCK, clear_leftovers, hold
from dgseg.engine.inference import check_onnx, export_onnx, load_model
from dgseg.engine.onnx_files import data_file_of
from dgseg.engine.train import checkpoint_meta


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = dgseg.build_model(cfg)
    root = tmp_path_factory.mktemp("run")
    save_checkpoint(root, 0, {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")},
                    checkpoint_meta(cfg, 0))
    return root


def test_a_file_that_appears_while_dgseg_writes_is_kept_unless_replacing(tmp_path):
    target = tmp_path / "m.safetensors"

    def racing_writer(f):  # another process creates the name after the check, before the rename
        target.write_text("theirs")
        f.write(b"ours")

    with pytest.raises(OutputExistsError, match=f"{target}: appeared while dgseg was writing it and is kept; "
                                                 "pass --force to replace it"):
        write_atomic(target, racing_writer, replace=False)
    assert target.read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    write_atomic(target, racing_writer, replace=True)
    assert target.read_text() == "ours"


def test_without_hard_links_the_no_replace_publish_checks_then_renames(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "new.tmp").write_text("ours")
    assert publish(tmp_path / "new.tmp", tmp_path / "new", replace=False).read_text() == "ours"
    (tmp_path / "old").write_text("theirs")
    (tmp_path / "again.tmp").write_text("ours")
    with pytest.raises(OutputExistsError, match="old: appeared while dgseg was writing it"):
        publish(tmp_path / "again.tmp", tmp_path / "old", replace=False)
    assert (tmp_path / "old").read_text() == "theirs"


@pytest.mark.parametrize("command", [["export", "--format", "full"], ["export", "--format", "onnx"]])
def test_cli_outputs_appearing_after_the_check_are_kept_without_force(tmp_path, run, command, monkeypatch, capsys):
    if "onnx" in command:
        pytest.importorskip("onnxruntime")
    out = tmp_path / "model.out"
    monkeypatch.setattr("dgseg.atomic.check_new_output", lambda path, force=False, option="--out": path)
    out.write_text("theirs")  # the check is skipped: as if the file came between the check and the rename
    assert main([*command, "--checkpoint", str(run), "--out", str(out)]) == 2
    assert "appeared while dgseg was writing it and is kept" in capsys.readouterr().err
    assert out.read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["model.out"]
    assert main([*command, "--checkpoint", str(run), "--out", str(out), "--force"]) == 0
    assert out.stat().st_size > 1000


def torch_writes_weights_outside(monkeypatch) -> list[str]:
    """torch.onnx.export as it behaves for a model over 2 GB: one file per weight tensor, named after the
    tensor, in the folder of the file it writes (reproduced at tiny size with onnx's own converter). Returns
    the list the names of those files are added to."""
    import onnx

    real, written = torch.onnx.export, []

    def export(module, args, f, **kwargs):
        real(module, args, f, **kwargs)
        folder, before = os.path.dirname(f), set(os.listdir(os.path.dirname(f)))
        onnx.save_model(onnx.load(f), f, save_as_external_data=True, all_tensors_to_one_file=False,
                        size_threshold=0)
        written.extend(sorted(set(os.listdir(folder)) - before))

    monkeypatch.setattr(torch.onnx, "export", export)
    return written


def test_an_onnx_export_over_2gb_lands_as_its_graph_and_one_data_file(tmp_path, run, monkeypatch):
    pytest.importorskip("onnxruntime")
    model, cfg = load_model(run)
    tensor_files = torch_writes_weights_outside(monkeypatch)
    export_onnx(model, cfg, tmp_path / "probe" / "m.onnx", (32, 48))
    assert len(tensor_files) > 10  # the exporter did write one file per tensor (in its private folder)
    out = tmp_path / "out"
    out.mkdir()
    keep = out / tensor_files[0]  # a user's file bearing a tensor's name is never touched
    keep.write_text("mine")
    umask = os.umask(0o022)  # a umask under which onnx's own 0600 would show
    try:
        path = export_onnx(model, cfg, out / "m.onnx", (32, 48))
    finally:
        os.umask(umask)
    assert sorted(p.name for p in out.iterdir()) == sorted([keep.name, "m.onnx", "m.onnx.data"])
    assert keep.read_text() == "mine" and data_file_of(path).stat().st_size > path.stat().st_size
    modes = {stat.S_IMODE(f.stat().st_mode) for f in (path, data_file_of(path))}
    assert modes == {0o644}  # the umask's, as any file dgseg writes (onnx creates its data file 0600)
    assert check_onnx(model, path, (32, 48)) <= 1e-3  # onnxruntime reads the weights from m.onnx.data
    assert onnx_class_metadata(path)["classes"] == list(config_class_set(cfg).names)


def test_an_existing_data_file_is_kept_and_the_graph_not_written_without_replace(tmp_path, run, monkeypatch):
    pytest.importorskip("onnxruntime")
    model, cfg = load_model(run)
    torch_writes_weights_outside(monkeypatch)
    (tmp_path / "m.onnx.data").write_text("theirs")
    with pytest.raises(OutputExistsError, match="m.onnx.data: appeared while dgseg was writing it"):
        export_onnx(model, cfg, tmp_path / "m.onnx", (32, 48), replace=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.data"]
    assert (tmp_path / "m.onnx.data").read_text() == "theirs"
    path = export_onnx(model, cfg, tmp_path / "m.onnx", (32, 48), replace=True)
    assert check_onnx(model, path, (32, 48)) <= 1e-3


def killed_export(folder, name: str):
    """The temp folder an export to ``folder/name`` leaves when it is killed: made and locked as
    :func:`dgseg.engine.onnx_files.write_onnx` does, by a process that then dies of SIGKILL."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the export, killed mid-way
        try:
            work = tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            hold(Path(work))
            (Path(work) / "model.onnx.data").write_bytes(b"0" * 1000)
            os.write(write, os.path.basename(work).encode())
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)  # never back into pytest
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with os.fdopen(read) as f:
        return folder / f.read()


def test_the_temp_folder_of_a_killed_export_is_removed_by_the_next_export_to_that_name(tmp_path, run, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    left = killed_export(tmp_path, "m.onnx")
    other = killed_export(tmp_path, "other.onnx")  # another output's: not this export's to judge
    old = tmp_path / ".m.onnx.abcd1234.tmp"  # an older dgseg's, without a lock file: kept, and named
    old.mkdir()
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (f"export: removed 1 temp folder(s) that an earlier export of {out} left when it was stopped: "
            f"{left.name}") in err
    assert (f"export: kept 1 temp folder(s) of another export of {out} beside it: {old.name} (running now, or dgseg "
            "cannot tell that it is not: an older dgseg's, another machine's); remove them when no export to that "
            "name runs") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old.name, other.name, "m.onnx"])


def test_a_temp_folder_is_removed_only_when_its_export_is_gone_and_was_on_this_machine(tmp_path):
    out = tmp_path / "m.onnx"
    running = Path(tempfile.mkdtemp(dir=tmp_path, prefix=".m.onnx.", suffix=".tmp"))
    held = hold(running)  # an export running now (flock locks conflict between open files, in one process too)
    elsewhere = killed_export(tmp_path, "m.onnx")
    (elsewhere / LOCK).write_text("the boot id of another machine")  # its lock cannot be judged here
    gone = killed_export(tmp_path, "m.onnx")
    try:
        assert clear_leftovers(out) == ([gone], sorted([running, elsewhere]))
    finally:
        os.close(held)
    assert clear_leftovers(out) == ([running], [elsewhere])  # once its export ended without removing it


def test_an_export_named_as_the_exporters_own_folder_lands_whole(tmp_path, run):
    """The temp folder holds the exporter's export/ and the lock: the finished file is made in a folder of its own."""
    pytest.importorskip("onnx")
    model, cfg = load_model(run)
    path = export_onnx(model, cfg, tmp_path / "export", (32, 32))
    assert [p.name for p in tmp_path.iterdir()] == ["export"] and onnx_class_metadata(path)["classes"]
