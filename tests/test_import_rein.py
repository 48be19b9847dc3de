"""Importing the official Rein checkpoints (github w1oves/Rein releases).

The official files are ``torch.save({"meta": ..., "state_dict": ...})`` with the Rein and head weights under
mmseg/mmdet names. Here such a file is written in that key layout, with the shapes the official modules give
(``LoRAReins`` + ``ReinMask2FormerHead(replace_query_feat=True)`` with mmdet's ``MSDeformAttnPixelDecoder``),
at tiny sizes. The per-layer equations of the head are checked against mmdet's in test_head_mask2former.py
(``test_one_decoder_layer_matches_the_mmdet_equations``) and Rein's in test_rein.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from tiny import tiny_dict

import dgseg
from dgseg.cli import main
from dgseg.engine.checkpoint import load_checkpoint
from dgseg.engine.import_rein import ReinImportError, convert_rein_checkpoint, import_rein
from dgseg.engine.inference import load_model
from dgseg.models.backbones import build_backbone

VIT_KW = {"depth": 2, "embed_dim": 32, "num_heads": 2}
# tiny sizes: ViT width D, Rein layers L / tokens m / rank r, head width H, classes K, FFNs, heads, points
D, L, M, R, H, K, ENC_FFN, DEC_FFN, HEADS, POINTS, ENC_LAYERS, DEC_LAYERS = 32, 2, 8, 4, 32, 19, 64, 48, 2, 4, 1, 2


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official Rein + Mask2Former checkpoint (mmseg names), from the official modules:
    rein/models/backbones/reins.py (LoRAReins), mmdet MSDeformAttnPixelDecoder / Mask2FormerTransformerDecoder
    (mmcv ConvModule ``conv``/``gn``, FFN ``layers.0.0``/``layers.1``, MultiheadAttention ``attn``) and
    rein/models/heads/rein_mask2former.py (``querys2feat``, no ``query_embed``/``query_feat``)."""
    rein = {
        "learnable_tokens_a": (L, M, R), "learnable_tokens_b": (L, R, D), "scale": (),
        "mlp_token2feat.weight": (D, D), "mlp_token2feat.bias": (D,),
        "mlp_delta_f.weight": (D, D), "mlp_delta_f.bias": (D,),
        "transform.weight": (H, D), "transform.bias": (H,), "merge.weight": (H, 3 * H), "merge.bias": (H,),
    }
    head: dict[str, tuple[int, ...]] = {}

    def linear(name, out, inp, bias=True):
        head[f"{name}.weight"] = (out, inp)
        if bias:
            head[f"{name}.bias"] = (out,)

    def conv_gn(name, out, inp, k, bias):
        head[f"{name}.conv.weight"] = (out, inp, k, k)
        if bias:
            head[f"{name}.conv.bias"] = (out,)
        head[f"{name}.gn.weight"] = head[f"{name}.gn.bias"] = (out,)

    def ffn_norms(prefix, ffn, norms):
        linear(f"{prefix}.ffn.layers.0.0", ffn, H)
        linear(f"{prefix}.ffn.layers.1", H, ffn)
        for n in range(norms):
            head[f"{prefix}.norms.{n}.weight"] = head[f"{prefix}.norms.{n}.bias"] = (H,)

    for i in range(3):
        conv_gn(f"pixel_decoder.input_convs.{i}", H, D, 1, bias=True)
    for i in range(ENC_LAYERS):
        p = f"pixel_decoder.encoder.layers.{i}"
        linear(f"{p}.self_attn.sampling_offsets", HEADS * 3 * POINTS * 2, H)
        linear(f"{p}.self_attn.attention_weights", HEADS * 3 * POINTS, H)
        linear(f"{p}.self_attn.value_proj", H, H)
        linear(f"{p}.self_attn.output_proj", H, H)
        ffn_norms(p, ENC_FFN, 2)
    head["pixel_decoder.level_encoding.weight"] = (3, H)
    conv_gn("pixel_decoder.lateral_convs.0", H, D, 1, bias=False)
    conv_gn("pixel_decoder.output_convs.0", H, H, 3, bias=False)
    head["pixel_decoder.mask_feature.weight"], head["pixel_decoder.mask_feature.bias"] = (H, H, 1, 1), (H,)
    for i in range(DEC_LAYERS):
        p = f"transformer_decoder.layers.{i}"
        for attn in ("self_attn", "cross_attn"):
            head[f"{p}.{attn}.attn.in_proj_weight"], head[f"{p}.{attn}.attn.in_proj_bias"] = (3 * H, H), (3 * H,)
            linear(f"{p}.{attn}.attn.out_proj", H, H)
        ffn_norms(p, DEC_FFN, 3)
    head["transformer_decoder.post_norm.weight"] = head["transformer_decoder.post_norm.bias"] = (H,)
    linear("querys2feat", H, H)
    head["level_embed.weight"] = (3, H)
    linear("cls_embed", K + 1, H)
    for i in (0, 2, 4):
        linear(f"mask_embed.{i}", H, H)
    return {**{f"backbone.reins.{k}": s for k, s in rein.items()}, **{f"decode_head.{k}": s for k, s in head.items()}}


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_shapes().items():
        v = torch.randn(shape, generator=g) * 0.2
        if key.endswith(("norms.0.weight", "norms.1.weight", "norms.2.weight", "gn.weight", "post_norm.weight")):
            v = v + 1.0
        sd[key] = v
    sd["backbone.reins.scale"] = torch.tensor(0.5)  # large enough for Rein to matter in the comparison
    return sd


