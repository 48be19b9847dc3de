import errno
import os
import random
import re

import numpy as np
import pytest
import torch

from dgseg.engine import checkpoint as ckpt
from dgseg.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_compatible,
    file_sha256,
    latest_checkpoint,
    load_checkpoint,
    load_train_state,
    restore_rng_state,
    save_checkpoint,
)

META = {"backbone": "vit_small_patch14_dinov2", "num_classes": 19, "classes": ["road", "sky"]}


def weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"rein.scale": torch.tensor(1e-3), "head.weight": torch.randn(4, 3, generator=g)}


def files(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_round_trip_of_weights_and_meta(tmp_path):
    path = save_checkpoint(tmp_path, 100, weights(), META)
    assert path == tmp_path / "checkpoints" / "iter_0000100.safetensors"
    assert files(tmp_path) == ["iter_0000100.json", "iter_0000100.safetensors", "latest"]
    for source in (path, tmp_path, tmp_path / "checkpoints"):
        w, meta = load_checkpoint(source)
        assert w.keys() == weights().keys()
        assert all(torch.equal(w[k], weights()[k]) for k in w)
        assert meta == {**META, "step": 100, "dgseg_version": meta["dgseg_version"]}
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "iter_0000100.safetensors"


def test_latest_follows_the_newest_save_and_old_sets_are_pruned(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, weights(step), META, {"step": step}, keep_last=2)
    assert files(tmp_path) == [
        "iter_0000030.json",
        "iter_0000030.safetensors",
        "iter_0000030.state.pt",
        "iter_0000040.json",
        "iter_0000040.safetensors",
        "iter_0000040.state.pt",
        "latest",
    ]
    assert latest_checkpoint(tmp_path).name == "iter_0000040.safetensors"
    assert torch.equal(load_checkpoint(tmp_path)[0]["head.weight"], weights(40)["head.weight"])


def test_a_save_at_an_earlier_step_is_never_pruned_itself(tmp_path):
    save_checkpoint(tmp_path, 50, weights(), META, keep_last=1)
    save_checkpoint(tmp_path, 20, weights(), META, keep_last=1)  # resumed from an earlier point
    assert latest_checkpoint(tmp_path).name == "iter_0000020.safetensors"
    assert "iter_0000050.safetensors" in files(tmp_path)


def test_train_state_round_trips_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (1 - i / 10) ** 0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "step": 7,
    }
    state["numpy_raw"] = np.random.get_state()  # numpy arrays are converted to tensors on save
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path, 7, weights(), META, state)

    file = tmp_path / "checkpoints" / "iter_0000007.state.pt"
    assert torch.load(file, weights_only=True)["step"] == 7
    for source in (file, tmp_path, tmp_path / "checkpoints" / "iter_0000007.safetensors"):
        loaded = load_train_state(source)
        assert loaded["step"] == 7
    assert loaded["scheduler"]["last_epoch"] == 1
    assert isinstance(loaded["numpy_raw"][1], torch.Tensor)
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_train_state_that_weights_only_cannot_load_is_refused_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match=r"train_state\['fn'\]"):
        save_checkpoint(tmp_path, 1, weights(), META, {"fn": object()})
    assert not (tmp_path / "checkpoints").exists() or files(tmp_path) == []


@pytest.mark.parametrize("fail_on", ["iter_0000002.safetensors", "latest"])
def test_failed_rename_keeps_the_previous_checkpoint_and_leaves_no_temp_files(tmp_path, monkeypatch, fail_on):
    save_checkpoint(tmp_path, 1, weights(1), META, {"step": 1})
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == fail_on:
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(CheckpointError, match=f"{fail_on}.*previous checkpoint .*iter_0000001"):
        save_checkpoint(tmp_path, 2, weights(2), META, {"step": 2})
    monkeypatch.undo()
    assert files(tmp_path) == [
        "iter_0000001.json",
        "iter_0000001.safetensors",
        "iter_0000001.state.pt",
        "latest",
    ]
    assert torch.equal(load_checkpoint(tmp_path)[0]["head.weight"], weights(1)["head.weight"])
    assert load_train_state(tmp_path)["step"] == 1


