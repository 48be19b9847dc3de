import json

import numpy as np
import pytest
import torch
from PIL import Image

from dgseg.viz import colorize, overlay, plot_curves, report_figure, save_png

PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
LABEL = np.array([[0, 1], [2, 255]])


def test_colorize_maps_classes_to_palette_and_ignore_to_black():
    rgb = colorize(LABEL, PALETTE)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [128, 64, 128]
    assert rgb[1, 0].tolist() == [70, 70, 70]
    assert rgb[1, 1].tolist() == [0, 0, 0]
    assert np.array_equal(colorize(torch.from_numpy(LABEL), PALETTE), rgb)


def test_colorize_refuses_values_without_a_colour():
    with pytest.raises(ValueError, match="label value 3"):
        colorize(np.array([[3]]), PALETTE)
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        colorize(np.zeros((1, 2, 2), np.int64), PALETTE)


def test_overlay_blends_labelled_pixels_and_keeps_ignored_ones():
    image = np.full((2, 2, 3), 200, np.uint8)
    out = overlay(image, LABEL, PALETTE, alpha=0.5)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [164, 132, 164]
    assert out[1, 1].tolist() == [200, 200, 200]
    chw = torch.from_numpy(image).permute(2, 0, 1)
    assert np.array_equal(overlay(chw, LABEL, PALETTE), out)
    assert np.array_equal(overlay(image, LABEL, PALETTE, alpha=0.0), image)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((3, 3, 3), np.uint8), LABEL, PALETTE)


def test_save_png_round_trips_labels_and_rgb(tmp_path):
    path = save_png(tmp_path / "sub" / "label.png", LABEL)
    assert np.array_equal(np.asarray(Image.open(path)), LABEL)
    rgb = colorize(LABEL, PALETTE)
    assert np.array_equal(np.asarray(Image.open(save_png(tmp_path / "rgb.png", rgb))), rgb)
    with pytest.raises(ValueError, match="0..255"):
        save_png(tmp_path / "bad.png", np.array([[300]]))


def test_report_figure_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        {
            "domain": d,
            "image": rng.integers(0, 256, (16, 24, 3), dtype=np.uint8),
            "label": rng.integers(0, 3, (16, 24)),
            "pred": torch.randint(0, 3, (16, 24)),
        }
        for d in ("cityscapes", "bdd100k")
    ]
    rows[1]["label"] = None  # an unlabelled image is allowed
    bars = {"rein": {"cityscapes": 60.0, "bdd100k": 55.0}, "frozen": {"cityscapes": 50.0}}
    path = report_figure(rows, bars, tmp_path / "report.png", palette=PALETTE, class_names=["a", "b", "c"])
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300


def test_plot_curves_reads_the_jsonl_log(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"iter": i, "loss": 2.0 / i, "lr": 1e-4 * (1 - i / 100)} for i in range(10, 100, 10)]
    lines += [
        {"iter": 50, "eval": {"cityscapes": {"mIoU": 40.0}}},
        {"iter": 90, "eval": {"cityscapes": 45.0}},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"iter": 10')  # last line cut short
    path = plot_curves(log, tmp_path / "curves.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
