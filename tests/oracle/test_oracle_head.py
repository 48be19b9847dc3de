"""Oracle: dgseg's Mask2Former head against mmseg's `Mask2FormerHead` (mmdet 3.3.0's
`Mask2FormerHead` + `MSDeformAttnPixelDecoder` + `Mask2FormerTransformerDecoder`), built from the Rein
config's head dict, with the same weights and inputs: the class and mask predictions of every decoder
layer and the semantic scores of mmseg's `predict`.

The weights go from mmdet's head to dgseg's through the official-checkpoint renaming of
`dgseg.engine.import_rein` (`decode_head.*` -> `head.*`), so a broken rename rule fails here too.
Tolerance: float32, 1e-5 relative to the largest value (measured: about 1e-6), and at most one in
10,000 mask logits may have another sign (one within rounding of 0; measured: none at the tiny size).
"""

from __future__ import annotations

import mmcv_shim

mmcv_shim.require_oracle()

import pytest  # noqa: E402
import torch  # noqa: E402
from rein_head_config import build_mmseg_head  # noqa: E402

from dgseg.engine.import_rein import rename_key  # noqa: E402
from dgseg.models.heads import Mask2FormerHead  # noqa: E402

TINY = dict(in_channels=[16, 24, 32, 48], num_classes=5, feat_channels=64, num_queries=10, num_heads=4,
            enc_layers=2, enc_ffn=128, dec_layers=3, dec_ffn=128)
RECIPE = dict(in_channels=[1024] * 4, num_classes=19, feat_channels=256, num_queries=100, num_heads=8,
              enc_layers=6, enc_ffn=1024, dec_layers=9, dec_ffn=2048)


def dgseg_head(sizes: dict, query_link: bool = False) -> Mask2FormerHead:
    return Mask2FormerHead(
        sizes["in_channels"], num_classes=sizes["num_classes"], hidden_dim=sizes["feat_channels"],
        num_queries=sizes["num_queries"], enc_layers=sizes["enc_layers"], enc_ffn=sizes["enc_ffn"],
        dec_layers=sizes["dec_layers"], dec_ffn=sizes["dec_ffn"], num_heads=sizes["num_heads"],
        query_link=query_link,
    ).eval()


@torch.no_grad()
def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add noise to every weight: mmdet's init zeroes the deformable offsets' and attention weights'
    matrices (every query would sample the same pattern); the comparison should see them at work."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)


def mmdet_to_dgseg(state: dict) -> dict:
    """An mmseg `decode_head` state dict renamed by dgseg's official-checkpoint rules."""
    out = {}
    for key, value in state.items():
        name = rename_key(f"decode_head.{key}")
        assert name is not None and name.startswith("head."), key
        out[name[len("head."):]] = value
    return out


def features(sizes: dict, height: int, width: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, height // s, width // s, generator=g)
            for c, s in zip(sizes["in_channels"], (4, 8, 16, 32))]


def run_mmseg(head, feats, height, width):

    metas = [dict(img_shape=(height, width), pad_shape=(height, width)) for _ in range(feats[0].shape[0])]
    layers = []  # mmdet's forward returns every layer's predictions; predict keeps the last
    hook = head.register_forward_hook(lambda module, args, out: layers.append(out))
    try:
        with torch.no_grad():
            scores = head.predict(feats, metas, None)
    finally:
        hook.remove()
    (cls_list, mask_list), = layers
    return cls_list, mask_list, scores


