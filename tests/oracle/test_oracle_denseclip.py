"""Oracle: dgseg's context decoder (VLTSeg v1's text guidance) against DenseCLIP's own ``ContextDecoder``.

DenseCLIP is not on PyPI: this module runs where ``DGSEG_DENSECLIP_REPO`` names a checkout of
github.com/raoyongming/DenseCLIP (checked at 5eda47f, 2023-09-15) and the oracle environment is present
(``DGSEG_DENSECLIP_REPO=/path/to/DenseCLIP make oracle``); elsewhere it is skipped with that reason. It imports
``segmentation/denseclip/models.py`` from the checkout. That file was written for mmseg 0.x and timm 0.4, so two
things stand in while it is imported: timm's ``drop`` module under its old name (moved to ``timm.layers``), and
a no-op for mmseg's backbone registry (its ``CLIPVisionTransformer`` would collide with Rein's in the same
session). ``ContextDecoder`` itself uses neither.

dgseg's ``ContextDecoder`` takes DenseCLIP's weights by their own names (``strict``): the update it returns for
the class embeddings, given the visual context (global embedding, then the dense ones), must agree.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import mmcv_shim

mmcv_shim.require_oracle()

import pytest  # noqa: E402

REPO = os.environ.get("DGSEG_DENSECLIP_REPO", "")
if not REPO:
    pytest.skip("DGSEG_DENSECLIP_REPO is not set (a checkout of github.com/raoyongming/DenseCLIP: DenseCLIP is "
                "not on PyPI)", allow_module_level=True)

import torch  # noqa: E402
from test_oracle_head import perturb  # noqa: E402

from dgseg.models.context_decoder import ContextDecoder  # noqa: E402


def _denseclip_models(monkeypatch):
    path = Path(REPO) / "segmentation" / "denseclip" / "models.py"
    if not path.is_file():
        raise FileNotFoundError(f"DGSEG_DENSECLIP_REPO={REPO}: no segmentation/denseclip/models.py there; it should "
                                "name a checkout of github.com/raoyongming/DenseCLIP")
    import timm.layers
    import timm.models.layers
    from mmseg.models import builder

    monkeypatch.setattr(timm.models.layers, "drop", timm.layers.drop, raising=False)
    monkeypatch.setattr(builder.BACKBONES, "register_module", lambda *args, **kwargs: (lambda cls: cls))
    spec = importlib.util.spec_from_file_location("denseclip_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("visual_dim, width, layers", [(48, 32, 3), (768, 256, 3)], ids=["tiny", "vltseg-v1"])
def test_context_decoder_equals_denseclips(monkeypatch, visual_dim, width, layers):
    """Tiny, and VLTSeg v1's size (EVA02-CLIP-L's 768-wide embeddings, width 256, 3 layers, 4 heads: the
    3,750,912 parameters the README counts without gamma)."""
    theirs = _denseclip_models(monkeypatch).ContextDecoder(
        transformer_width=width, transformer_heads=4, transformer_layers=layers, visual_dim=visual_dim,
        dropout=0.1).eval()
    perturb(theirs, seed=0)  # away from init: zero biases, unit norms
    ours = ContextDecoder(visual_dim, width=width, heads=4, layers=layers, dropout=0.1).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    g = torch.Generator().manual_seed(1)
    text, visual = torch.randn(2, 19, visual_dim, generator=g), torch.randn(2, 1 + 6 * 10, visual_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(text, visual), theirs(text, visual), rtol=1e-5, atol=1e-5)
    if visual_dim == 768:
        assert sum(p.numel() for p in ours.parameters()) == 3_750_912
