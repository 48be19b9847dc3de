"""Weights archives are read without running their code (issue 16, item 1): TorchScript ``.pt`` files
(OpenAI CLIP) are unpickled by dgseg's restricted unpickler, never ``torch.jit.load``-ed."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from dgseg.config import BackboneConfig, ConfigError
from dgseg.models.backbones import build_backbone
from dgseg.models.weights_io import WeightsError, read_state_dict
from dgseg.safe_pickle import InertObject, UnsafePickleError, read_archive, torchscript_state_dict

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


class WritesOnLoad(nn.Module):
    """A scripted module whose ``__setstate__`` (run by ``torch.jit.load``) writes ``target``."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.target = state[1]
        self.training = state[2]
        torch.save(state[0], state[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Harmless(nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.proj = nn.Linear(2, 2)
        self.payload = WritesOnLoad(target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.payload(self.proj(x))


def scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_the_hostile_archive_really_writes_when_torch_jit_loads_it(tmp_path):
    """The premise: this archive runs code under torch.jit.load (so the tests below can fail)."""
    target = tmp_path / "written_by_archive"
    path = scripted(WritesOnLoad(str(target)), tmp_path / "evil.pt")
    torch.jit.load(str(path))
    assert target.exists()


@pytest.mark.parametrize("top", [True, False], ids=["top-module", "submodule"])
@pytest.mark.parametrize("name", ["evil.pt", "evil.pth"])
def test_a_torchscript_archive_with_setstate_code_is_refused_and_nothing_runs(tmp_path, top, name):
    target = tmp_path / "written_by_archive"
    path = scripted(WritesOnLoad(str(target)) if top else Harmless(str(target)), tmp_path / name)
    with pytest.raises(WeightsError, match=rf"{name}: the TorchScript class __torch__\..*WritesOnLoad .*keeps its "
                                           r"own state .*runs no code from a weights file"):
        read_state_dict(path)
    cfg = BackboneConfig(name="vit_small_patch14_dinov2", weights=str(path), patch_size=None, img_size=28,
                         model_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 1})
    with pytest.raises(WeightsError, match=name):
        build_backbone(cfg)
    assert not target.exists()


def pickle_zip(path: Path, obj_bytes: bytes, torchscript: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", obj_bytes)
        if torchscript:
            zf.writestr("archive/constants.pkl", pickle.dumps(()))
    return path


class RunsOnUnpickle:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_an_archive_naming_any_other_global_is_refused_naming_file_and_global(tmp_path):
    target = tmp_path / "written_by_archive"
    path = pickle_zip(tmp_path / "clip.pt", pickle.dumps({"w": RunsOnUnpickle(str(target))}, protocol=2))
    with pytest.raises(WeightsError, match=r"clip\.pt: its pickle names '(posix|os)\.system'.*"
                                           r"nothing from the file was run"):
        read_state_dict(path)
    assert not target.exists()


def test_a_truncated_tensor_record_is_refused_naming_the_record(tmp_path):
    path = scripted(nn.Linear(3, 4), tmp_path / "lin.pt")
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for n in src.namelist():
            data = src.read(n)
            dst.writestr(n, data[:-4] if n.endswith("/data/0") else data)
    with pytest.raises(WeightsError, match=r"damaged\.pt: tensor record lin/data/0 holds 44 bytes, expected 12 x 4"):
        read_state_dict(damaged)


@pytest.fixture(scope="module")
def openai_clip_archive(tmp_path_factory):
    """A tiny OpenAI-layout CLIP (open_clip's CLIP has OpenAI's key names), traced and saved as OpenAI did."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16, vision_cfg={"layers": 2, "width": 32, "patch_size": 8, "image_size": 32, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1}).eval()
    traced = torch.jit.trace(model, (torch.randn(1, 3, 32, 32), torch.randint(0, 50, (1, 8))), check_trace=False)
    path = tmp_path_factory.mktemp("clip") / "ViT-T-8.pt"
    torch.jit.save(traced, str(path))
    return path


def test_an_openai_clip_archive_reads_as_torch_jit_load_would(openai_clip_archive):
    got = read_state_dict(openai_clip_archive)
    expected = torch.jit.load(str(openai_clip_archive)).state_dict()  # trusted here: we made the file
    assert list(got) == list(expected)
    assert all(got[k].dtype == v.dtype and torch.equal(got[k], v) for k, v in expected.items())
    assert "visual.conv1.weight" in got and "visual.transformer.resblocks.1.attn.in_proj_weight" in got


def test_an_openai_clip_archive_loads_as_a_timm_clip_backbone(openai_clip_archive):
    cfg = BackboneConfig(name="vit_base_patch16_clip_224", weights=str(openai_clip_archive), patch_size=8,
                         img_size=32, model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    vit = build_backbone(cfg).vit
    raw = torchscript_state_dict(openai_clip_archive)
    assert torch.equal(vit.patch_embed.proj.weight, raw["visual.conv1.weight"])
    assert torch.equal(vit.blocks[1].attn.qkv.weight, raw["visual.transformer.resblocks.1.attn.in_proj_weight"])
    assert torch.equal(vit.norm_pre.weight, raw["visual.ln_pre.weight"])


class Recorder:
    """Stands for a logging object in a training checkpoint (as mmengine's HistoryBuffer)."""

    def __init__(self) -> None:
        self.values = [1.0, 2.0]
        self.tensor = torch.arange(3.0)


def test_read_archive_keeps_objects_of_named_roots_inert_and_refuses_the_rest(tmp_path):
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.eye(2)}, "log": Recorder()}, buffer)
    path = tmp_path / "ckpt.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafePickleError, match=rf"ckpt\.pth: its pickle names '{__name__}\.Recorder'"):
        read_archive(path)
    data = read_archive(path, inert=(__name__.split(".")[0],))
    assert torch.equal(data["state_dict"]["w"], torch.eye(2))
    log = data["log"]
    assert isinstance(log, InertObject) and log.qualname == f"{__name__}.Recorder"
    assert log.state["values"] == [1.0, 2.0] and torch.equal(log.state["tensor"], torch.arange(3.0))


def test_numpy_values_can_be_kept_inert_as_in_an_mmengine_checkpoint(tmp_path):
    import numpy as np

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(2)}, "message_hub": {"lr": np.float64(0.5), "hist": np.arange(3)}},
               buffer)
    path = tmp_path / "iter_40000.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafePickleError, match=r"iter_40000\.pth: its pickle names 'numpy\."):
        read_archive(path)
    data = read_archive(path, inert=("numpy",))
    assert torch.equal(data["state_dict"]["w"], torch.ones(2))
    assert all(isinstance(v, InertObject) for v in data["message_hub"].values())