def run_dgseg(head, feats, height, width, queries=None):
    with torch.no_grad():
        out = head(feats, queries)
        scores = head.semantic(out, (height, width))
    layers = [*out["aux_outputs"], {"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}]
    return [o["pred_logits"] for o in layers], [o["pred_masks"] for o in layers], scores


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, rel: float, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs mmdet {tuple(theirs.shape)}"
    err = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert err <= rel * max(scale, 1.0), f"{what}: max |dgseg - mmdet| = {err:.3g} (largest value {scale:.3g})"


def compare(ours, theirs, rel: float) -> None:
    cls_o, mask_o, scores_o = ours
    cls_t, mask_t, scores_t = theirs
    assert len(cls_o) == len(cls_t), f"{len(cls_o)} predictions vs mmdet's {len(cls_t)}"
    for i, (a, b) in enumerate(zip(cls_o, cls_t)):
        assert_close(a, b, rel, f"class logits, prediction {i}")
    for i, (a, b) in enumerate(zip(mask_o, mask_t)):
        assert_close(a, b, rel, f"mask logits, prediction {i}")
        # the masked-attention rule reads the sign of these logits: they must agree almost everywhere
        flips = ((a > 0) != (b > 0)).float().mean().item()
        assert flips < 1e-4, f"prediction {i}: {flips:.2%} of mask signs differ"
    assert_close(scores_o, scores_t, rel, "semantic scores")


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    theirs = build_mmseg_head(**TINY)
    perturb(theirs, seed=1)
    ours = dgseg_head(TINY)
    ours.load_state_dict(mmdet_to_dgseg(theirs.state_dict()), strict=True)
    return ours, theirs


def test_tiny_head_matches_mmdet_layer_by_layer(tiny_pair):
    ours, theirs = tiny_pair
    feats = features(TINY, 96, 160, seed=2)  # not square
    compare(run_dgseg(ours, feats, 96, 160), run_mmseg(theirs, feats, 96, 160), rel=1e-5)


def test_tiny_head_exercises_masked_attention(tiny_pair):
    """The comparison above only pins the masked-attention rule if the masks block something and some
    query has an empty mask (it then attends everywhere)."""
    from dgseg.models.heads.mask2former import attention_mask

    ours, _ = tiny_pair
    feats = features(TINY, 96, 160, seed=2)
    masks = run_dgseg(ours, feats, 96, 160)[1]
    blocked, emptied = 0.0, 0
    for m in masks[:-1]:
        logits = torch.nn.functional.interpolate(m, (3, 5), mode="bilinear", align_corners=False)
        blocked += attention_mask(m, (3, 5), 1).float().mean().item()
        emptied += int((logits.sigmoid() < 0.5).flatten(2).all(-1).sum())
    assert blocked > 0.05 and emptied > 0


def test_rein_linked_queries_match_mmdet(tiny_pair):
    """Rein-link (`ReinMask2FormerHead(replace_query_feat=True)`): the adapter's queries Q [m, C] are the
    positional queries and `querys2feat(Q)` the content queries. mmdet's `Mask2FormerHead.forward` takes
    its positional and content queries from `query_embed.weight` and `query_feat.weight`, the same for
    every image, so writing Q and querys2feat(Q) there makes mmdet's own forward compute the linked head."""
    _, theirs = tiny_pair
    ours = dgseg_head(TINY, query_link=True)
    state = mmdet_to_dgseg(theirs.state_dict())
    del state["query_embed.weight"], state["query_feat.weight"]
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert missing == ["querys2feat.weight", "querys2feat.bias"] and unexpected == []
    perturb(ours.querys2feat, seed=3, scale=0.1)
    queries = torch.randn(TINY["num_queries"], TINY["feat_channels"], generator=torch.Generator().manual_seed(4))
    linked = build_mmseg_head(**TINY)
    linked.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        linked.query_embed.weight.copy_(queries)
        linked.query_feat.weight.copy_(ours.querys2feat(queries))
    feats = features(TINY, 64, 96, seed=5)
    compare(run_dgseg(ours, feats, 64, 96, queries), run_mmseg(linked, feats, 64, 96), rel=1e-5)


def test_recipe_head_matches_mmdet():
    """The Rein recipe's head (1024-channel features, 256 wide, 6 encoder and 9 decoder layers, 8 heads,
    100 queries, 19 classes). The feature maps are those of a 128 x 192 image, not a 512 crop: mmcv's
    pure-PyTorch deformable attention makes the 512 case take a minute on 2 CPU cores, and nothing in
    the head depends on the map size beyond what the non-square tiny case covers."""
    torch.manual_seed(0)
    theirs = build_mmseg_head(**RECIPE)
    perturb(theirs, seed=6, scale=0.02)
    ours = dgseg_head(RECIPE)
    ours.load_state_dict(mmdet_to_dgseg(theirs.state_dict()), strict=True)
    feats = [f[:1] for f in features(RECIPE, 128, 192, seed=7)]
    compare(run_dgseg(ours, feats, 128, 192), run_mmseg(theirs, feats, 128, 192), rel=1e-5)