# the dgseg names, written out here (not taken from the importer): Rein's renamed parameters, the head as is
REIN_NAMES = {"learnable_tokens_a": "tokens_a", "learnable_tokens_b": "tokens_b", "scale": "scale",
              "mlp_token2feat": "token2feat", "mlp_delta_f": "delta_f", "transform": "query_proj",
              "merge": "query_merge"}


def dgseg_name(key: str) -> str:
    if key.startswith("decode_head."):
        return "head." + key.removeprefix("decode_head.")
    first, _, rest = key.removeprefix("backbone.reins.").partition(".")
    return "adapter." + REIN_NAMES[first] + (f".{rest}" if rest else "")


def save_official(path, state_dict, meta=None):
    torch.save({"meta": meta if meta is not None else {"iter": 40000, "seed": 0}, "state_dict": state_dict}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny DINOv2 in the official ``dinov2_vit*14_pretrain.pth`` layout (patch 14), a tiny config that
    resamples it to patch 16 at a 32 px crop, and an official-layout Rein checkpoint for that model."""
    root = tmp_path_factory.mktemp("rein_import")
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=28, **VIT_KW)
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(v.shape, generator=g) * 0.1 + (1.0 if k.endswith("gamma") else 0.0)
          for k, v in vit.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, D)
    torch.save(sd, root / "dinov2_vits14_pretrain.pth")
    data = tiny_dict()
    data["model"]["backbone"].update(patch_size=16, img_size=32, model_kwargs=VIT_KW)
    data["model"]["adapter"] = {"name": "rein", "tokens": M, "rank": R, "query_dim": H}
    data["model"]["head"].update(hidden_dim=H, enc_layers=ENC_LAYERS, enc_ffn=ENC_FFN, dec_layers=DEC_LAYERS,
                                 dec_ffn=DEC_FFN, num_heads=HEADS, num_points=POINTS, num_queries=M)
    (root / "tiny.yaml").write_text(yaml.safe_dump(data))
    save_official(root / "iter_40000_published.pth", official_state_dict())
    return {"root": root, "backbone": root / "dinov2_vits14_pretrain.pth", "config": root / "tiny.yaml",
            "checkpoint": root / "iter_40000_published.pth"}


def reference_model(files) -> torch.nn.Module:
    """The dgseg model with the official tensors loaded directly, by the names above."""
    cfg = dgseg.load_config(files["config"], [f"model.backbone.weights={files['backbone']}"])
    model = dgseg.build_model(cfg)
    sd = {dgseg_name(k): v for k, v in official_state_dict().items()}
    assert set(sd) == set(model.trainable_state_dict())
    model.load_state_dict(sd, strict=False)
    return model.eval()


def test_the_rename_table_places_every_official_key(files):
    weights, report = convert_rein_checkpoint(files["checkpoint"])

    official = official_state_dict()
    assert set(report.renamed) == set(official) and report.ignored == ["meta"]
    assert {report.renamed[k]: k for k in official} == {dgseg_name(k): k for k in official}
    for key, value in official.items():
        torch.testing.assert_close(weights[report.renamed[key]], value, rtol=0, atol=0)
    assert report.counts()["decode_head.* -> head.*"] == sum(k.startswith("decode_head.") for k in official)


def test_imported_checkpoint_predicts_as_the_weights_loaded_directly(files, tmp_path):
    path, report = import_rein(files["checkpoint"], files["backbone"], tmp_path / "run", config=files["config"])

    weights, meta = load_checkpoint(tmp_path / "run")
    assert path.name == "iter_0040000.safetensors" and meta["step"] == 40000
    assert meta["imported_from"] == "iter_40000_published.pth"
    assert meta["backbone"]["sha256"] and meta["config"]["model"]["backbone"]["weights"] == str(files["backbone"])
    assert set(weights) == {dgseg_name(k) for k in official_state_dict()}
    imported, _ = load_model(tmp_path / "run")  # what dgseg eval / predict do
    reference = reference_model(files)
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference.predict(x)
        torch.testing.assert_close(imported.predict(x), expected, rtol=0, atol=0)
        # batch=2: a 32 px window is a 1 x 1 map at stride 32, where torch's group_norm refuses a single
        # window (one value per group) although the result is defined; a batch of windows passes its check
        torch.testing.assert_close(imported.predict(x, mode="slide", crop=32, stride=16, batch=2),
                                   reference.predict(x, mode="slide", crop=32, stride=16, batch=2), rtol=0, atol=0)
        # the Rein tokens matter: without them (scale 0) the prediction changes
        reference.adapter.scale.zero_()
        assert not torch.allclose(reference.predict(x), expected)


def test_cli_import_then_predict(files, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "imported"
    rc = main(["import-rein", str(files["checkpoint"]), "--backbone", str(files["backbone"]), "--out", str(out),
               "--config", str(files["config"])])
    assert rc == 0
    assert "tensors placed" in capsys.readouterr().out
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    rc = main(["predict", "--checkpoint", str(out), str(tmp_path / "a.png"), "--out", str(tmp_path / "pred"),
               "--no-progress"])
    assert rc == 0 and (tmp_path / "pred" / "a_labelTrainIds.png").is_file()


def test_a_backbone_file_missing_or_unfit_is_named_by_the_option_given_not_a_config_key(files, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pth"
    torch.save({"foo": torch.zeros(3)}, other)
    expected = {
        tmp_path / "missing.pth": f"file not found: {tmp_path / 'missing.pth'}. dgseg never downloads weights: ",
        tmp_path: f"{tmp_path} is a folder; expected the weights file itself",
        junk: f"{junk}: could not be read as plain tensors with torch.load(weights_only=True)",
        other: f"{other} does not fit the architecture 'vit_small_patch14_dinov2': ",
    }
    for backbone, message in expected.items():
        out = tmp_path / "run"
        assert main(["import-rein", str(files["checkpoint"]), "--backbone", str(backbone), "--out", str(out),
                     "--config", str(files["config"])]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dgseg import-rein: error: --backbone: {message}"), err
        assert "model.backbone.weights" not in err and not out.exists()
        if backbone.name == "missing.pth":
            assert "(or pass its path with --backbone)" in err


def test_keys_no_rule_places_are_refused_by_name(files, tmp_path):
    sd = official_state_dict()
    sd["backbone.blocks.0.norm1.weight"] = torch.ones(D)  # a full-segmentor file (backbone included)
    sd["neck.lateral.weight"] = torch.ones(1)
    path = save_official(tmp_path / "full.pth", sd)

    with pytest.raises(ReinImportError) as err:
        convert_rein_checkpoint(path)
    assert "backbone.blocks.0.norm1.weight" in str(err.value) and "neck.lateral.weight" in str(err.value)
    assert "--backbone" in str(err.value)


def test_keys_the_model_lacks_and_missing_or_misshaped_keys_are_refused_by_name(files, tmp_path):
    sd = official_state_dict()
    sd["decode_head.conv_seg.weight"] = torch.ones(K, H, 1, 1)  # an mmseg BaseDecodeHead layer dgseg has not
    del sd["decode_head.querys2feat.bias"]
    sd["decode_head.cls_embed.weight"] = torch.ones(11, H)
    path = save_official(tmp_path / "odd.pth", sd)

    with pytest.raises(ReinImportError) as err:
        import_rein(path, files["backbone"], tmp_path / "run", config=files["config"])
    message = str(err.value)
    assert "decode_head.conv_seg.weight" in message
    assert "decode_head.querys2feat.bias" in message
    assert f"decode_head.cls_embed.weight -> head.cls_embed.weight: file (11, {H}) vs model ({K + 1}, {H})" in message
    assert not (tmp_path / "run").exists()


LOADED = []


def _mark_loaded():
    LOADED.append(True)
    return {}


class PickledObject:
    """Unpickling this runs ``_mark_loaded``: it must never happen."""

    def __reduce__(self):
        return (_mark_loaded, ())


def test_a_pickled_object_in_the_file_is_refused_without_running_it(files, tmp_path):
    path = save_official(tmp_path / "pickled.pth", official_state_dict(), meta={"hook": PickledObject()})

    with pytest.raises(ReinImportError, match="weights_only=True"):
        convert_rein_checkpoint(path)
    assert LOADED == []


def test_numpy_numbers_in_the_meta_are_read_as_numbers(files, tmp_path):
    path = save_official(tmp_path / "np.pth", official_state_dict(), meta={"seed": np.int64(7), "lr": np.float64(1e-4)})
    weights, report = convert_rein_checkpoint(path)
    assert len(weights) == len(official_shapes()) and report.ignored == ["meta"]


def test_dinov2_is_converted_as_rein_converts_it(files):
    """Rein's tools/convert_models/convert_dinov2_large_512x512.py: the 14x14 patch kernel and the 37x37 (here 2x2) position
    grid are both resized with F.interpolate(bicubic, align_corners=False), no antialiasing."""
    from dgseg.config import BackboneConfig

    raw = torch.load(files["backbone"], weights_only=True)
    backbone = build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", weights=str(files["backbone"]),
                                             patch_size=16, img_size=64, model_kwargs=VIT_KW))
    vit = backbone.vit
    kernel = F.interpolate(raw["patch_embed.proj.weight"].float(), size=(16, 16), mode="bicubic", align_corners=False)
    grid = raw["pos_embed"][:, 1:].reshape(1, 2, 2, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, D)
    torch.testing.assert_close(vit.patch_embed.proj.weight, kernel, rtol=0, atol=0)
    torch.testing.assert_close(vit.pos_embed, torch.cat([raw["pos_embed"][:, :1], grid], 1), rtol=0, atol=0)


def _with_stand_in_mmengine(monkeypatch):
    """Put a stand-in ``mmengine.logging.history_buffer.HistoryBuffer`` where the real class lives, so that
    ``torch.save`` pickles it by that path (as mmengine's Runner.save_checkpoint does)."""
    import sys
    import types

    class HistoryBuffer:  # mmengine/logging/history_buffer.py keeps numpy arrays and a max length
        def __init__(self, values):
            self._log_history = np.asarray(values, dtype=np.float64)
            self._count_history = np.ones(len(values))
            self.max_length = 1000000

        def __setstate__(self, state):  # would run if the class were ever imported on loading
            _mark_loaded()

    names = ["mmengine", "mmengine.logging", "mmengine.logging.history_buffer"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    HistoryBuffer.__module__ = "mmengine.logging.history_buffer"
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer
    return HistoryBuffer, names


def test_an_mmengine_checkpoint_gives_its_state_dict_without_importing_mmengine(files, tmp_path, monkeypatch):
    import sys

    history_buffer, names = _with_stand_in_mmengine(monkeypatch)
    path = tmp_path / "iter_40000.pth"
    torch.save({
        "meta": {"mmengine_version": "0.10.3", "iter": 40000, "seed": np.int64(0)},
        "state_dict": official_state_dict(),
        "message_hub": {"log_scalars": {"train/loss": history_buffer([1.5, 1.2]),
                                        "train/lr": history_buffer([1e-4])},
                        "runtime_info": {"iter": 40000, "last_loss": np.float32(0.5)}},
        "param_schedulers": [{"last_step": 40000, "base_values": [1e-4]}],
    }, path)
    for name in names:  # the stand-in is gone: nothing can import or run it
        monkeypatch.delitem(sys.modules, name)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "mmengine.logging.history_buffer.HistoryBuffer" in unsafe  # weights_only=True refuses the file
    weights, report = convert_rein_checkpoint(path)
    assert "mmengine" not in sys.modules and LOADED == []
    expected = official_state_dict()
    assert set(weights) == {dgseg_name(k) for k in expected}
    for key, value in expected.items():
        torch.testing.assert_close(weights[dgseg_name(key)], value, rtol=0, atol=0)
    assert report.ignored == ["message_hub", "meta", "param_schedulers"]
    assert report.stand_ins["mmengine.logging.history_buffer.HistoryBuffer"] == 2
    assert "HistoryBuffer x 2" in report.summary()


def test_an_mmengine_checkpoint_with_another_class_is_still_refused(files, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": official_state_dict(), "message_hub": PickledObject()}, path)
    with pytest.raises(ReinImportError, match="_mark_loaded"):
        convert_rein_checkpoint(path)
    assert LOADED == []


def test_a_folder_that_holds_a_run_is_refused_and_force_moves_the_old_run_aside(files, tmp_path, capsys):
    """``import-rein --out`` claims its folder as ``dgseg train`` does: it would replace the run's
    checkpoint of the same iteration and move ``latest``."""
    run = tmp_path / "my_run"
    args = ["import-rein", str(files["checkpoint"]), "--backbone", str(files["backbone"]), "--out", str(run),
            "--config", str(files["config"])]
    assert main(args) == 0
    (run / "log.jsonl").write_text('{"iter": 40000, "loss": 1.0}\n')  # as if trained on after the import
    checkpoint = run / "checkpoints" / "iter_0040000.safetensors"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args) == 2
    assert (f"{run}: already holds a run (checkpoints/, log.jsonl). Choose a new folder with --out, or pass "
            "--force to move the old run's files into a previous-<time>/ folder inside it first") in (
        capsys.readouterr().err)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(ReinImportError):  # a failed import with --force leaves the old run where it is
        import_rein(save_official(tmp_path / "bad.pth", {}), files["backbone"], run, config=files["config"],
                    force=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    assert main([*args, "--force"]) == 0
    (previous,) = run.glob("previous-*")
    assert f"--force: the previous run in {run} was moved to {previous}" in capsys.readouterr().out
    assert {previous / p.relative_to(run): b for p, b in before.items()} == {
        p: p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    assert checkpoint.is_file() and not (run / "log.jsonl").exists()