def test_disk_full_while_writing_raises_a_clear_error(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, weights(1), META)
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file of the new set
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    with pytest.raises(
        CheckpointError, match=r"iter_0000002\.safetensors: no space left.*previous checkpoint"
    ):
        save_checkpoint(tmp_path, 2, weights(2), META)
    monkeypatch.undo()
    assert files(tmp_path) == ["iter_0000001.json", "iter_0000001.safetensors", "latest"]
    assert load_checkpoint(tmp_path)[1]["step"] == 1


def test_missing_and_corrupt_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(tmp_path)
    path = save_checkpoint(tmp_path, 3, weights(), META)
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    with pytest.raises(CheckpointError, match=r"iter_0000003\.safetensors: not a readable safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no training state"):
        load_train_state(path)
    (tmp_path / "junk.state.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"junk\.state\.pt: could not load"):
        load_train_state(tmp_path / "junk.state.pt")


@pytest.mark.parametrize("content, shown", [(b"\xff\xfe\x00garbage", r"not text \(byte 0 is not UTF-8\)"),
                                            (b"", "holds nothing"), (b"../../etc/passwd\n", "holds '../../etc/passwd'"),
                                            (b"iter_0000003.json", "holds 'iter_0000003.json'")])
def test_a_damaged_latest_pointer_is_named_and_the_next_save_replaces_it(tmp_path, capsys, content, shown):
    from dgseg.cli import main

    save_checkpoint(tmp_path, 3, weights(), META)
    (tmp_path / "checkpoints" / "latest").write_bytes(content)
    expected = (rf"checkpoints/latest: {shown}; expected one line naming the newest checkpoint file, e\.g\. "
                rf"iter_0001000\.safetensors, as dgseg writes it; delete .*latest and dgseg takes the highest-step")
    with pytest.raises(CheckpointError, match=expected):
        latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path)
    assert main(["export", "--checkpoint", str(tmp_path), "--format", "full", "--out", str(tmp_path / "f")]) == 2
    assert re.search(f"dgseg export: error: .*{expected}", capsys.readouterr().err)
    save_checkpoint(tmp_path, 4, weights(), META)  # a save writes a good pointer over it
    assert latest_checkpoint(tmp_path).name == "iter_0000004.safetensors"


def test_a_folder_named_latest_is_named_not_passed_over(tmp_path):
    save_checkpoint(tmp_path, 3, weights(), META)
    (tmp_path / "checkpoints" / "latest").unlink()
    (tmp_path / "checkpoints" / "latest").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoints/latest: is a folder, not the one-line pointer file"):
        latest_checkpoint(tmp_path)


def test_a_latest_pointer_to_a_file_moved_away_falls_back_to_the_highest_step(tmp_path):
    for step in (2, 4):
        save_checkpoint(tmp_path, step, weights(), META)
    (tmp_path / "checkpoints" / "iter_0000004.safetensors").unlink()  # the broken newest moved out (README)
    assert latest_checkpoint(tmp_path).name == "iter_0000002.safetensors"


def test_safetensors_without_dgseg_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no dgseg metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_file_sha256_matches_hashlib_and_sees_changes(tmp_path):
    import hashlib

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert file_sha256(f, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    f.write_bytes(b"xyz")
    assert file_sha256(f) == hashlib.sha256(b"xyz").hexdigest()


def test_check_compatible_names_each_mismatched_field_with_both_values():
    meta = {
        "backbone": "vit_large_patch14_dinov2",
        "num_classes": 19,
        "model": {"head": {"name": "mask2former"}},
    }
    check_compatible(meta, {"backbone": "vit_large_patch14_dinov2", "model.head.name": "mask2former"})
    with pytest.raises(CheckpointError) as e:
        check_compatible(
            meta, {"backbone": "vit_small_patch14_dinov2", "num_classes": 16, "weights_sha256": "ab"}
        )
    msg = str(e.value)
    assert (
        "backbone: checkpoint has 'vit_large_patch14_dinov2', current setup has 'vit_small_patch14_dinov2'"
        in msg
    )
    assert "num_classes: checkpoint has 19, current setup has 16" in msg
    assert "weights_sha256: missing from the checkpoint" in msg
    check_compatible({"crop": [512, 512]}, {"crop": (512, 512)})  # JSON lists equal tuples
