"""Multi-scale deformable attention: the grid_sample implementation against explicit bilinear sampling."""

import math

import torch

from dgseg.models.heads.ms_deform_attn import MultiScaleDeformableAttention, multi_scale_deformable_attention


def bilinear_reference(value, shapes, locations, weights):
    """Loops: location (x, y) in [0, 1] reads pixel (x * W - 0.5, y * H - 0.5); outside pixels are 0."""
    b, _, m, d = value.shape
    _, q, _, num_levels, p, _ = locations.shape
    out = torch.zeros(b, q, m, d, dtype=torch.float64)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for bi in range(b):
        for qi in range(q):
            for mi in range(m):
                for li, (h, w) in enumerate(shapes):
                    for pi in range(p):
                        x = locations[bi, qi, mi, li, pi, 0].item() * w - 0.5
                        y = locations[bi, qi, mi, li, pi, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(d, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    sample += wy * wx * value[bi, starts[li] + yy * w + xx, mi].double()
                        out[bi, qi, mi] += weights[bi, qi, mi, li, pi].item() * sample
    return out.reshape(b, q, m * d)


def test_grid_sample_attention_matches_explicit_bilinear_sampling_on_non_square_levels():
    torch.manual_seed(0)
    shapes = [(3, 5), (2, 4), (4, 1)]
    b, m, d, q, p = 2, 2, 3, 4, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d)
    locations = torch.rand(b, q, m, len(shapes), p, 2) * 1.2 - 0.1  # some samples fall off the map
    weights = torch.rand(b, q, m, len(shapes), p)

    out = multi_scale_deformable_attention(value, shapes, locations, weights)

    assert out.shape == (b, q, m * d)
    torch.testing.assert_close(
        out.double(), bilinear_reference(value, shapes, locations, weights), atol=1e-5, rtol=1e-5
    )


def test_offsets_are_measured_in_pixels_of_each_level():
    """With offset (+1, 0) every head samples one pixel to the right of the reference point, in each level."""
    attn = MultiScaleDeformableAttention(embed_dims=2, num_heads=1, num_levels=2, num_points=1)
    with torch.no_grad():
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))
        for proj in (attn.value_proj, attn.output_proj):
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
    shapes = [(3, 5), (2, 4)]
    # channel 0 = column index, channel 1 = row index
    value = torch.cat(
        [
            torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")[::-1], -1).reshape(
                -1, 2
            )
            for h, w in shapes
        ]
    ).float()[None]
    ref = (
        torch.tensor([1.5 / 5, 1.5 / 3]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    )  # centre of pixel (1, 1) of level 0

    out = attn(torch.zeros(1, 1, 2), value, None, ref, shapes)

    # level 0 reads column 1 + 1 = 2, row 1; level 1 (4 x 2) reads column 0.7 + 1, row 0.5; averaged
    torch.testing.assert_close(out[0, 0], torch.tensor([(2.0 + 1.7) / 2, (1.0 + 0.5) / 2]))


def test_init_follows_mmcv():
    attn = MultiScaleDeformableAttention(embed_dims=16, num_heads=4, num_levels=3, num_points=2)
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    # head 0 points along +x, head 1 along +y, at distances 1 and 2, the same in every level
    torch.testing.assert_close(bias[0, :, 0], torch.tensor([[1.0, 0.0]] * 3))
    torch.testing.assert_close(bias[1, :, 1], torch.tensor([[0.0, 2.0]] * 3), atol=1e-6, rtol=0)
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.attention_weights.bias.abs().sum() == 0
    assert attn.value_proj.bias.abs().sum() == 0
