"""Optimizer groups, LAMB, and the poly schedule with warm-up."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_config

import dgseg
from dgseg.config import TrainConfig
from dgseg.engine.optim import build_lamb, build_optimizer, lr_factor, param_groups


def _lamb_reference(w, g, lr, wd, adapt, b1=0.9, b2=0.999, eps=1e-6):
    """One step of LAMB (You et al. 2020, Algorithm 2) from zero moments, written out."""
    m = (1 - b1) * g / (1 - b1)
    v = (1 - b2) * g * g / (1 - b2)
    u = m / (v.sqrt() + eps) + wd * w
    trust = w.norm() / u.norm() if adapt else 1.0
    return w - lr * trust * u


def test_lamb_is_timms_and_a_step_equals_the_reference_formula():
    from timm.optim import Lamb

    w0, g = torch.tensor([3.0, 4.0, -1.0]), torch.tensor([0.5, -1.0, 0.25])
    decay, plain = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    decay.grad, plain.grad = g.clone(), g.clone()
    model = torch.nn.Module()
    model.weight, model.norm = decay, plain  # "norm" -> the no-decay group
    opt = build_optimizer(model, TrainConfig(optimizer="lamb", lr=0.1, weight_decay=0.05))
    assert isinstance(opt, Lamb) and opt.defaults["max_grad_norm"] is None
    opt.step()
    torch.testing.assert_close(decay.detach(), _lamb_reference(w0, g, 0.1, 0.05, adapt=True))
    # no weight decay: no layer adaptation either (the LAMB reference code's exclusion, timm's default)
    torch.testing.assert_close(plain.detach(), _lamb_reference(w0, g, 0.1, 0.0, adapt=False))


def test_adamw_and_lamb_keep_their_reference_betas_and_eps():
    """AdamW as mmengine's OptimWrapper builds torch.optim.AdamW (betas (0.9, 0.999), eps 1e-8; Rein's configs set
    neither); LAMB as timm / NVIDIA FusedLAMB (betas (0.9, 0.999), eps 1e-6)."""
    model = torch.nn.Linear(2, 2)
    adamw = build_optimizer(model, TrainConfig())
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.defaults["betas"], adamw.defaults["eps"]) == ((0.9, 0.999), 1e-8)
    lamb = build_optimizer(model, TrainConfig(optimizer="lamb"))
    assert (lamb.defaults["betas"], lamb.defaults["eps"]) == ((0.9, 0.999), 1e-6)


def test_lamb_weight_decay_enters_the_update_before_the_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    w.grad = torch.zeros(2)
    build_lamb([{"params": [w], "lr": 0.5, "weight_decay": 0.1}], lr=0.5).step()
    # Adam part is 0, update = 0.1 * w, trust = |w| / |update| = 10: w <- w - 0.5 * 10 * 0.1 * w
    torch.testing.assert_close(w.detach(), torch.tensor([0.5, 0.0]))


def test_poly_from_an_iteration_keeps_the_lr_constant_before_it():
    """VLTSeg's re-implementation (``schedule_5k.py``): ``PolyLR(power=0.9, begin=500, end=5000)``; mmengine's
    ``total_iters = end - begin - 1``, so the factor reaches 0 at the last iteration."""
    cfg = TrainConfig(max_iters=5000, poly_begin=500, power=0.9)
    assert lr_factor(0, cfg) == lr_factor(499, cfg) == lr_factor(500, cfg) == 1.0
    assert lr_factor(501, cfg) == pytest.approx((4498 / 4499) ** 0.9)
    assert lr_factor(2750, cfg) == pytest.approx((1 - 2250 / 4499) ** 0.9)
    assert lr_factor(4999, cfg) == 0.0


def test_poly_begin_must_lie_inside_the_run():
    from dgseg.config import ConfigError

    with pytest.raises(ConfigError, match="train.poly_begin"):
        tiny_config(train__max_iters=4, train__poly_begin=4)


def test_a_poly_that_starts_at_the_last_iteration_keeps_the_lr_there_as_mmengine_does():
    """mmengine's PolyLR returns the base lr at its first step; with begin = end - 1 that is the only step
    (a one-iteration smoke run: max_iters 1, poly_begin 0)."""
    from dgseg.config import TrainConfig
    from dgseg.engine.optim import lr_factor

    assert lr_factor(0, TrainConfig(max_iters=1)) == 1.0
    assert [lr_factor(i, TrainConfig(max_iters=10, poly_begin=9)) for i in (0, 8, 9)] == [1.0, 1.0, 1.0]
    assert lr_factor(1, TrainConfig(max_iters=3)) == 0.5 ** 0.9 and lr_factor(2, TrainConfig(max_iters=3)) == 0.0


def test_poly_schedule_with_linear_warmup():
    # mmengine LinearLR / PolyLR in closed form: total_iters = end - begin - 1
    cfg = TrainConfig(max_iters=102, warmup_iters=11, power=0.9, poly_begin=11)
    assert lr_factor(0, cfg) == pytest.approx(1e-6)
    assert lr_factor(5, cfg) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert lr_factor(11, cfg) == 1.0
    assert lr_factor(56, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(101, cfg) == 0.0


def test_no_weight_decay_on_norms_tokens_embeddings_and_the_rein_scale():
    model = dgseg.build_model(tiny_config())
    cfg = TrainConfig(lr=1e-4, weight_decay=0.05)
    groups = param_groups(model, cfg)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for n in ("adapter.tokens_a", "adapter.tokens_b", "adapter.scale", "head.level_embed.weight"):
        assert id(names[n]) in no_decay, n
    assert id(names["adapter.delta_f.weight"]) not in no_decay
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_full_fine_tuning_puts_the_backbone_at_the_lr_multiplier():
    model = dgseg.build_model(tiny_config(model__adapter={"name": "full", "link": False, "lr_mult": 0.1}))
    groups = param_groups(model, TrainConfig(lr=1e-4), backbone_lr_mult=0.1)
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    for n, p in model.named_parameters():
        assert math.isclose(lrs[id(p)], 1e-5 if n.startswith("backbone.") else 1e-4), n


def _logged_lrs(run_dir) -> list[float]:
    import json

    return [r["lr"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "lr" in r]


def test_the_logged_lr_is_train_lr_on_the_schedule_not_a_groups_multiplied_one(tmp_path):
    """Full fine-tuning's first group is the backbone at 0.1 x; the log and the curves show train.lr's schedule."""
    from dgseg.engine.train import train

    cfg = tiny_config(model__adapter={"name": "full", "link": False}, model__head={"name": "linear"},
                      train__max_iters=4, train__log_interval=1)
    train(cfg, tmp_path / "run", progress=False)
    assert _logged_lrs(tmp_path / "run") == pytest.approx([cfg.train.lr * lr_factor(i, cfg.train) for i in range(4)])


@pytest.mark.parametrize("warmup", [0, 2])
def test_the_record_of_iteration_n_holds_the_lr_its_update_used(tmp_path, warmup):
    """Iteration n (1-based) updates with the schedule's lr at step n - 1 (0-based): the log starts at train.lr (at
    1e-6 x train.lr with a warm-up) and ends at 0, the poly schedule's last lr; never one iteration late."""
    from dgseg.engine.train import train

    cfg = tiny_config(train__max_iters=4, train__warmup_iters=warmup, data__val=[],
                      data__source=None)
    train(cfg, tmp_path / "run", progress=False)
    expected = [cfg.train.lr * lr_factor(i, cfg.train) for i in range(4)]
    assert _logged_lrs(tmp_path / "run") == pytest.approx(expected, rel=1e-12, abs=0)
    assert expected[0] == pytest.approx(1e-3 if warmup == 0 else 1e-9) and expected[-1] == 0.0


