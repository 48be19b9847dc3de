"""Oracle: how VLTSeg's re-implementation loads EVA-CLIP's weights, run with mmengine 0.10.7's own loader.

Official files (github VLTSeg/VLTSeg, read from its copy jangminhyeok/VLTSeg at 96c3ce6):

- ``configs/_base_/models/eva-clip+mask2former.py``: the backbone ``EVA02`` gets
  ``init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='visual.')`` (EVA02_CLIP_L_psz14_s4B.pt,
  whose vision tower was trained at 224 px: a 16 x 16 position grid) and ``img_size=512``, patch 14: a 36 x 36
  grid.
- ``vltseg/models/eva02.py`` ``EVA02(BaseModule)``: ``__init__`` draws ``pos_embed`` and ``cls_token`` with
  ``trunc_normal_(std=.02)``; ``init_weights`` draws every Linear ``trunc_normal_(std=.02)`` (bias 0) and sets
  every LayerNorm to (1, 0), then calls ``BaseModule.init_weights``, which runs the ``Pretrained`` init: the
  file's ``visual.*`` tensors loaded not strictly. Its attention has no sub-LN and the backbone no final norm.

:class:`MiniEVA02` has those names, that ``init_weights`` and that ``init_cfg`` at width 8; what is under test
is mmengine's loading itself. It shows the three facts dgseg's plain VLTSeg config
(``configs/vltseg_plain_eva02_clip_l_gta.yaml``) encodes as keys: the file's 16 x 16 position embedding does
not reach a 36 x 36 model (a shape mismatch, reported and skipped: ``pos_embed_init: trunc_normal``), the
sub-LN and final-norm weights in the file are dropped (``attn_norm: false``, ``final_norm: false``), and
every tensor whose shape matches is loaded.
"""

from __future__ import annotations

import mmcv_shim

mmcv_shim.require_oracle()

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from mmengine.model import BaseModule  # noqa: E402
from torch import nn  # noqa: E402

from dgseg.config import load_config  # noqa: E402

WIDTH = 8


class MiniEVA02(BaseModule):
    """VLTSeg's ``EVA02`` names, draws and ``init_weights`` (one block, no sub-LN, no final norm)."""

    def __init__(self, grid: int, init_cfg: dict) -> None:
        super().__init__(init_cfg)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, WIDTH, 14, 14)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, WIDTH))
        nn.init.trunc_normal_(self.pos_embed, std=.02)
        nn.init.trunc_normal_(self.cls_token, std=.02)
        block = nn.Module()
        block.norm1 = nn.LayerNorm(WIDTH)
        block.attn = nn.Module()
        block.attn.q_proj = nn.Linear(WIDTH, WIDTH, bias=False)
        block.attn.proj = nn.Linear(WIDTH, WIDTH)
        self.blocks = nn.ModuleList([block])

    def init_weights(self) -> None:
        def draw(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        self.apply(draw)
        super().init_weights()


def _eva_clip_file(path, grid: int) -> str:
    """An EVA-CLIP-shaped checkpoint: the vision tower under ``visual.`` (with the sub-LN and final norm theirs
    lacks), a text tower beside it; every value a constant, to see what was loaded."""
    state = {
        "visual.cls_token": torch.full((1, 1, WIDTH), 5.0),
        "visual.pos_embed": torch.full((1, grid * grid + 1, WIDTH), 7.0),
        "visual.patch_embed.proj.weight": torch.full((WIDTH, 3, 14, 14), 3.0),
        "visual.patch_embed.proj.bias": torch.full((WIDTH,), 3.0),
        "visual.blocks.0.norm1.weight": torch.full((WIDTH,), 2.0),
        "visual.blocks.0.norm1.bias": torch.full((WIDTH,), 2.0),
        "visual.blocks.0.attn.q_proj.weight": torch.full((WIDTH, WIDTH), 4.0),
        "visual.blocks.0.attn.proj.weight": torch.full((WIDTH, WIDTH), 4.0),
        "visual.blocks.0.attn.proj.bias": torch.full((WIDTH,), 4.0),
        "visual.blocks.0.attn.inner_attn_ln.weight": torch.full((WIDTH,), 9.0),
        "visual.norm.weight": torch.full((WIDTH,), 9.0),
        "text.positional_embedding": torch.full((77, WIDTH), 9.0),
    }
    torch.save(state, path)
    return str(path)


def _loaded(model_grid: int, file_grid: int, tmp_path) -> tuple[MiniEVA02, torch.Tensor]:
    torch.manual_seed(0)
    ckpt = _eva_clip_file(tmp_path / "EVA02_CLIP_L_psz14_s4B.pt", file_grid)
    model = MiniEVA02(model_grid, init_cfg=dict(type="Pretrained", checkpoint=ckpt, prefix="visual."))
    drawn = model.pos_embed.detach().clone()
    model.init_weights()
    return model, drawn


def test_a_36_by_36_model_keeps_its_drawn_position_embedding_and_loads_every_tensor_that_fits(tmp_path):
    model, drawn = _loaded(36, 16, tmp_path)
    assert torch.equal(model.pos_embed, drawn)  # the file's (1, 257, C) skipped: trunc_normal_(std=.02) stays
    assert 0.019 < model.pos_embed.std().item() < 0.021  # 10,376 draws of std .02 (cut at +-2: no cut here)
    state = model.state_dict()
    # the file's inner_attn_ln / norm / text tensors have no place here (a premise, read from eva02.py): mmengine
    # passes over them without an error, and loads every tensor of the model's own names and shapes
    for name, value in state.items():
        if name != "pos_embed":
            expected = {"cls_token": 5.0, "patch_embed": 3.0, "blocks.0.norm1": 2.0, "blocks.0.attn": 4.0}
            (want,) = [v for k, v in expected.items() if name.startswith(k)]
            assert torch.all(value == want), name  # loaded from the file, over init_weights' draws


def test_the_skip_is_the_shape_alone_a_16_by_16_model_takes_the_files_position_embedding(tmp_path):
    model, _ = _loaded(16, 16, tmp_path)
    assert torch.all(model.pos_embed == 7.0)


def test_dgseg_plain_vltseg_config_encodes_what_mmengine_did():
    cfg = load_config(Path(__file__).parents[2] / "configs" / "vltseg_plain_eva02_clip_l_gta.yaml")
    assert cfg.model.backbone.pos_embed_init == "trunc_normal"
    assert cfg.model.backbone.attn_norm is False and cfg.model.backbone.final_norm is False
