"""Activation memory: what is recomputed instead of kept gives the same losses and gradients, keeps less,
and mixed precision is only used where the device computes it natively."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny import tiny_config

import dgseg
from dgseg import machine
from dgseg.engine import precision
from dgseg.models.heads.ms_deform_attn import _recomputed_attention, multi_scale_deformable_attention


class SavedBytes:
    """Bytes autograd keeps for the backward pass (each storage counted once)."""

    def __init__(self):
        self.total, self._seen = 0, set()

    def pack(self, t):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in self._seen:
            self._seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def deform_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 8), (3, 4), (2, 2)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(2, s, 4, 8, generator=g, requires_grad=True)
    loc = torch.rand(2, 30, 4, 3, 4, 2, generator=g, requires_grad=True)
    weights = torch.rand(2, 30, 4, 3, 4, generator=g).softmax(-1).requires_grad_()
    return value, shapes, loc, weights


def test_recomputed_deformable_sampling_gives_the_same_output_and_gradients_and_keeps_less():
    results = []
    for fn in (multi_scale_deformable_attention, _recomputed_attention):
        value, shapes, loc, weights = deform_inputs()
        saved = SavedBytes()
        with saved.hooks():
            out = fn(value, shapes, loc, weights)
        out.square().sum().backward()
        results.append((out.detach(), value.grad, loc.grad, weights.grad, saved.total))
    direct, recomputed = results
    for a, b in zip(direct[:4], recomputed[:4], strict=True):
        torch.testing.assert_close(a, b)
    assert recomputed[4] < direct[4] / 2  # inputs only, not the D x Q x L x P samples


def test_deformable_sampling_without_grad_is_not_checkpointed():
    value, shapes, loc, weights = deform_inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            _recomputed_attention(value, shapes, loc, weights), multi_scale_deformable_attention(value, shapes, loc, weights)
        )


def loss_grads_and_saved(checkpointing: bool):
    torch.manual_seed(0)
    model = dgseg.build_model(tiny_config(model__head__enc_layers=2))
    model.set_grad_checkpointing(checkpointing)
    model.train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 19, (2, 32, 32))
    saved = SavedBytes()
    torch.manual_seed(1)  # the point sampling of the loss
    with saved.hooks():
        losses = model.loss(x, y)
    total = sum(losses.values())
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(total.detach()), grads, saved.total


def test_grad_checkpointing_gives_the_same_loss_and_gradients_with_less_saved():
    loss, grads, saved = loss_grads_and_saved(False)
    loss_ckpt, grads_ckpt, saved_ckpt = loss_grads_and_saved(True)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert saved_ckpt < 0.8 * saved


def test_grad_checkpointing_reaches_the_backbone_and_the_pixel_decoder():
    model = dgseg.build_model(tiny_config())
    model.set_grad_checkpointing(True)
    assert model.backbone.vit.grad_checkpointing
    encoder = model.head.pixel_decoder.encoder
    assert encoder.grad_checkpointing
    assert not any(layer.self_attn.recompute_samples for layer in encoder.layers)  # recomputed once, not twice
    model.set_grad_checkpointing(False)
    assert not encoder.grad_checkpointing
    assert all(layer.self_attn.recompute_samples for layer in encoder.layers)


def test_bf16_on_a_cpu_without_native_bf16_runs_in_float32_and_says_so(monkeypatch):
    monkeypatch.setattr(precision, "_SAID", set())  # a fresh process
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert precision.resolve_amp("bf16", torch.device("cpu")) == "none"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_amp("bf16", torch.device("cpu")) == "bf16"


def test_the_bf16_fallback_is_said_once_per_process_not_again_by_each_evaluation(monkeypatch):
    monkeypatch.setattr(precision, "_SAID", set())  # a fresh process
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")  # Python's own filter: once per warning location
        precision.resolve_amp("bf16", torch.device("cpu"))  # training's setup
        with warnings.catch_warnings():  # what a subprocess call or an import on the way may do: it clears
            warnings.simplefilter("ignore")  # Python's once-per-location memory
        precision.resolve_amp("bf16", torch.device("cpu"), training=False)  # the evaluation after it
        precision.resolve_amp("bf16", torch.device("cpu"), training=False)  # and the next one
    assert [str(w.message)[:31] for w in said] == ["train.amp=bf16: this CPU has no"]


def test_bf16_on_a_gpu_before_ampere_runs_in_float32_and_says_so(monkeypatch):
    supported = {"native": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                        including_emulation or supported["native"])  # a T4 / V100 emulates bf16
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(precision, "_SAID", set())  # a fresh process
    with pytest.warns(UserWarning, match="Tesla T4 has no native bf16.*train.amp=fp16"):
        assert precision.resolve_amp("bf16", torch.device("cuda", 0)) == "none"
    supported["native"] = True  # Ampere and newer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_amp("bf16", torch.device("cuda", 0)) == "bf16"


@pytest.mark.parametrize(("avx512_bf16", "amx", "native"), [(False, False, False), (True, False, True),
                                                         (False, True, True)])
def test_on_x86_only_avx512_bf16_or_amx_count_as_native_bf16_whatever_onednn_says(monkeypatch, avx512_bf16,
                                                                                  amx, native):
    # oneDNN says bf16 is "supported" on every AVX-512 CPU, where it is emulated (3x slower than float32 on a
    # Xeon without AVX512-BF16): the CPU's own flags decide on x86
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    machine.cpu_has_fast_bf16.cache_clear()
    try:
        assert machine.cpu_has_fast_bf16() is native
    finally:
        machine.cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize("flags", ["fpu avx2 avx512f avx512bw avx512_vnni", "fpu avx512f avx512_bf16"])
def test_on_x86_without_torchs_probes_the_cpuinfo_flags_decide(monkeypatch, flags):
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(machine, "cpuinfo_field", lambda name: flags if name == "flags" else "")
    machine.cpu_has_fast_bf16.cache_clear()
    try:
        assert machine.cpu_has_fast_bf16() is ("avx512_bf16" in flags)
    finally:
        machine.cpu_has_fast_bf16.cache_clear()


def test_off_x86_onednns_check_decides(monkeypatch):
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    for answer in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda a=answer: a, raising=False)
        machine.cpu_has_fast_bf16.cache_clear()
        try:
            assert machine.cpu_has_fast_bf16() is answer
        finally:
            machine.cpu_has_fast_bf16.cache_clear()


def test_fp16_needs_cuda_for_training_and_falls_back_to_float32_for_evaluation():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision.resolve_amp("fp16", torch.device("cpu"))
    assert precision.resolve_amp("fp16", torch.device("cpu"), training=False) == "none"
    with pytest.raises(ValueError, match="expected one of none, bf16, fp16"):
        precision.resolve_amp("fp8", torch.device("cpu"))


def test_the_machine_line_names_an_x86_cpus_family_and_model(monkeypatch):
    # a virtual machine may show only "AMD EPYC": family and model tell a Zen 4 from a Zen 5, whose bf16 differs
    info = {"model name": "AMD EPYC", "cpu family": "26", "model": "2", "flags": "avx512_bf16"}
    monkeypatch.setattr(machine, "cpuinfo_field", lambda name: info.get(name, ""))
    monkeypatch.setattr(machine, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(machine, "_is_x86", lambda: True)
    assert machine.machine_line().startswith("AMD EPYC (family 26 model 2, AVX-512 BF16), ")
    monkeypatch.setattr(machine, "cpu_has_fast_bf16", lambda: False)
    assert machine.machine_line().startswith("AMD EPYC (family 26 model 2, no native bf16), ")
    monkeypatch.setattr(machine, "_is_x86", lambda: False)  # Arm's /proc/cpuinfo has no x86 family
    assert machine.machine_line().startswith("AMD EPYC (no native bf16), ")
    info.pop("cpu family")
    monkeypatch.setattr(machine, "_is_x86", lambda: True)
    assert machine.machine_line().startswith("AMD EPYC (no native bf16), ")


def test_threads_follow_the_cores_this_process_may_use_not_the_machines(monkeypatch):
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 64)
    assert machine.usable_cores() == 4  # taskset, Slurm, a container's cpuset
    assert "64 cores (4 usable)" in machine.machine_line()
    monkeypatch.delattr(machine.os, "sched_getaffinity")  # macOS has no affinity mask
    assert machine.usable_cores() == 64


def test_peak_memory_reads_ru_maxrss_in_the_platforms_unit(monkeypatch):
    import resource
    import sys

    monkeypatch.setattr(resource, "getrusage", lambda who: type("R", (), {"ru_maxrss": 2 * 2**20})())
    monkeypatch.setattr(sys, "platform", "linux")
    assert machine.peak_rss_mb() == 2048  # KiB on Linux
    monkeypatch.setattr(sys, "platform", "darwin")
    assert machine.peak_rss_mb() == 2  # bytes on macOS


def test_without_a_resource_module_peak_memory_is_unknown_and_the_demo_table_says_so(monkeypatch):
    import sys

    from dgseg.demo import demo_config, report_markdown

    monkeypatch.setitem(sys.modules, "resource", None)  # Windows: `import resource` raises ImportError
    assert machine.peak_rss_mb() is None
    cfg = demo_config("rein", True, [])
    scores = {"synthetic-game": {"mIoU": 50.0}, "synthetic-night": {"mIoU": 25.0}}
    results = {"rein": {"eval": scores, "trainable": 10, "train_time_s": 60.0, "peak_memory_mb": None},
               "frozen": {"eval": scores, "trainable": 5, "train_time_s": 60.0, "peak_memory_mb": 2048.0}}
    rows = [line for line in report_markdown(results, cfg, "settings", 60.0).splitlines() if line.startswith("| ")]
    assert rows[1].endswith("| 1.0 min | - |") and rows[2].endswith("| 1.0 min | 2.00 GB |")


def test_the_memory_benchmark_refuses_cpu_measurement_without_a_resource_module(monkeypatch):
    import sys

    from benchmarks import measure

    monkeypatch.setitem(sys.modules, "resource", None)
    with pytest.raises(RuntimeError, match="resource module"):
        measure._peak_rss_bytes()
