"""End to end on a tiny model: train, evaluate, predict, export, resume."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny import tiny_config

import dgseg
from dgseg.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from dgseg.engine.checkpoint_compat import check_backbone_layout
from dgseg.engine.inference import check_onnx, export_full, export_onnx, load_model, predict_files
from dgseg.engine.train import TrainingError, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config()
    result = train(cfg, out, progress=False)
    return cfg, out, result


def test_training_writes_checkpoints_log_curves_and_eval(trained):
    cfg, out, result = trained
    assert result["step"] == cfg.train.max_iters
    assert latest_checkpoint(out).name == "iter_0000004.safetensors"
    assert (out / "checkpoints" / "iter_0000002.safetensors").exists()
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert (out / "curves.png").stat().st_size > 0
    ev = json.loads((out / "eval.json").read_text())
    assert set(ev["domains"]) == {"synthetic-game", "synthetic-night"}
    assert 0 <= ev["domains"]["synthetic-night"]["mIoU"] <= 100


def test_checkpoint_holds_only_trainable_weights_and_names_the_backbone(trained):
    cfg, out, _ = trained
    weights, meta = load_checkpoint(latest_checkpoint(out))
    assert not any(k.startswith("backbone.") for k in weights)
    assert any(k.startswith("adapter.tokens_a") for k in weights)
    assert meta["backbone"]["name"] == cfg.model.backbone.name
    assert meta["step"] == 4


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, trained):
    cfg, out, _ = trained
    part = tmp_path / "part"  # the run as it was when killed after iteration 2
    (part / "checkpoints").mkdir(parents=True)
    for f in (out / "checkpoints").glob("iter_0000002.*"):
        shutil.copy(f, part / "checkpoints" / f.name)
    (part / "checkpoints" / "latest").write_text("iter_0000002.safetensors")
    result = train(cfg, part, resume=True, progress=False)
    assert result["step"] == 4
    a, _ = load_checkpoint(latest_checkpoint(out))
    b, _ = load_checkpoint(latest_checkpoint(part))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_the_same_seed_trains_the_same_run_and_another_seed_another(tmp_path, trained):
    cfg, out, _ = trained

    def losses(run):
        return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]

    again = tmp_path / "again"
    train(tiny_config(), again, progress=False)
    assert losses(again) == losses(out)  # bit for bit on one machine (data order, augmentation, init)
    a, _ = load_checkpoint(latest_checkpoint(out))
    b, _ = load_checkpoint(latest_checkpoint(again))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = tmp_path / "other"
    train(tiny_config(train__seed=1), other, progress=False)
    assert losses(other) != losses(out)


def test_a_run_resumed_on_another_machine_names_both_in_its_facts(tmp_path, trained, monkeypatch):
    import dgseg.machine

    cfg, out, _ = trained
    facts = json.loads((out / "run.json").read_text())
    here = dgseg.machine.machine_line()
    assert "bf16" in here.lower()  # AVX-512 BF16 or not: it decides a CPU run's precision and speed
    assert [(s["from_iter"], s["machine"], s["precision"]) for s in facts["starts"]] == [(0, here, "float32")]
    assert (facts["machine"], facts["precision"]) == (here, "float32")

    part = tmp_path / "part"  # killed after iteration 2 on a machine with native bf16; its run.json is older
    (part / "checkpoints").mkdir(parents=True)
    for f in (out / "checkpoints").glob("iter_0000002.*"):
        shutil.copy(f, part / "checkpoints" / f.name)
    (part / "checkpoints" / "latest").write_text("iter_0000002.safetensors")
    old = {k: v for k, v in facts.items() if k != "starts"}
    (part / "run.json").write_text(json.dumps({**old, "machine": "first machine", "precision": "bf16 autocast"}))
    monkeypatch.setattr(dgseg.machine, "machine_line", lambda: "second machine")
    train(cfg, part, resume=True, progress=False)
    facts = json.loads((part / "run.json").read_text())
    assert [(s["from_iter"], s["machine"], s["precision"]) for s in facts["starts"]] == [
        (0, "first machine", "bf16 autocast"), (2, "second machine", "float32")]
    assert facts["machine"] == "first machine + second machine"
    assert facts["precision"] == "bf16 autocast + float32" and facts["train_time_s"] > 0


@pytest.mark.parametrize("content, problem", [
    ('{"name": "tiny",', r"not valid JSON \(Expecting property name.*\); expected the run's facts"),
    ("[]", r"a JSON list; expected an object, the run's facts"),
    ('{"starts": {"machine": "m"}}', r"'starts' is a JSON object; expected a list of the run's starts"),
    ('{"starts": [3]}', r"starts\[0\] is a JSON number; expected an object \(from_iter, machine"),
])
def test_resume_refuses_a_damaged_run_json_by_name_before_training(tmp_path, trained, capsys, content, problem):
    from dgseg.cli import main
    from dgseg.config import dump_config

    cfg, out, _ = trained
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    for f in (out / "checkpoints").glob("iter_0000002.*"):
        shutil.copy(f, part / "checkpoints" / f.name)
    (part / "run.json").write_text(content)
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(cfg))
    assert main(["train", str(config), "--out", str(part), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"dgseg train: error: {re.escape(str(part / 'run.json'))}: {problem}", err), err
    assert f"move it out of {part} and the run's facts start again" in err
    assert (part / "run.json").read_text() == content and not (part / "log.jsonl").exists()  # nothing written


def test_model_from_checkpoint_predicts_like_the_trained_one(trained):
    cfg, out, _ = trained
    model, cfg2 = load_model(out)
    assert cfg2.model.adapter.name == "rein"
    trained_model = dgseg.build_model(cfg)  # same seed: the same random-init backbone as in training
    weights, _ = load_checkpoint(latest_checkpoint(out))
    trained_model.load_state_dict(weights, strict=False)
    x = torch.randn(1, 3, 40, 56)
    scores = model.predict(x)
    assert scores.shape == (1, 19, 40, 56)
    torch.testing.assert_close(scores, trained_model.eval().predict(x))


def test_predict_writes_label_color_and_overlay_pngs_inside_out(tmp_path, trained):
    _, out, _ = trained
    model, cfg = load_model(out)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(np.random.randint(0, 255, (40, 50, 3), dtype=np.uint8)).save(src / "sub" / "a b.png")
    written = predict_files(model, cfg, [str(src)], tmp_path / "pred", progress=False)
    assert len(written) == 1
    label = np.array(Image.open(written[0]))
    assert label.shape == (40, 50) and label.max() < 19
    assert (tmp_path / "pred" / "sub" / "a_b_color.png").exists()
    assert (tmp_path / "pred" / "sub" / "a_b_overlay.png").exists()


def test_full_export_loads_without_the_backbone_file_and_predicts_the_same(tmp_path, trained):
    _, out, _ = trained
    model, cfg = load_model(out)
    _, meta = load_checkpoint(latest_checkpoint(out))
    path = export_full(model, cfg, meta, tmp_path / "full.safetensors")
    assert any(k.startswith("backbone.") for k in load_file(str(path)))
    again, _ = load_model(path)
    x = torch.randn(1, 3, 32, 48)
    torch.testing.assert_close(again.predict(x), model.predict(x))


def test_export_refuses_an_existing_out_file_unless_forced(tmp_path, trained, capsys):
    from dgseg.cli import main

    _, out, _ = trained
    target = tmp_path / "model.bin"
    target.write_bytes(b"an unrelated file of the user's")
    args = ["export", "--checkpoint", str(out), "--format", "full", "--out", str(target)]
    assert main(args) == 2
    assert f"{target}: already exists; pass --force to replace it, or choose another --out" in capsys.readouterr().err
    assert target.read_bytes() == b"an unrelated file of the user's"
    assert main([*args, "--force"]) == 0
    assert any(k.startswith("backbone.") for k in load_file(str(target)))
    assert main(["export", "--checkpoint", str(out), "--format", "onnx", "--out", str(tmp_path), "--force"]) == 2
    assert f"{tmp_path}: is a folder; --out takes a file name" in capsys.readouterr().err


@pytest.mark.parametrize("package", ["onnx", "onnxruntime"])
def test_an_onnx_export_without_its_packages_is_refused_before_it_writes(tmp_path, trained, monkeypatch, capsys,
                                                                         package):
    from dgseg.cli import main

    monkeypatch.setitem(sys.modules, package, None)  # what an import of a package that is not installed meets
    target = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(trained[1]), "--format", "onnx", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"dgseg export: error: --format onnx needs the {package} package" in err
    assert "pip install 'dgseg[onnx]'" in err and "Traceback" not in err
    assert not target.exists()


def test_onnx_export_matches_pytorch(tmp_path, trained):
    pytest.importorskip("onnxruntime")
    _, out, _ = trained
    model, cfg = load_model(out)
    path = export_onnx(model, cfg, tmp_path / "m.onnx", (32, 48))
    assert check_onnx(model, path, (32, 48)) <= 1e-3


def test_checkpoint_of_another_backbone_is_refused(trained):
    _, out, _ = trained
    other = ["model.backbone.model_kwargs.embed_dim=64"]
    with pytest.raises(CheckpointError, match=r"model.backbone.model_kwargs: trained with \{'depth': 2, 'embed_dim': 32"):
        load_model(out, other)


def test_a_checkpoint_is_read_with_the_backbone_layout_it_was_trained_with(trained):
    """Same tensor shapes, other features (a patch kernel resampled to 16 px, other blocks feeding the neck):
    refused naming the key instead of evaluating an adapter and head on features they never saw."""
    _, out, _ = trained
    with pytest.raises(CheckpointError, match=r"model.backbone.patch_size: trained with 8, this setup has 16\n"
                                              r"  model.backbone.out_indices: trained with None \(the model's "
                                              r"\[0, 0, 0, 1\]\), this setup has \[0, 0, 1, 1\]\n"
                                              r"Leave these keys as trained"):
        load_model(out, ["model.backbone.patch_size=16", "model.backbone.out_indices=[0, 0, 1, 1]"])
    model, cfg = load_model(out, ["model.backbone.img_size=48"])  # the position grid may follow another crop
    assert cfg.model.backbone.img_size == 48
    # the same layout spelled out: null out_indices are the model's default blocks, empty kwargs are none
    load_model(out, ["model.backbone.out_indices=[0, 0, 0, 1]"])
    kwargs = {"depth": 2, "embed_dim": 32, "num_heads": 2}
    trained_with = {"config": {"model": {"backbone": {"name": "vit_small_patch14_dinov2", "patch_size": 14,
                                                      "out_indices": [0, 0, 0, 1], "model_kwargs": {}}}}}
    check_backbone_layout({"config": {"model": {"backbone": dict(trained_with["config"]["model"]["backbone"],
                                                                  model_kwargs=kwargs)}}},
                          {"model": {"backbone": {"name": "vit_small_patch14_dinov2", "patch_size": None,
                                                  "out_indices": None, "model_kwargs": kwargs}}})
    check_backbone_layout(trained_with, {"model": {"backbone": {"name": "vit_small_patch14_dinov2", "patch_size": 14,
                                                                "out_indices": [0, 0, 0, 1], "model_kwargs": None}}})
    vit16 = {"name": "vit_small_patch16_224", "out_indices": [0, 0, 0, 1], "model_kwargs": kwargs}
    with pytest.raises(CheckpointError, match=r"patch_size: trained with 14, this setup has None \(the model's 16\)"):
        check_backbone_layout({"config": {"model": {"backbone": dict(vit16, patch_size=14)}}},
                              {"model": {"backbone": dict(vit16, patch_size=None)}})


def test_nan_loss_stops_with_step_losses_and_files_after_saving(tmp_path, monkeypatch):
    cfg = tiny_config(train__max_iters=3)
    model = dgseg.build_model(cfg)
    real = type(model.head).loss
    calls = {"n": 0}

    def poisoned(self, outputs, labels):
        calls["n"] += 1
        losses = real(self, outputs, labels)
        if calls["n"] == 2:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    monkeypatch.setattr(type(model.head), "loss", poisoned)
    with pytest.raises(TrainingError, match=r"iteration 2.*synthetic") as err:
        train(cfg, tmp_path, progress=False, model=model)
    assert "loss_cls" in str(err.value)
    assert latest_checkpoint(tmp_path).name == "iter_0000001.safetensors"


def test_frozen_backbone_stays_in_eval_mode_and_gets_no_gradients():
    cfg = tiny_config()
    model = dgseg.build_model(cfg)
    model.train()
    assert not model.backbone.training and model.head.training
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 19, (2, 32, 32))
    sum(v for k, v in model.loss(x, y).items() if "loss" in k).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.adapter.tokens_a.grad is not None


def test_two_val_entries_of_one_name_and_split_each_get_their_row_by_label():
    from dgseg.engine.evaluate import evaluate

    night = {"name": "synthetic-night", "split": "val", "length": 1, "size": [32, 48]}
    cfg = tiny_config(data__val=[dict(night, seed=0), dict(night, seed=7, label="night-7")], data__source=None)
    results = evaluate(dgseg.build_model(cfg), cfg, progress=False)
    assert list(results) == ["synthetic-night", "night-7"]
    assert results["synthetic-night"]["mIoU"] != results["night-7"]["mIoU"]  # two scene sets, two results


def test_an_eval_window_or_tta_view_too_small_is_refused_before_training_not_after_it(tmp_path):
    """The final evaluation used to fail after the whole schedule; the first image of each data.val entry is now
    checked when training starts, before the run folder is touched (the tiny model: 8-px patches)."""
    from dgseg.config import ConfigError

    night = {"name": "synthetic-night", "split": "val", "length": 1, "size": [48, 64]}
    base = {"data__val": [night], "data__source": None}
    with pytest.raises(ConfigError, match=r"data\.val synthetic-night \(its first image, synthetic://.*checked before "
                                          r"training\): eval\.crop 8: the sliding window is 8x8 px"):
        train(tiny_config(**base, eval__mode="slide", eval__crop=8, eval__stride=8), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match=r"data\.val synthetic-night .*eval\.tta\.scales: 0\.1 turns the 64x48 px"):
        train(tiny_config(**base, eval__tta__enabled=True, eval__tta__scales=[1.0, 0.1]), tmp_path / "b",
              progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # a window the tiny head takes only two at a time: fine with eval.batch_size 2, refused one at a time
    train(tiny_config(**base, eval__mode="slide", eval__crop=24, eval__stride=24, eval__batch_size=2,
                      train__max_iters=1), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match=r"eval\.crop 24: the sliding window is 24x24 px"):
        train(tiny_config(**base, eval__mode="slide", eval__crop=24, eval__stride=24, eval__batch_size=1),
              tmp_path / "d", progress=False)


def test_a_training_crop_smaller_than_the_model_takes_is_refused_naming_data_crop_size(tmp_path):
    # every training input is data.crop_size; one 8-px patch gave a torch interpolate error at the first step
    from dgseg.config import ConfigError

    with pytest.raises(ConfigError, match=r"data\.crop_size \[8, 8\]: the crop is 8x8 px \(WxH\), smaller than"):
        train(tiny_config(data__crop_size=[8, 8]), tmp_path / "run", progress=False)
    # a crop the head's GroupNorm (one channel per group) sees as one value per group: only a batch of one fails
    with pytest.raises(ConfigError, match=r"data\.crop_size \[24, 24\]: .*; or train.batch_size 2 or more"):
        train(tiny_config(data__crop_size=[24, 24], train__batch_size=1), tmp_path / "run", progress=False)
    earlier = tmp_path / "earlier"
    train(tiny_config(train__max_iters=1), earlier, progress=False)
    kept = sorted(p.name for p in earlier.iterdir())
    with pytest.raises(ConfigError, match=r"data\.crop_size \[8, 8\]"):  # refused before --force moves anything
        train(tiny_config(data__crop_size=[8, 8]), earlier, force=True, progress=False)
    assert sorted(p.name for p in earlier.iterdir()) == kept
