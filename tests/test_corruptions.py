"""Cityscapes-C corruptions: names, seeding, dgseg's copies against imagecorruptions, mPC / rPC, the CLI."""

from __future__ import annotations

import importlib.util
import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from dgseg.data import corruptions as C

if importlib.util.find_spec("imagecorruptions") is None:
    pytest.skip("the corruptions extra is not installed: pip install 'dgseg[corruptions]'", allow_module_level=True)

IMG = (np.random.RandomState(1).rand(40, 52, 3) * 255).astype(np.uint8)


def test_names_families_and_parsing():
    assert C.parse_corruptions("all") == [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"]
    assert C.parse_corruptions("extra") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert C.parse_corruptions("fog,noise,fog") == ["fog", "gaussian_noise", "shot_noise", "impulse_noise"]
    assert len(C.parse_corruptions("all,extra")) == 19
    with pytest.raises(ValueError, match="unknown corruption 'smoke'"):
        C.parse_corruptions("fog,smoke")
    assert C.parse_severities("5,1,3") == [1, 3, 5]
    for bad in ("0", "6", "", "a"):
        with pytest.raises(ValueError, match="1..5"):
            C.parse_severities(bad)


@pytest.mark.parametrize("name", sorted(C.OWN))
def test_own_copies_equal_the_package_on_the_same_random_numbers(name, monkeypatch):
    """gaussian_blur/glass_blur fail in the package on scikit-image >= 0.19 (multichannel=), fog on NumPy 2
    (np.float_), impulse_noise draws unseeded: patched back (and seeded as dgseg seeds it), the package's
    output must equal dgseg's exactly."""
    import skimage.filters
    import skimage.util

    ic = C._package()

    def gaussian(*args, multichannel=None, **kwargs):
        return skimage.filters.gaussian(*args, **({"channel_axis": -1} if multichannel else {}), **kwargs)

    def random_noise(*args, **kwargs):
        return skimage.util.random_noise(*args, rng=int(np.random.randint(2**31)), **kwargs)

    monkeypatch.setattr(ic, "gaussian", gaussian)
    monkeypatch.setattr(ic, "sk", types.SimpleNamespace(util=types.SimpleNamespace(random_noise=random_noise)))
    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    for severity in range(1, 6):
        np.random.seed(severity)
        theirs = np.uint8(getattr(ic, name)(Image.fromarray(IMG), severity))
        ours = C.corrupt(IMG, name, severity, seed=severity)
        assert np.array_equal(theirs, ours), (name, severity)
        assert not np.array_equal(ours, IMG)


def test_the_other_corruptions_are_the_package_functions_seeded_per_call():
    C._package()  # imports the package (with the pkg_resources stand-in where setuptools lacks it)
    import imagecorruptions

    for name in ("gaussian_noise", "motion_blur", "frost", "spatter"):
        np.random.seed(7)
        expected = imagecorruptions.corrupt(IMG, severity=3, corruption_name=name)
        assert np.array_equal(C.corrupt(IMG, name, 3, seed=7), expected), name
    assert C.implementation("fog") == "dgseg" and C.implementation("snow") == "imagecorruptions"
    assert sorted(C.OWN) == ["fog", "gaussian_blur", "glass_blur", "impulse_noise"]


def test_impulse_noise_flips_the_documented_fraction_of_values():
    big = np.full((200, 200, 3), 128, np.uint8)
    for severity, amount in zip(range(1, 6), (0.03, 0.06, 0.09, 0.17, 0.27)):
        changed = (C.corrupt(big, "impulse_noise", severity, seed=0) != 128).mean()
        assert abs(changed - amount) < 0.01, (severity, changed)


def test_every_corruption_runs_deterministically_and_leaves_the_global_rng_alone():
    img = IMG[:32, :36]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for name in C.FAMILY_OF:
        a = C.corrupt(img, name, 2, seed=C.corruption_seed(0, name, 2, "x.png"))
        b = C.corrupt(img, name, 2, seed=C.corruption_seed(0, name, 2, "x.png"))
        assert a.dtype == np.uint8 and a.shape == img.shape and np.array_equal(a, b), name
    assert np.array_equal(np.random.get_state()[1], before)
    assert C.corruption_seed(0, "fog", 2, "a.png") != C.corruption_seed(0, "fog", 2, "b.png")
    assert C.corruption_seed(0, "fog", 2, "a.png") != C.corruption_seed(1, "fog", 2, "a.png")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 32 pixels"):
        C.corrupt(IMG[:20], "fog", 1, 0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        C.corrupt(IMG.astype(np.float32), "fog", 1, 0)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(IMG, "fog", 6, 0)


def test_missing_package_names_the_extra(monkeypatch):
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "imagecorruptions" else real(n, *a))
    monkeypatch.delitem(sys.modules, "imagecorruptions.corruptions", raising=False)
    with pytest.raises(ImportError, match=r"dgseg\[corruptions\]"):
        C.corruption_function("snow")
    assert C.corruption_function("fog") is C.fog  # dgseg's own copies need no package


def test_mpc_is_the_mean_over_corruptions_and_severities_and_rpc_its_ratio_to_clean():
    from dgseg.engine.robustness import summarize

    s = summarize(50.0, {"gaussian_noise": {"1": 40.0, "2": 20.0}, "fog": {"1": 45.0, "2": 35.0}})
    assert s["mPC"] == 35.0 and s["rPC"] == 70.0
    assert s["per_corruption"] == {"gaussian_noise": 30.0, "fog": 40.0}
    assert s["per_family"] == {"noise": 30.0, "weather": 40.0}


def test_corrupted_set_corrupts_before_the_eval_transform(tmp_path):
    from tiny import tiny_config

    from dgseg.engine.data import build_eval_set
    from dgseg.engine.robustness import CorruptedSet

    spec = tiny_config().data.val[0]
    spec.resize = 0.5
    item = CorruptedSet(spec, "gaussian_noise", 3, seed=4)[1]
    plain = build_eval_set(spec)
    plain.transform = None
    raw = plain[1]
    noisy = C.corrupt(raw["image"].permute(1, 2, 0).numpy(), "gaussian_noise", 3,
                      C.corruption_seed(4, "gaussian_noise", 3, raw["path"]))
    expected, _ = build_eval_set(spec).transform(torch.from_numpy(noisy).permute(2, 0, 1), raw["label"])
    assert item["image"].shape == (3, 24, 32)
    torch.testing.assert_close(item["image"], expected, atol=0, rtol=0)
    assert torch.equal(item["label"], raw["label"])


def test_cli_eval_writes_corruptions_json_md_and_png(tmp_path, capsys):
    from tiny_run import tiny_run

    from dgseg.cli import main

    run = tiny_run(tmp_path / "run")
    assert main(["eval", "--checkpoint", str(run), "--corruptions", "gaussian_noise,fog", "--severities", "1,5",
                 "--no-progress"]) == 0
    found = json.loads((run / "corruptions.json").read_text())
    assert found["corruptions"] == ["gaussian_noise", "fog"] and found["severities"] == [1, 5]
    assert found["implementation"] == {"gaussian_noise": "imagecorruptions", "fog": "dgseg"}
    for r in found["domains"].values():
        values = [v for by_sev in r["mIoU"].values() for v in by_sev.values()]
        assert len(values) == 4 and all(0 <= v <= 100 for v in values)
        assert r["mPC"] == pytest.approx(sum(values) / 4)
        assert r["rPC"] == pytest.approx(100 * r["mPC"] / r["clean"])
    assert set(found["domains"]) == {"synthetic-game", "synthetic-night"}
    record = found["evaluated"]  # which checkpoint and settings, as eval.json's
    assert record["by"] == "dgseg eval" and record["iteration"] == 1 and record["final"] is False
    assert record["file"] == str((run / "checkpoints" / "iter_0000001.safetensors").resolve())
    md = (run / "corruptions.md").read_text()
    assert "| synthetic-night |" in md and "| fog | weather |" in md
    assert "(iter_0000001.safetensors), iteration 1 (not the run's final weights: the run's train.max_iters is 4); " \
        "eval.mode whole" in md
    assert (run / "corruptions.png").stat().st_size > 0
    assert main(["eval", "--checkpoint", str(run), "--corruptions", "smog"]) == 2
    assert "unknown corruption 'smog'" in capsys.readouterr().err
