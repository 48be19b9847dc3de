"""DDP's ``find_unused_parameters`` is decided by a shapes-only forward: exactly the trainable parameters the
forward never reads (engine/unused_parameters.py)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config
from torch import nn

import dgseg
from dgseg.engine.unused_parameters import unreached_parameters

FULL = {"name": "full", "link": False}


def unreached(**overrides) -> list[str] | None:
    cfg = tiny_config(**overrides)
    model = dgseg.build_model(cfg).train()
    model.set_grad_checkpointing(cfg.train.grad_checkpointing)  # as train_setup does
    return unreached_parameters(model, tuple(cfg.data.crop_size))


def test_peft_and_frozen_models_read_every_trainable_parameter():
    assert unreached() == []  # linked Rein + Mask2Former
    for name in ("frozen", "lora", "adaptformer", "vpt"):
        assert unreached(model__adapter={"name": name, "link": False}) == [], name


def test_checkpointed_blocks_and_a_batchnorm_neck_are_checked_too():
    assert unreached(train__grad_checkpointing=True) == []  # the recompute runs on the meta tensors as well
    cfg = tiny_config(model__adapter=FULL, model__neck={"name": "fpn", "norm": "batch"})
    model = dgseg.build_model(cfg).train()
    model.set_grad_checkpointing(True)
    assert unreached_parameters(model, tuple(cfg.data.crop_size)) == ["backbone.vit.norm.weight",
                                                                       "backbone.vit.norm.bias"]


def test_full_fine_tuning_leaves_the_final_norm_and_the_blocks_after_the_last_output_unread():
    assert unreached(model__adapter=FULL) == ["backbone.vit.norm.weight", "backbone.vit.norm.bias"]
    assert unreached(model__adapter=FULL, model__backbone__final_norm=False) == []
    short = unreached(model__adapter=FULL, model__backbone__out_indices=[0, 0, 0, 0])
    assert short and all(n.startswith(("backbone.vit.blocks.1.", "backbone.vit.norm.")) for n in short)
    assert "backbone.vit.blocks.1.attn.qkv.weight" in short


def test_the_check_reads_no_numbers_and_says_none_when_the_forward_needs_them():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            x = x.mean((2, 3))
            return self.a(x) if float(x.sum()) > 0 else self.b(x)  # a number: no meta kernel can give it

    model = DataDependent()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert unreached_parameters(model, (4, 4)) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    frozen = nn.Linear(3, 2).requires_grad_(False)
    assert unreached_parameters(frozen, (4, 4)) == []


def test_ddp_runs_the_check_only_where_a_parameter_can_go_unread(monkeypatch):
    from dgseg.engine import train_setup

    def model(**overrides):
        cfg = tiny_config(**overrides)
        return dgseg.build_model(cfg), cfg

    monkeypatch.setattr(train_setup, "unreached_parameters", lambda *a: pytest.fail("checked without need"))
    for adapter in ("rein", "frozen", "lora"):
        m, cfg = model(model__adapter={"name": adapter, "link": False})
        assert not train_setup.may_leave_unread(m) and train_setup.ddp_find_unused(m, cfg) is False
    full, cfg = model(model__adapter=FULL)
    assert train_setup.may_leave_unread(full)
    short, _ = model(model__backbone__out_indices=[0, 0, 0, 0])  # Rein on block 1 too, features from block 0
    assert train_setup.may_leave_unread(short)
    monkeypatch.setattr(train_setup, "unreached_parameters", lambda *a: ["backbone.vit.norm.weight"])
    assert train_setup.ddp_find_unused(full, cfg) is True
