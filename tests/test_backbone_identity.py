"""Backbone identity by content: the digest, its cache, and what loading a checkpoint checks with it."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import tiny_config

import dgseg
from dgseg.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from dgseg.engine.inference import load_model
from dgseg.engine.train import train
from dgseg.fileio import safetensors_header_variants
from dgseg.models import weights_digest
from dgseg.models.weights_digest import compute_identity, first_difference, weights_identity


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """The tiny ViT's weights as a safetensors file with two metadata entries."""
    folder = tmp_path_factory.mktemp("weights")
    vit = dgseg.build_model(tiny_config()).backbone.vit
    path = folder / "tiny_vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path),
              metadata={"format": "pt", "origin": "dgseg test"})
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, backbone_file):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(model__backbone__weights=str(backbone_file), train__max_iters=2, train__eval_interval=1000)
    train(cfg, out, progress=False)
    return cfg, out


def test_digest_is_the_sha256_of_name_dtype_shape_value_lines(tmp_path):
    tensors = {"b": torch.arange(6, dtype=torch.int16).reshape(2, 3), "a": torch.tensor([1.5, -2.0])}
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    lines = "".join(f"{name}\t{str(t.dtype)[6:]}\t{list(t.shape)}\t{hashlib.sha256(t.numpy().tobytes()).hexdigest()}\n"
                    for name, t in sorted(tensors.items()))
    identity = compute_identity(path)
    assert identity["digest"] == hashlib.sha256(lines.encode()).hexdigest()
    assert identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert identity["file"] == "w.safetensors"
    assert identity["tensors"]["b"] == f"int16 [2, 3] {hashlib.sha256(tensors['b'].numpy().tobytes()).hexdigest()[:16]}"


def test_same_tensors_in_another_file_or_format_have_the_same_digest(tmp_path, backbone_file):
    tensors = load_file(str(backbone_file))
    other = tmp_path / "renamed.safetensors"
    save_file(tensors, str(other), metadata={"something": "else"})
    nested = tmp_path / "official.pth"
    torch.save({"model": tensors, "epoch": 3}, nested)
    base = compute_identity(backbone_file)
    assert compute_identity(other)["digest"] == base["digest"]
    assert compute_identity(other)["sha256"] != base["sha256"]
    assert compute_identity(nested)["tensors"] == {f"model.{k}": v for k, v in base["tensors"].items()}
    tensors["norm.bias"] = tensors["norm.bias"] + 1e-6
    save_file(tensors, str(other))
    changed = compute_identity(other)
    assert changed["digest"] != base["digest"]
    assert first_difference(base["tensors"], changed["tensors"]) == "norm.bias (same dtype and shape, different values)"
    tensors["norm.bias"] = tensors["norm.bias"].double()
    save_file(tensors, str(other))
    assert first_difference(base["tensors"], compute_identity(other)["tensors"]).startswith(
        "norm.bias (float32 [32] in the checkpoint's file, float64 [32] in this setup's)")
    del tensors["cls_token"]
    save_file(tensors, str(other))
    assert first_difference(base["tensors"], compute_identity(other)["tensors"]) == \
        "cls_token (only in the checkpoint's file)"


def test_digest_is_cached_per_file_and_recomputed_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("DGSEG_HOME", str(tmp_path / "home"))
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(3)}, str(path))
    first = weights_identity(path)
    (cache,) = (tmp_path / "home" / "digests").iterdir()
    assert cache.suffix == ".json" and not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]
    weights_digest._MEMORY.clear()
    calls = []
    real = weights_digest.compute_identity
    monkeypatch.setattr(weights_digest, "compute_identity", lambda p: calls.append(p) or real(p))
    assert weights_identity(path) == first and calls == []  # read back from the cache file
    weights_digest._MEMORY.clear()
    save_file({"w": torch.zeros(3)}, str(path))
    os.utime(path, ns=(1, 1))
    assert weights_identity(path)["digest"] != first["digest"] and len(calls) == 1


def test_checkpoint_records_the_backbone_file_and_its_digests(run, backbone_file):
    _, out = run
    _, meta = load_checkpoint(out)
    bb = meta["backbone"]
    identity = compute_identity(backbone_file)
    assert bb["file"] == "tiny_vit.safetensors" and bb["weights"] == str(backbone_file)
    assert bb["digest"] == identity["digest"] and bb["sha256"] == identity["sha256"]
    assert bb["tensors"] == identity["tensors"] and not bb["embedded"]


def test_a_copy_with_the_same_tensors_loads_anywhere(tmp_path, run, backbone_file):
    _, out = run
    copy = tmp_path / "elsewhere" / "my_copy.safetensors"
    copy.parent.mkdir()
    save_file(load_file(str(backbone_file)), str(copy), metadata={"a": "b"})  # other bytes, same tensors
    model, _ = load_model(out, [f"model.backbone.weights={copy}"])
    assert model is not None


