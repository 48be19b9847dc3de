"""The oracle environment itself: the pinned OpenMMLab versions, and the `mmcv._ext` stand-in (mmcv-lite
has no compiled ops; `mmcv_shim` makes `mmcv.ops` importable with stubs that raise if called)."""

from __future__ import annotations

import mmcv_shim

mmcv_shim.require_oracle()

import pytest  # noqa: E402
import torch  # noqa: E402


def test_pinned_versions():
    import mmcv
    import mmdet
    import mmengine
    import mmseg

    found = {"mmengine": mmengine.__version__, "mmcv": mmcv.__version__, "mmdet": mmdet.__version__,
             "mmseg": mmseg.__version__}
    assert found == mmcv_shim.ORACLE_VERSIONS


def test_ext_functions_are_stubs_that_raise():
    from mmcv.ops import multi_scale_deform_attn

    stub = multi_scale_deform_attn.ext_module.ms_deform_attn_forward
    before = len(mmcv_shim.STUB_CALLS)
    with pytest.raises(RuntimeError, match="mmcv._ext.ms_deform_attn_forward was called"):
        stub()
    assert mmcv_shim.STUB_CALLS[before:] == ["ms_deform_attn_forward"]
    del mmcv_shim.STUB_CALLS[before:]  # this call was the test's own


def test_mmcv_deformable_attention_runs_without_ext_on_cpu():
    """mmcv's `MultiScaleDeformableAttention` takes its pure-PyTorch path on CPU, forward and backward,
    and no stub is reached (conftest checks the same after the last oracle test)."""
    from mmcv.ops import MultiScaleDeformableAttention

    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=2, num_levels=2, num_points=2, batch_first=True)
    shapes = torch.tensor([[4, 6], [2, 3]])
    value = torch.randn(1, 30, 32, requires_grad=True)
    ref = torch.rand(1, 30, 2, 2)
    out = attn(value, value=value, reference_points=ref, spatial_shapes=shapes,
               level_start_index=torch.tensor([0, 24]))
    out.sum().backward()
    assert out.shape == (1, 30, 32) and value.grad is not None
    assert mmcv_shim.STUB_CALLS == []
