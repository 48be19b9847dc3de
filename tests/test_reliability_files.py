"""Reliability of files: a checkpoint write killed at any point, untrusted checkpoints and exports,
and prediction output names (issue 9). Atomic saves under exceptions and ENOSPC are in
test_checkpoint.py; malicious backbone and Rein files in test_backbones.py and test_import_rein.py."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tiny import tiny_config

import dgseg
from dgseg.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
)
from dgseg.engine.inference import export_full, load_model, predict_files
from dgseg.engine.prediction_files import safe_relative
from dgseg.engine.train import checkpoint_meta, train

SRC = Path(dgseg.__file__).parent

# --------------------------------------------------------------------------- a checkpoint write killed

# Each kill point runs in a forked child that SIGKILLs itself there; the parent imports torch only once.
KILL_SCRIPT = textwrap.dedent('''
    import io, json, os, signal, sys, tempfile
    import torch
    from dgseg.engine import checkpoint as ckpt

    def weights(step):
        return {"w": torch.full((64,), float(step))}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def kill_on_call(name, n):
        real, calls = getattr(os, name), [0]
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                die()
            return real(*args, **kwargs)
        setattr(os, name, wrapped)

    def kill_half_written(file_name):
        real = ckpt._write_temp
        def write_temp(final, write):
            if final.name == file_name:
                buf = io.BytesIO()
                write(buf)
                fd, _ = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
                os.write(fd, buf.getvalue()[: len(buf.getvalue()) // 2])
                die()
            return real(final, write)
        ckpt._write_temp = write_temp

    root, points = sys.argv[1], sys.argv[2:]
    status = {}
    for point in points:
        run = os.path.join(root, point.replace(":", "_"))
        pid = os.fork()
        if pid == 0:
            ckpt.save_checkpoint(run, 1, weights(1), {"k": 1}, {"step": 1}, keep_last=1)
            kind, arg = point.split(":")
            if kind == "half":
                kill_half_written(arg)
            else:
                kill_on_call(kind, int(arg))
            ckpt.save_checkpoint(run, 2, weights(2), {"k": 2}, {"step": 2}, keep_last=1)
            os._exit(0)  # the kill point was never reached
        _, code = os.waitpid(pid, 0)
        status[point] = os.WTERMSIG(code) if os.WIFSIGNALED(code) else -os.WEXITSTATUS(code)
    print(json.dumps(status))
''')

# (kill point, the step `latest` must still give): the new set counts only once `latest` names it
KILL_POINTS = {
    "half:iter_0000002.state.pt": 1,      # half of the training state written to its temp file
    "half:iter_0000002.safetensors": 1,   # half of the weights written to their temp file
    "fsync:3": 1,                         # weights temp written, not yet synced
    "replace:2": 1,                       # new state file in place, nothing else
    "replace:3": 1,                       # new state and JSON in place, weights not
    "replace:4": 1,                       # new weights in place, `latest` not moved
    "unlink:1": 2,                        # killed while pruning the old set (keep_last=1)
}


def test_a_checkpoint_write_killed_at_any_point_leaves_a_complete_loadable_checkpoint(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), *KILL_POINTS],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == {p: 9 for p in KILL_POINTS}  # every child died by SIGKILL at its point
    for point, step in KILL_POINTS.items():
        run = tmp_path / point.replace(":", "_")
        weights, meta = load_checkpoint(run)
        assert meta["step"] == meta["k"] == step, point
        assert torch.equal(weights["w"], torch.full((64,), float(step))), point
        assert load_train_state(run)["step"] == step, point
        # the next save goes through and sweeps the dead process's temp files
        save_checkpoint(run, 3, {"w": torch.zeros(64)}, {"k": 3}, {"step": 3}, keep_last=1)
        assert latest_checkpoint(run).name == "iter_0000003.safetensors", point
        assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")], point


# --------------------------------------------------------------------------- untrusted files


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["DGSEG_TEST_PWNED"]),))


def test_a_run_folder_with_a_code_running_state_file_is_refused_on_resume(tmp_path, monkeypatch):
    cfg = tiny_config(data__val=[], data__source=None, train__max_iters=2)
    torch.manual_seed(cfg.train.seed)
    model = dgseg.build_model(cfg)
    save_checkpoint(tmp_path, 1, model.trainable_state_dict(), checkpoint_meta(cfg, 1), {"step": 1})
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("DGSEG_TEST_PWNED", str(pwned))
    torch.save({"step": 1, "rng": Payload()}, tmp_path / "checkpoints" / "iter_0000001.state.pt")
    with pytest.raises(CheckpointError, match=r"iter_0000001\.state\.pt: could not load .*weights_only=True"):
        train(cfg, tmp_path, resume=True, progress=False)
    assert not pwned.exists()


def test_every_torch_load_in_the_package_passes_weights_only_true():
    calls = []
    for file in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{file.relative_to(SRC)}:{node.lineno}", ok))
    assert calls, "expected torch.load calls (checkpoint states, .pth weights)"
    assert [c for c, ok in calls if not ok] == []


@pytest.fixture(scope="module")
def full_export(tmp_path_factory):
    cfg = tiny_config(data__val=[], data__source=None)
    torch.manual_seed(0)
    model = dgseg.build_model(cfg)
    path = export_full(model, cfg, checkpoint_meta(cfg, 0), tmp_path_factory.mktemp("export") / "full.safetensors")
    return path


def tampered(src: Path, dst: Path, change) -> Path:
    with safe_open(str(src), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(dst), metadata=header)
    return dst


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.update(evil=torch.zeros(1)), r"1 file keys the model does not have, e.g. \['evil'\]"),
    (lambda t: t.pop("head.class_embed.weight", None) if "head.class_embed.weight" in t else t.popitem(),
     r"1 model keys missing from the file, e.g. \['[^']+'\]"),
    (lambda t: t.update({k: torch.zeros(3, 3) for k in list(t)[:1]}),
     r"1 shape mismatches, e.g. \['[^']+: file \(3, 3\) vs model"),
])
def test_a_full_export_with_unexpected_missing_or_reshaped_tensors_is_refused(tmp_path, full_export, change,
                                                                              expected):
    bad = tampered(full_export, tmp_path / "bad.safetensors", change)
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors: a full export must hold exactly .*{expected}"):
        load_model(bad)


def onnx_model(path: Path, input_name: str = "image", output_name: str = "scores", size=(32, 48)) -> Path:
    from onnx import TensorProto, helper, save

    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, *size])
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, 3, *size])
    graph = helper.make_graph([helper.make_node("Identity", [input_name], [output_name])], "g", [inp], [out])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_onnx_file_without_dgsegs_interface_is_refused(tmp_path):
    pytest.importorskip("onnx")
    from dgseg.engine.inference import check_onnx_file

    check_onnx_file(onnx_model(tmp_path / "ok.onnx"), (32, 48))
    with pytest.raises(CheckpointError, match=r"other\.onnx: not a dgseg segmentation export.*found inputs \[\('x'"):
        check_onnx_file(onnx_model(tmp_path / "other.onnx", input_name="x"))
    with pytest.raises(CheckpointError, match=r"out\.onnx: not a dgseg segmentation export.*'logits'"):
        check_onnx_file(onnx_model(tmp_path / "out.onnx", output_name="logits"))
    with pytest.raises(CheckpointError, match=r"size\.onnx: .*expected input 'image' \[1, 3, 64, 64\]"):
        check_onnx_file(onnx_model(tmp_path / "size.onnx"), (64, 64))
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.onnx: not a valid ONNX model"):
        check_onnx_file(tmp_path / "junk.onnx")


# --------------------------------------------------------------------------- prediction output names

SAFE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@settings(max_examples=50, deadline=None, database=None, derandomize=True)
@given(st.lists(st.one_of(st.sampled_from(["..", ".", "/", "", "~", "-rf", "..."]), st.text(max_size=300)),
                max_size=6))
def test_safe_relative_stays_inside_the_output_folder_whatever_the_name(parts):
    rel = safe_relative(Path(*[p.replace("\x00", "") for p in parts]) if parts else Path())
    assert not rel.is_absolute()
    for part in rel.parts:
        assert part not in ("..", ".") and not part.startswith((".", "-")) and 0 < len(part) <= 120
        assert set(part) <= SAFE_CHARS
    out = Path("/srv/out")
    assert out in (out / rel).parents


@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny_config(eval__mode="whole")
    torch.manual_seed(0)
    return dgseg.build_model(cfg).eval(), cfg


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
        path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


def test_prediction_of_hostile_names_writes_only_inside_out_and_overwrites_nothing(tmp_path, tiny_model):
    model, cfg = tiny_model
    src, out = tmp_path / "in", tmp_path / "out"
    inputs = [image(src / "..png"), image(src / "-rf ; rm.png"), image(src / "ünï cødé.png"),
              image(src / "a" / "x.png"), image(src / "b" / "x.png"), image(src / "a" / "x.jpg")]
    args = [str(src / "a" / ".." / "..png"), str(src / "-rf ; rm.png"), str(src / "ünï cødé.png"),
            str(src / "a" / "x.png"), str(src / "b" / "x.png"), str(src / "a" / "x.jpg")]
    assert all(Path(a).is_file() for a in args) and len(inputs) == len(args)
    written = predict_files(model, cfg, args, out, progress=False)
    assert len(written) == len(set(written)) == 6  # x.png, x.png and x.jpg do not overwrite each other
    files = [p for p in tmp_path.rglob("*") if p.is_file() and src not in p.parents]
    assert len(files) == 18 and all(out in p.parents for p in files)
    assert {p.name for p in written} >= {"image_labelTrainIds.png", "rf_rm_labelTrainIds.png",
                                         "x_labelTrainIds.png", "x_2_labelTrainIds.png"}


def test_prediction_refuses_a_symlink_in_out_that_leads_elsewhere(tmp_path, tiny_model):
    model, cfg = tiny_model
    image(tmp_path / "in" / "sub" / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="escapes the output folder"):
        predict_files(model, cfg, [str(tmp_path / "in")], tmp_path / "out", progress=False)
    assert list(elsewhere.iterdir()) == []


def test_a_checkpoint_whose_meta_stores_no_config_is_named_with_what_each_command_needs(tmp_path, capsys):
    """A hand-made checkpoint with dgseg metadata but no config: predict (no CONFIG argument) says what it needs,
    rather than asking for a CONFIG it cannot take; eval takes one."""
    from dgseg.cli import main
    from dgseg.engine.train import checkpoint_meta

    cfg = tiny_config()
    model = dgseg.build_model(cfg)
    meta = checkpoint_meta(cfg, 1)
    del meta["config"]
    save_checkpoint(tmp_path / "run", 1, model.trainable_state_dict(), meta)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), str(image), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run'}: its metadata has no 'config' (it was not written by dgseg train or " \
           "import-rein); dgseg eval takes the experiment's CONFIG before --checkpoint, predict and export need a " \
           "checkpoint that stores its config" in err