def test_a_different_backbone_is_refused_naming_both_files_and_the_first_tensor(tmp_path, run, backbone_file):
    _, out = run
    tensors = load_file(str(backbone_file))
    tensors["blocks.1.attn.qkv.weight"][0, 0] += 0.5
    other = tmp_path / "other_vit.safetensors"
    save_file(tensors, str(other))
    with pytest.raises(CheckpointError) as err:
        load_model(out, [f"model.backbone.weights={other}"])
    msg = str(err.value)
    assert "tiny_vit.safetensors" in msg and str(other) in msg
    assert "first differing tensor: blocks.1.attn.qkv.weight (same dtype and shape, different values)" in msg
    assert "--set model.backbone.weights=PATH/TO/tiny_vit.safetensors" in msg
    cfg, _ = run
    part = tmp_path / "resumed"
    shutil.copytree(out, part)
    with pytest.raises(CheckpointError, match="first differing tensor: blocks.1.attn.qkv.weight"):
        train(tiny_config(model__backbone__weights=str(other), train__max_iters=4), part, resume=True,
              progress=False)


@pytest.mark.parametrize("edit, said", [
    (lambda table: None, "unknown (no tensor table recorded)"),
    (lambda table: list(table), "unknown (the recorded tensor table is a list, not a name -> entry map)"),
    (lambda table: table | {"blocks.1.attn.qkv.weight": 7},
     "blocks.1.attn.qkv.weight (its recorded entry '7' is not 'DTYPE [SHAPE] SHA': the table is malformed)"),
])
def test_a_malformed_tensor_table_in_the_meta_is_named_in_the_refusal(tmp_path, run, backbone_file, edit, said):
    """A checkpoint whose meta was edited or damaged still gets the refusal naming both files, not a TypeError."""
    _, out = run
    weights, meta = load_checkpoint(out)
    meta["backbone"]["tensors"] = edit(meta["backbone"]["tensors"])
    save_checkpoint(tmp_path / "edited", meta["step"], weights, meta)
    tensors = load_file(str(backbone_file))
    tensors["blocks.1.attn.qkv.weight"][0, 0] += 0.5
    save_file(tensors, str(tmp_path / "other_vit.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "edited", [f"model.backbone.weights={tmp_path / 'other_vit.safetensors'}"])
    assert f"first differing tensor: {said}" in str(err.value)


def test_a_null_entry_in_a_recorded_tensor_table_is_named_malformed_not_missing_from_the_checkpoint():
    """An entry edited to null is in the table: it is not a tensor only this setup's file has."""
    current = {"a.weight": "float32 [2] " + "0" * 64, "b.weight": "float32 [2] " + "1" * 64}
    assert first_difference({"a.weight": None, "b.weight": current["b.weight"]}, current) == \
        "a.weight (its recorded entry 'None' is not 'DTYPE [SHAPE] SHA': the table is malformed)"
    assert first_difference({"b.weight": current["b.weight"]}, current) == "a.weight (only in this setup's file)"


def test_a_missing_backbone_file_says_how_to_point_at_a_local_copy(tmp_path, run, backbone_file):
    _, out = run
    with pytest.raises(CheckpointError) as err:
        load_model(out, [f"model.backbone.weights={tmp_path / 'gone' / 'tiny_vit.safetensors'}"])
    msg = str(err.value)
    assert "not found here" in msg and "--set model.backbone.weights=PATH/TO/tiny_vit.safetensors" in msg


def _old_checkpoint(folder, run, sha256):
    """The run's checkpoint rewritten as dgseg wrote it before content digests (file sha256 only)."""
    _, out = run
    weights, meta = load_checkpoint(out)
    meta["backbone"] = {k: meta["backbone"][k] for k in ("name", "weights", "embedded")} | {"sha256": sha256}
    save_checkpoint(folder, meta["step"], weights, meta)
    return folder


def test_old_checkpoint_loads_when_its_file_hash_matches(tmp_path, run, backbone_file):
    old = _old_checkpoint(tmp_path, run, hashlib.sha256(backbone_file.read_bytes()).hexdigest())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(old)


def test_old_checkpoint_of_reordered_metadata_loads_with_a_note(tmp_path, run, backbone_file):
    raw = backbone_file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    (head,) = safetensors_header_variants(raw[:8 + n], lambda keys: [list(reversed(keys))])
    assert head != raw[:8 + n]  # the file as another process would have written it
    old = _old_checkpoint(tmp_path, run, hashlib.sha256(head + raw[8 + n:]).hexdigest())
    with pytest.warns(UserWarning, match="only in the order of the safetensors metadata"):
        load_model(old)


def test_old_checkpoint_of_another_file_is_refused(tmp_path, run):
    old = _old_checkpoint(tmp_path, run, "ab" * 32)
    with pytest.raises(CheckpointError, match=r"predates backbone content digests(.|\n)*sha256 abababababab"):
        load_model(old)
    assert latest_checkpoint(old) is not None