def test_frozen_backbone_runs_without_autograd():
    model = dgseg.build_model(tiny_config(model__adapter={"name": "frozen", "link": False}))
    model.train()
    feats = model.extract(torch.randn(1, 3, 32, 32))
    assert all(f.grad_fn is None and not f.requires_grad for f in feats)
    rein = dgseg.build_model(tiny_config())
    assert all(f.grad_fn is not None for f in rein.extract(torch.randn(1, 3, 32, 32)))


def test_full_fine_tuning_recipe_decays_what_the_official_config_decays():
    # Rein's configs/dinov2/dinov2_mask2former_512x512_bs1x4.py: custom_keys norm, query_embed, level_embed
    # (decay_mult 0) and norm_decay_mult 0; the backbone's pos_embed / cls_token and the head's query_feat decay
    from pathlib import Path

    recipe = dgseg.load_config(Path(dgseg.__file__).parent / "configs" / "full_dinov2_l_gta.yaml").train
    assert recipe.no_decay_keys == ["norm", "query_embed", "level_embed"]
    model = dgseg.build_model(tiny_config(model__adapter={"name": "full", "link": False, "lr_mult": 0.1}))
    decay = {id(p): g["weight_decay"] for g in param_groups(model, TrainConfig(lr=1e-4, weight_decay=0.05,
                                                                            no_decay_keys=recipe.no_decay_keys))
             for p in g["params"]}
    names = dict(model.named_parameters())
    for n in ("backbone.vit.pos_embed", "backbone.vit.cls_token", "head.query_feat.weight"):
        assert decay[id(names[n])] == 0.05, n
    for n in ("head.query_embed.weight", "head.level_embed.weight"):
        assert decay[id(names[n])] == 0.0, n
    assert all(decay[id(p)] == 0.0 for n, p in names.items() if "norm" in n)
    default = {id(p): g["weight_decay"] for g in param_groups(model, TrainConfig(lr=1e-4, weight_decay=0.05))
               for p in g["params"]}
    assert default[id(names["backbone.vit.pos_embed"])] == 0.0  # dgseg's own list (null) exempts it