def test_openai_clip_weights_need_a_quick_gelu_model_and_the_error_names_the_twin(openai_clip_archive, tmp_path):
    """OpenAI trained CLIP with QuickGELU (its release holds an 'input_resolution' entry); timm's plain
    vit_*_clip_224 compute GELU, its *_clip_quickgelu_* twins QuickGELU."""
    release = {**torchscript_state_dict(openai_clip_archive), "input_resolution": torch.tensor(32)}
    path = tmp_path / "ViT-T-8-release.pt"
    torch.save(release, path)
    tiny = dict(weights=str(path), patch_size=8, img_size=32, model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    with pytest.raises(WeightsError, match=r"ViT-T-8-release\.pt: OpenAI's CLIP release .*QuickGELU; "
                                           r"'vit_base_patch16_clip_224' computes GELU .*: use model\.backbone\.name: "
                                           r"vit_base_patch16_clip_quickgelu_224"):
        build_backbone(BackboneConfig(name="vit_base_patch16_clip_224", **tiny))
    vit = build_backbone(BackboneConfig(name="vit_base_patch16_clip_quickgelu_224", **tiny)).vit
    assert type(vit.blocks[0].mlp.act).__name__ == "QuickGELU"
    assert torch.equal(vit.blocks[1].attn.qkv.weight, release["visual.transformer.resblocks.1.attn.in_proj_weight"])
    quick_by_key = BackboneConfig(name="vit_base_patch16_clip_224", **{**tiny, "model_kwargs": {
        **tiny["model_kwargs"], "act_layer": "quick_gelu"}})
    assert type(build_backbone(quick_by_key).vit.blocks[0].mlp.act).__name__ == "QuickGELU"
    # a top-level tower without that entry (open_clip files) may be either: loaded as the config says
    build_backbone(BackboneConfig(name="vit_base_patch16_clip_224", **{**tiny, "weights": str(openai_clip_archive)}))


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_pos_embed_resample_picks_the_interpolation_of_the_position_grid(openai_clip_archive, mode):
    """model.backbone.pos_embed_resample: the file's 4 x 4 grid to a 64 px model's 8 x 8, without antialiasing
    (bilinear: Rein's CLIP backbone, DenseCLIP's init_weights)."""
    cfg = BackboneConfig(name="vit_base_patch16_clip_quickgelu_224", weights=str(openai_clip_archive), patch_size=8,
                         img_size=64, pos_embed_resample=mode,
                         model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    vit = build_backbone(cfg).vit
    stored = torchscript_state_dict(openai_clip_archive)["visual.positional_embedding"]
    grid = stored[1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode=mode, align_corners=False)
    torch.testing.assert_close(vit.pos_embed[0, 1:], expected.flatten(2)[0].T)
    torch.testing.assert_close(vit.pos_embed[0, 0], stored[0])


def test_class_embedding_twice_adds_the_class_embedding_to_the_class_position(openai_clip_archive):
    tiny = dict(name="vit_base_patch16_clip_quickgelu_224", weights=str(openai_clip_archive), patch_size=8,
                img_size=32, model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    vit = build_backbone(BackboneConfig(**tiny, class_embedding_twice=True)).vit
    raw = torchscript_state_dict(openai_clip_archive)
    torch.testing.assert_close(vit.pos_embed[0, 0], raw["visual.positional_embedding"][0] + raw["visual.class_embedding"])
    torch.testing.assert_close(vit.cls_token[0, 0], raw["visual.class_embedding"])
    torch.testing.assert_close(vit.pos_embed[0, 1:], raw["visual.positional_embedding"][1:])
    with pytest.raises(ConfigError, match=r"model\.backbone\.class_embedding_twice: 'samvit_base_patch16' has no "
                                          r"class token"):
        build_backbone(BackboneConfig(name="samvit_base_patch16", img_size=32, class_embedding_twice=True,
                                      model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2,
                                                    "global_attn_indexes": [0]}))
    with pytest.raises(ConfigError, match=r"model\.backbone\.pos_embed_resample.*'nearest'"):
        from tiny import tiny_config

        tiny_config(model__backbone__pos_embed_resample="nearest")


def test_a_safetensors_download_saved_under_a_pt_name_loads_by_its_content(tmp_path):
    """The missing-weights message says to put the download at the config's path, which may end in .pt."""
    from safetensors.torch import save_file

    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(tmp_path / "EVA02_CLIP_L_psz14_s4B.pt"))
    assert torch.equal(read_state_dict(tmp_path / "EVA02_CLIP_L_psz14_s4B.pt")["w"], torch.arange(6.0).reshape(2, 3))
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")  # a torch zip is still read as one
    assert torch.equal(read_state_dict(tmp_path / "plain.pt")["w"], torch.ones(2))
