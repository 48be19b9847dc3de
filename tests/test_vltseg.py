"""VLTSeg: a fully fine-tuned encoder, learnable simple FPN, Mask2Former and CLIP text guidance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny import tiny_config

import dgseg
from dgseg.data.labels import CLASSES
from dgseg.engine.inference import load_model, predict_files
from dgseg.engine.train import train
from dgseg.models.text import CLIPTextTower, load_class_embeddings
from dgseg.models.weights_io import WeightsError

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def text_weights(tmp_path_factory):
    torch.manual_seed(0)
    tower = CLIPTextTower(vocab_size=49408, width=32, layers=1, heads=1, context_length=77, embed_dim=24)
    state = {f"text.{k}": v for k, v in tower.state_dict().items()}
    state["visual.proj"] = torch.zeros(2, 2)  # a whole-CLIP file: the visual part is ignored
    path = tmp_path_factory.mktemp("clip") / "clip_text.safetensors"
    save_file(state, str(path))
    return path


# a 2-block EVA02-CLIP-shaped encoder whose visual projection (timm's head) gives 24-d embeddings
CLIP_BACKBONE = {"name": "eva02_large_patch14_clip_224", "weights": None, "patch_size": 16, "img_size": 64,
                 "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 24}}


def vltseg(text_weights, **sections):
    base = dict(
        model__backbone=dict(CLIP_BACKBONE),
        model__adapter={"name": "full", "link": False}, model__neck={"name": "fpn"},
        model__text={"name": "clip", "weights": str(text_weights), "learnable_context": True},
        data__crop_size=[64, 64], data__scale=[192, 64], train__optimizer="lamb", train__grad_clip=0.01,
    )
    return tiny_config(**{**base, **sections})


def test_score_map_is_b_k_h16_w16_and_feeds_the_stride16_features(text_weights):
    model = dgseg.build_model(vltseg(text_weights))
    maps, visual = model.backbone(torch.randn(2, 3, 64, 96), embeddings=True)
    feats = model.neck(maps)
    out, aux = model.text(feats, visual)
    assert aux["score_map"].shape == (2, 19, 4, 6)
    assert out[2].shape[1] == feats[2].shape[1] + 19


def test_backbone_and_context_train_text_tower_stays_frozen(text_weights):
    model = dgseg.build_model(vltseg(text_weights))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.") for n in trainable)
    assert "text.prompts.context" in trainable
    assert not any(n.startswith("text.frozen.") for n in trainable)
    assert not any(k.startswith("text.frozen.") for k in model.trainable_state_dict())


def test_auxiliary_text_loss_decreases_on_a_tiny_overfit(text_weights):
    torch.manual_seed(0)
    model = dgseg.build_model(vltseg(text_weights))
    model.train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 32:] = 10
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    first = float(model.loss(x, y)["loss_text"].detach())
    for _ in range(20):
        opt.zero_grad()
        losses = model.loss(x, y)
        sum(v for k, v in losses.items() if "loss" in k).backward()
        opt.step()
    assert float(model.loss(x, y)["loss_text"].detach()) < 0.6 * first


def test_tiny_vltseg_trains_evaluates_and_predicts_end_to_end(tmp_path, text_weights):
    cfg = vltseg(text_weights, train__max_iters=2)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["eval"] is not None and "synthetic-night" in result["eval"]
    model, cfg2 = load_model(tmp_path / "run")
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    assert len(predict_files(model, cfg2, [str(tmp_path / "x.png")], tmp_path / "pred", progress=False)) == 1


def test_fixed_class_embeddings_file_needs_no_text_tower(tmp_path, text_weights, capsys):
    from dgseg.cli import main

    cfg_file = tmp_path / "v.yaml"
    import yaml

    from dgseg.config import config_to_dict

    cfg_file.write_text(yaml.safe_dump(config_to_dict(vltseg(text_weights))))  # the decoder is off for text-embed
    assert main(["text-embed", str(cfg_file), "--out", str(tmp_path / "emb.safetensors")]) == 0
    model = dgseg.build_model(vltseg(text_weights, model__text={
        "name": "clip", "embeddings": str(tmp_path / "emb.safetensors"), "learnable_context": False}))
    assert model.text.frozen is None and model.text.class_embeddings.shape == (19, 24)


def test_text_guidance_prompts_the_experiments_own_classes(text_weights):
    classes = {"names": ["background", "crack", "rust"]}
    model = dgseg.build_model(vltseg(text_weights, data__classes=classes))
    maps, visual = model.backbone(torch.randn(1, 3, 64, 96), embeddings=True)
    _, aux = model.text(model.neck(maps), visual)
    assert aux["score_map"].shape[1] == 3  # one score map per class of data.classes
    loss = model.train().loss(torch.randn(2, 3, 64, 96), torch.randint(0, 3, (2, 64, 96)))
    assert torch.isfinite(loss["loss_text"])


def test_class_embeddings_of_other_classes_are_refused_naming_both_sets(tmp_path, text_weights):
    from dgseg.models.text import save_class_embeddings

    path = save_class_embeddings(tmp_path / "emb.safetensors", torch.randn(3, 24), ["background", "rust", "crack"])
    text = {"name": "clip", "embeddings": str(path), "learnable_context": False}
    with pytest.raises(WeightsError, match=r"emb\.safetensors: its embeddings are of the classes "
                                           r"\['background', 'rust', 'crack'\].*\['background', 'crack', 'rust'\]"):
        dgseg.build_model(vltseg(text_weights, data__classes={"names": ["background", "crack", "rust"]},
                                 model__text=text))
    model = dgseg.build_model(vltseg(text_weights, data__classes={"names": ["background", "rust", "crack"]},
                                     model__text=text))
    assert model.text.class_embeddings.shape == (3, 24)


def test_text_embed_refuses_an_existing_out_file_unless_forced(tmp_path, text_weights, capsys):
    import yaml

    from dgseg.cli import main
    from dgseg.config import config_to_dict

    cfg_file, out = tmp_path / "v.yaml", tmp_path / "emb.safetensors"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(vltseg(text_weights))))
    out.write_bytes(b"the user's embeddings of another class set")
    assert main(["text-embed", str(cfg_file), "--out", str(out)]) == 2
    assert f"{out}: already exists; pass --force to replace it, or choose another --out" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's embeddings of another class set"
    assert main(["text-embed", str(cfg_file), "--out", str(out), "--force"]) == 0
    assert load_class_embeddings(out, list(CLASSES)).shape == (19, 24)


def test_clip_text_without_weights_says_what_to_give():
    with pytest.raises(WeightsError, match="model.text.weights"):
        dgseg.build_model(tiny_config(model__backbone=dict(CLIP_BACKBONE), model__adapter={"name": "full", "link": False},
                                      model__text={"name": "clip"}))


def test_clip_text_on_an_encoder_without_a_visual_projection_says_so():
    with pytest.raises(ValueError, match="no visual projection"):
        dgseg.build_model(tiny_config(model__adapter={"name": "full", "link": False},
                                      model__text={"name": "clip", "arch": "EVA02-L-14"}))


def test_class_names_are_checked_in_a_text_embed_file_of_any_name(tmp_path, text_weights):
    """text-embed writes safetensors whatever --out is called (emb.pt); its recorded class names still count."""
    from dgseg.models.text import save_class_embeddings

    path = save_class_embeddings(tmp_path / "emb.pt", torch.randn(3, 24), ["background", "rust", "crack"])
    with pytest.raises(WeightsError, match=r"emb\.pt: its embeddings are of the classes "
                                           r"\['background', 'rust', 'crack'\].*\['background', 'crack', 'rust'\]"):
        load_class_embeddings(path, ["background", "crack", "rust"])
    assert load_class_embeddings(path, ["background", "rust", "crack"]).shape == (3, 24)


def test_text_embed_of_a_file_without_a_text_tower_says_so(tmp_path, text_weights, capsys):
    """An image-only file (no text tower) is named as not a CLIP text tower, not asked for its activation."""
    import yaml

    from dgseg.cli import main
    from dgseg.config import config_to_dict

    vision = tmp_path / "vision.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2)}, str(vision))
    cfg_file = tmp_path / "v.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(vltseg(text_weights))))
    assert main(["text-embed", str(cfg_file), "--out", str(tmp_path / "emb.safetensors"),
                 "--set", f"model.text.weights={vision}"]) == 2
    err = capsys.readouterr().err
    assert f"{vision}: not a CLIP text tower (missing ['token_embedding.weight'" in err and "activation" not in err
    assert not (tmp_path / "emb.safetensors").exists()


def test_a_run_with_fixed_class_embeddings_loads_without_their_file_or_text_tower(tmp_path, text_weights):
    """Its checkpoint holds the embeddings it trained with: loading reads neither the embeddings file nor the
    text tower that computed them (both may be gone where the run folder moved)."""
    import shutil

    from dgseg.engine.checkpoint import load_checkpoint, save_checkpoint
    from dgseg.engine.inference import export_full
    from dgseg.engine.train import checkpoint_meta
    from dgseg.models.text import save_class_embeddings

    emb = save_class_embeddings(tmp_path / "emb.safetensors", torch.randn(19, 24), list(CLASSES))
    tower = shutil.copy(text_weights, tmp_path / "tower.safetensors")
    for name, text in (("file", {"name": "clip", "embeddings": str(emb), "learnable_context": False}),
                       ("tower", {"name": "clip", "weights": str(tower), "learnable_context": False})):
        cfg = vltseg(text_weights, model__text=text)
        model = dgseg.build_model(cfg)
        save_checkpoint(tmp_path / name, 1, model.trainable_state_dict(), checkpoint_meta(cfg, 1))
        trained = model.text.class_embeddings.clone()
        Path(text.get("embeddings") or text["weights"]).unlink()
        loaded, _ = load_model(tmp_path / name)
        assert torch.equal(loaded.text.class_embeddings, trained), name
        full = export_full(loaded, cfg, load_checkpoint(tmp_path / name)[1], tmp_path / f"{name}_full.safetensors")
        assert torch.equal(load_model(full)[0].text.class_embeddings, trained), name  # a full export the same
    with pytest.raises(WeightsError, match="emb.safetensors"):  # a build from the config still needs the file
        dgseg.build_model(vltseg(text_weights, model__text={"name": "clip", "embeddings": str(emb),
                                                             "learnable_context": False}))


def test_a_learned_prompts_text_tower_is_checked_by_content_wherever_its_file_lives(tmp_path, text_weights):
    """The frozen tower is read from model.text.weights at every load, not stored in the checkpoint: another file
    holding the same tower loads; a different tower is refused by name, as a different backbone is."""
    from safetensors.torch import load_file

    from dgseg.engine.checkpoint import CheckpointError, save_checkpoint
    from dgseg.engine.eval_record import changed_keys
    from dgseg.engine.train import checkpoint_meta

    cfg = vltseg(text_weights)
    model = dgseg.build_model(cfg)
    meta = checkpoint_meta(cfg, 1, model)
    assert meta["text_tower"]["file"] == "clip_text.safetensors" and len(meta["text_tower"]["digest"]) == 64
    save_checkpoint(tmp_path / "run", 1, model.trainable_state_dict(), meta)
    alone = {k: v for k, v in load_file(str(text_weights)).items() if k.startswith("text.")}
    save_file(alone, str(tmp_path / "tower_only.safetensors"))  # the same tower, without the visual part, elsewhere
    load_model(tmp_path / "run", [f"model.text.weights={tmp_path / 'tower_only.safetensors'}"])
    torch.manual_seed(1)
    other = CLIPTextTower(vocab_size=49408, width=32, layers=1, heads=1, context_length=77, embed_dim=24)
    save_file({f"text.{k}": v for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"(?s)the CLIP text tower differs from the one it was trained with.*"
                       r"first differing tensor: .*--set model.text.weights=PATH/TO/clip_text.safetensors"):
        load_model(tmp_path / "run", [f"model.text.weights={tmp_path / 'other.safetensors'}"])
    train(vltseg(text_weights, train__max_iters=1, train__checkpoint_interval=1), tmp_path / "trained", progress=False)
    with pytest.raises(CheckpointError, match="the CLIP text tower differs"):  # --resume checks it too
        train(vltseg(tmp_path / "other.safetensors", train__max_iters=2, train__checkpoint_interval=1),
              tmp_path / "trained", resume=True, progress=False)
    # checked by content, so a moved tower file leaves the run's own evaluation its own
    assert changed_keys({"model": {"text": {"weights": "a.pt"}}}, {"model": {"text": {"weights": "b.pt"}}}) == {}


def test_a_resumed_learned_prompt_run_hashes_its_text_tower_once(tmp_path, text_weights, monkeypatch):
    """--resume checks the tower against the checkpoint and records it in the checkpoints to come: one hash serves
    both (a ViT-L tower takes about a second)."""
    from dgseg.engine import text_tower_check
    from dgseg.engine.checkpoint import load_checkpoint

    train(vltseg(text_weights, train__max_iters=1, train__checkpoint_interval=1), tmp_path / "run", progress=False)
    first = load_checkpoint(tmp_path / "run")[1]["text_tower"]
    hashed, real = [], text_tower_check._tower_identity
    monkeypatch.setattr(text_tower_check, "_tower_identity", lambda model: hashed.append(1) or real(model))
    train(vltseg(text_weights, train__max_iters=2, train__checkpoint_interval=1), tmp_path / "run", resume=True,
          progress=False)
    assert len(hashed) == 1
    meta = load_checkpoint(tmp_path / "run")[1]
    assert meta["step"] == 2 and meta["text_tower"] == first


def test_an_older_learned_prompt_checkpoint_without_a_tower_digest_keeps_the_tower_file_a_changed_key(tmp_path,
                                                                                                      text_weights):
    """model.text.weights leaves the numbers as they are only where the tower is checked by content: a checkpoint
    of an older dgseg records no tower digest, so another tower there is a key the evaluation reads set otherwise
    (refused in the run folder without --force), as before the check."""
    from dgseg.engine.checkpoint import save_checkpoint
    from dgseg.engine.eval_record import evaluation_record
    from dgseg.engine.train import checkpoint_meta

    cfg = vltseg(text_weights)
    model = dgseg.build_model(cfg)
    other = vltseg(tmp_path / "other.safetensors")
    cpu = torch.device("cpu")
    save_checkpoint(tmp_path / "old", 1, model.trainable_state_dict(), checkpoint_meta(cfg, 1))  # no text_tower
    changed = evaluation_record(tmp_path / "old", other, cpu, "dgseg eval")["changed"]
    assert changed == {"model.text.weights": [str(text_weights), str(tmp_path / "other.safetensors")]}
    save_checkpoint(tmp_path / "new", 1, model.trainable_state_dict(), checkpoint_meta(cfg, 1, model))
    assert evaluation_record(tmp_path / "new", other, cpu, "dgseg eval")["changed"] == {}  # checked at load


def test_a_full_export_of_a_learned_prompt_run_loads_without_the_text_tower_file(tmp_path, text_weights):
    """The export holds every tensor, the frozen text tower's included, and its meta the tower's activation."""
    import shutil

    from dgseg.engine.checkpoint import load_checkpoint, save_checkpoint
    from dgseg.engine.inference import export_full
    from dgseg.engine.train import checkpoint_meta

    tower = shutil.copy(text_weights, tmp_path / "tower.safetensors")
    cfg = vltseg(tower)
    torch.manual_seed(0)
    model = dgseg.build_model(cfg).eval()
    save_checkpoint(tmp_path / "run", 1, model.trainable_state_dict(), checkpoint_meta(cfg, 1, model))
    assert load_checkpoint(tmp_path / "run")[1]["text_tower"]["activation"] == "gelu"  # EVA-CLIP's
    loaded, _ = load_model(tmp_path / "run")
    full = export_full(loaded, cfg, load_checkpoint(tmp_path / "run")[1], tmp_path / "full.safetensors")
    Path(tower).unlink()
    exported, _ = load_model(full)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(exported._scores(x), model._scores(x))
    assert exported.text.frozen.activation == "gelu"