def test_gradients_are_clipped_to_a_total_l2_norm_of_train_grad_clip():
    """VLTSeg's schedule_5k.py: optim_wrapper clip_grad=dict(max_norm=0.01) (mmengine: clip_grad_norm_ over all
    trained parameters, L2); the returned norm is the one before clipping."""
    from types import SimpleNamespace

    from dgseg.engine.train import _clip_gradients

    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    run = SimpleNamespace(scaler=torch.amp.GradScaler("cpu", enabled=False), optimizer=None, trainable=params,
                          cfg=tiny_config(train__grad_clip=0.01))
    assert _clip_gradients(run) == pytest.approx(5.0)
    total = torch.cat([p.grad for p in params]).norm()
    assert total.item() == pytest.approx(0.01, rel=1e-4)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.006, 0.0]))


def test_with_no_group_at_train_lr_the_logged_lr_is_train_lr_times_the_applied_factor():
    """Every parameter under a custom key at lr_mult 0.5: the log still shows train.lr's schedule, not 0.5 x."""
    from types import SimpleNamespace

    from dgseg.engine.optim import build_scheduler, lr_reference
    from dgseg.engine.train import _applied_lr

    train_cfg = TrainConfig(lr=1e-3, max_iters=4)
    w = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [w], "lr": 5e-4}], lr=5e-4)
    run = SimpleNamespace(cfg=SimpleNamespace(train=train_cfg), optimizer=optimizer,
                          scheduler=build_scheduler(optimizer, train_cfg), lr_reference=lr_reference(optimizer, 1e-3))
    assert run.lr_reference == (0, 0.5)
    seen = []
    for _ in range(4):
        seen.append(_applied_lr(run))
        optimizer.step()
        run.scheduler.step()
    assert seen == pytest.approx([1e-3 * lr_factor(i, train_cfg) for i in range(4)], rel=1e-12, abs=0)


def test_a_resume_with_another_train_lr_logs_the_checkpoints_rate_it_applies_and_warns(tmp_path):
    """A resume restores the optimizer's rates from the checkpoint: the log shows those (the group is chosen by
    position, not by its value), and a train.lr that differs from the checkpoint's is said, not left unused."""
    from dgseg.engine.train import train

    kw = dict(train__max_iters=4, train__checkpoint_interval=2, data__val=[], data__source=None)
    out = tmp_path / "run"
    train(tiny_config(**kw), out, progress=False)
    for f in (out / "checkpoints").glob("iter_0000004*"):  # as if stopped at its iteration-2 checkpoint
        f.unlink()
    (out / "checkpoints" / "latest").write_text("iter_0000002.safetensors\n")
    cfg = tiny_config(**kw, train__lr=1e-4)  # the frozen backbone's 0.1 x would be a group at 1e-4 were it trained
    with pytest.warns(UserWarning, match=r"trained at initial learning rates \[0\.001.*this config gives \[0\.0001"):
        train(cfg, out, resume=True, progress=False)
    logged = _logged_lrs(out)[-2:]  # iterations 3 and 4, at the checkpoint's 1e-3 on the schedule
    assert logged == pytest.approx([1e-3 * lr_factor(i, cfg.train) for i in (2, 3)], rel=1e-12, abs=0)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step:UserWarning")
def test_an_update_the_fp16_grad_scaler_skipped_is_logged_at_lr_0_as_step_skipped(tmp_path, monkeypatch):
    """fp16: a gradient that overflows makes the grad scaler skip the update (and lower its scale); that iteration
    applied no learning rate, so its record holds lr 0 and step_skipped. Simulated with the scaler's CPU twin: a
    scale that overflows the first gradient, then backs off far enough for the next ones to pass."""
    import json

    from dgseg.engine.train import train

    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda device, enabled=True: real("cpu", init_scale=2.0**127, backoff_factor=2.0**-120))
    cfg = tiny_config(train__max_iters=4, data__val=[], data__source=None)
    train(cfg, tmp_path / "run", progress=False)
    records = [r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "lr" in r]
    assert [r.get("step_skipped", False) for r in records] == [True, False, False, False]
    assert _logged_lrs(tmp_path / "run") == pytest.approx([0.0] + [cfg.train.lr * lr_factor(i, cfg.train)
                                                                   for i in (1, 2, 3)], rel=1e-12, abs=0)
