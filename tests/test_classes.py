"""The class set of an experiment: presets, classes files, label maps, subsets (units; see test_classes_e2e)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_config, tiny_dict

import dgseg
from dgseg.cli import main
from dgseg.config import ConfigError, config_from_dict
from dgseg.data import DataError, build_dataset
from dgseg.data.classes import (
    PALETTE_SPACING,
    ClassSetError,
    default_palette,
    folder_id_map,
    load_class_set,
    subset_indices,
    subset_miou,
)
from dgseg.data.labels import CLASSES, PALETTE
from dgseg.metrics import SegMetric, format_table

SYNTHIA16 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
             "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle"]
SYNTHIA13 = ["road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky", "person",
             "rider", "car", "bus", "motorcycle", "bicycle"]


def write(path, text: str):
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ presets


def test_presets_are_the_cityscapes_classes_and_the_synthia_subsets():
    assert list(load_class_set("cityscapes").names) == list(CLASSES)
    assert list(load_class_set("synthia16").names) == SYNTHIA16
    assert list(load_class_set("synthia13").names) == SYNTHIA13
    s16 = load_class_set("synthia16")
    assert np.array_equal(s16.palette, PALETTE[[CLASSES.index(n) for n in SYNTHIA16]])


def test_default_palette_is_distinct_and_never_black():
    for k in (1, 5, 19, 150, 255):
        pal = default_palette(k)
        assert pal.shape == (k, 3) and pal.dtype == np.uint8
        assert len({tuple(c) for c in pal.tolist()}) == k
        assert (0, 0, 0) not in {tuple(c) for c in pal.tolist()}
    assert not np.array_equal(default_palette(19), PALETTE)


def test_default_palette_keeps_its_colours_apart_for_every_class_count_and_extends_smaller_ones():
    """At 150 classes the colour sequence came back near its own colours ([128, 92, 51] and [128, 91, 51])."""
    big = default_palette(255).astype(float)
    for k in (19, 100, 150, 255):
        pal = big[:k]
        gaps = np.sqrt(((pal[:, None] - pal[None]) ** 2).sum(-1)) + np.eye(k) * 1e9
        assert gaps.min() >= PALETTE_SPACING == 18.0, k
        assert np.array_equal(default_palette(k), big[:k].astype(np.uint8)), k  # one sequence: K colours, its first
    assert default_palette(3).tolist() == [[242, 36, 36], [27, 71, 178], [82, 128, 19]]  # the colours as before


# ------------------------------------------------------------------------------------- classes files


def test_classes_file_with_palette_and_without(tmp_path):
    cs = load_class_set(str(write(tmp_path / "c.yaml", "names: [bg, cat]\npalette: [[1, 2, 3], [4, 5, 6]]\n")))
    assert cs.names == ("bg", "cat") and cs.palette.tolist() == [[1, 2, 3], [4, 5, 6]]
    cs = load_class_set(str(write(tmp_path / "d.yaml", "names: [a, b, c]\n")))
    assert cs.palette.tolist() == default_palette(3).tolist()


@pytest.mark.parametrize("text, expected", [
    ("palette: [[1, 2, 3]]\n", "no 'names'"),
    ("names: []\n", "'names' must be a non-empty list"),
    ("names: [a, a]\n", "duplicate class names ['a']"),
    ("names: [a, b]\npalette: [[1, 2, 3]]\n", "'palette' has 1 entries but there are 2 names"),
    ("names: [a]\npalette: [[1, 2, 300]]\n", "palette[0] is [1, 2, 300]"),
    ("names: [a]\ncolors: []\n", "unknown keys ['colors']"),
    ("- a\n- b\n", "expected a mapping with 'names'"),
])
def test_a_bad_classes_file_is_an_error_naming_the_file(tmp_path, text, expected):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ClassSetError) as e:
        load_class_set(str(path))
    assert expected in str(e.value) and str(path) in str(e.value)


def test_more_than_255_classes_is_an_error(tmp_path):
    path = write(tmp_path / "many.yaml", "names: [" + ", ".join(f"c{i}" for i in range(256)) + "]\n")
    with pytest.raises(ClassSetError, match="256 classes; at most 255"):
        load_class_set(str(path))


def test_a_missing_classes_file_names_the_presets(tmp_path, capsys):
    with pytest.raises(ClassSetError, match="'nope.yaml' is neither a preset .cityscapes, synthia16, synthia13."):
        load_class_set("nope.yaml")
    assert main(["data", "check", "synthetic-game", "--classes", "nope.yaml"]) == 2  # a usage error, not the data's
    err = capsys.readouterr().err  # the option, not a config key
    assert err.startswith("dgseg data check: error: --classes: 'nope.yaml' is neither a preset"), err


# -------------------------------------------------------------------------------------------- config


def test_num_classes_comes_from_the_class_list_and_a_file_is_recorded_inline(tmp_path):
    path = write(tmp_path / "c.yaml", "names: [a, b, c, d, e]\n")
    cfg = tiny_config(data__classes=str(path))
    assert cfg.model.num_classes == 5
    assert cfg.data.classes == {"names": ["a", "b", "c", "d", "e"], "palette": default_palette(5).tolist()}
    head = dgseg.build_model(cfg).head
    assert head.cls_embed.out_features == 6  # 5 classes + "no object"
    assert head.criterion.class_weights == [1.0] * 5 + [0.1]
    assert tiny_config().model.num_classes == 19 and tiny_config().data.classes == "cityscapes"


def test_num_classes_mismatch_is_an_error_naming_both(tmp_path):
    path = write(tmp_path / "c.yaml", "names: [a, b, c, d, e]\n")
    with pytest.raises(ConfigError) as e:
        tiny_config(data__classes=str(path), model__num_classes=4)
    assert "model.num_classes is 4" in str(e.value) and "(5 classes: a, b, c, d, e) has 5" in str(e.value)


def test_label_map_to_an_out_of_range_index_is_an_error_naming_the_key(tmp_path):
    path = write(tmp_path / "c.yaml", "names: [a, b, c, d, e]\n")
    train = [{"name": "folder", "root": str(tmp_path), "label_map": {10: 0, 60: 5}}]
    with pytest.raises(ConfigError) as e:
        tiny_config(data__classes=str(path), data__train=train)
    assert "data.train[0].label_map" in str(e.value) and "maps 60 -> 5, outside the class indices 0..4" in str(e.value)


def test_label_map_on_a_builtin_dataset_and_with_reduce_zero_label_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.train\[0\]: label_map and reduce_zero_label apply to 'folder'"):
        tiny_config(data__train=[{"name": "gtav", "root": str(tmp_path), "reduce_zero_label": True}])
    spec = {"name": "folder", "root": str(tmp_path), "label_map": {1: 0}, "reduce_zero_label": True}
    with pytest.raises(ConfigError, match="label_map and reduce_zero_label both given"):
        tiny_config(data__train=[spec])


def test_a_subset_the_classes_lack_is_an_error(tmp_path):
    path = write(tmp_path / "c.yaml", "names: [road, sky]\n")
    with pytest.raises(ConfigError, match=r"eval.miou_subsets\[0\]: subset synthia13 needs classes \['sidewalk'"):
        tiny_config(data__classes=str(path), eval__miou_subsets=["synthia13"])
    with pytest.raises(ConfigError, match=r"eval.miou_subsets\[1\]: 'synthia7' is neither a preset"):
        tiny_config(eval__miou_subsets=["synthia13", "synthia7"])  # named as the key it was given in


def test_text_guidance_takes_any_class_set(tmp_path):
    # the prompts are the names of data.classes (tests/test_vltseg.py builds and trains such a model)
    path = write(tmp_path / "c.yaml", "names: [a, b]\n")
    cfg = config_from_dict(tiny_dict(data__classes=str(path), model__text={"name": "clip"}))
    assert cfg.model.num_classes == 2


# ---------------------------------------------------------------------------------------- label maps


def test_label_map_maps_listed_values_and_ignores_the_rest():
    m = folder_id_map(5, {10: 0, 20: 1, 50: 4, 0: 255, 1000: 2})
    raw = np.array([[10, 20, 50, 0], [30, 7, 255, 1000]], dtype=np.uint16)
    label, unknown = m.map_checked(raw)
    assert label.tolist() == [[0, 1, 4, 255], [255, 255, 255, 2]] and unknown == []


def test_reduce_zero_label_shifts_by_one_and_reports_values_beyond_the_classes():
    m = folder_id_map(150, reduce_zero_label=True)
    raw = np.array([[0, 1, 150, 255, 151]], dtype=np.uint8)
    label, unknown = m.map_checked(raw)
    assert label.tolist() == [[255, 0, 149, 255, 255]] and unknown == [151]


def test_plain_folder_labels_are_class_indices_and_other_values_are_unknown():
    label, unknown = folder_id_map(5).map_checked(np.array([[0, 4, 5, 255]], dtype=np.uint8))
    assert label.tolist() == [[0, 4, 255, 255]] and unknown == [5]


def folder(root, values: np.ndarray, n: int = 2) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*values.shape, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(values).save(root / "labels" / f"{i}.png")


def test_folder_label_values_beyond_the_class_count_are_an_error_naming_file_values_and_count(tmp_path):
    folder(tmp_path, np.array([[0, 1], [254, 7]], dtype=np.uint8), n=1)
    with pytest.raises(DataError, match=r"0\.png: label values \[7, 254\] are not defined by folder .*"
                                        r"\(5 classes: indices 0\.\.4, 255 ignore\).*data\.unknown_labels=ignore"):
        build_dataset("folder", tmp_path, num_classes=5)[0]
    ds = build_dataset("folder", tmp_path, num_classes=5, unknown_labels="ignore")
    assert ds[0]["label"].tolist() == [[0, 1], [255, 255]]
    assert list(ds.ignored_labels) == [str(tmp_path / "labels" / "0.png")]


def test_16_bit_folder_label_values_beyond_the_class_count_are_an_error(tmp_path):
    folder(tmp_path, np.array([[0, 1], [2, 258]], dtype=np.uint16), n=1)
    with pytest.raises(DataError, match=r"0\.png: label values \[258\] are not defined"):
        build_dataset("folder", tmp_path, num_classes=5)[0]


def test_a_150_class_reduce_zero_label_dataset_builds_and_evaluates(tmp_path):
    values = np.arange(1, 151, dtype=np.uint8).reshape(10, 15)
    values[0, 0] = 0
    folder(tmp_path / "ade", values)
    path = write(tmp_path / "ade.yaml", "names: [" + ", ".join(f"c{i}" for i in range(150)) + "]\n")
    spec = {"name": "folder", "root": str(tmp_path / "ade"), "split": "all", "reduce_zero_label": True}
    cfg = tiny_config(data__classes=str(path), data__val=[spec], data__source=None, model__head__name="linear",
                      model__adapter__link=False)
    from dgseg.engine.evaluate import evaluate, write_results

    model = dgseg.build_model(cfg)
    assert model.head.classifier.out_channels == 150
    results = evaluate(model, cfg, progress=False)
    assert len(results["folder"]["IoU"]) == 150
    write_results(results, cfg, tmp_path / "out")
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "| c149 " in md and "| c0 " in md


# ------------------------------------------------------------------------------------ Synthia protocol


def test_synthia_subsets_equal_a_plain_mean_over_the_subset_of_a_known_confusion_matrix():
    rng = np.random.default_rng(3)
    conf = rng.integers(0, 50, (19, 19))
    conf[CLASSES.index("train")] = 0  # a class never seen: IoU NaN, left out of every mean
    conf[:, CLASSES.index("train")] = 0
    m = SegMetric(19)
    m.confusion = torch.from_numpy(conf)
    iou = m.compute()["IoU"]
    tp, gt, pr = np.diag(conf), conf.sum(1), conf.sum(0)
    by_hand = {CLASSES[i]: 100.0 * tp[i] / (gt[i] + pr[i] - tp[i]) for i in range(19) if gt[i] + pr[i] > 0}
    cityscapes = load_class_set("cityscapes")
    for subset, names in (("synthia16", SYNTHIA16), ("synthia13", SYNTHIA13)):
        got = subset_miou(iou, subset_indices(load_class_set(subset), cityscapes, subset))
        assert got == pytest.approx(sum(by_hand[n] for n in names) / len(names), rel=1e-9)
    assert not math.isnan(subset_miou(iou, subset_indices(load_class_set("synthia16"), cityscapes, "s")))


def test_subset_columns_appear_in_the_table_and_are_averaged_over_targets():
    results = {"a": {"mIoU": 50.0, "aAcc": 90.0, "mIoU_synthia16": 40.0},
               "b": {"mIoU": 30.0, "aAcc": 80.0, "mIoU_synthia16": 20.0},
               "c": {"mIoU": 10.0, "aAcc": 70.0, "mIoU_synthia16": 10.0}}
    table = format_table(results, source="a", extra_columns=["mIoU_synthia16"])
    assert table.splitlines()[0].split("|")[4].strip() == "mIoU_synthia16"
    assert table.splitlines()[-1].split("|")[4].strip() == "15.00"


def test_a_synthia16_experiment_reads_cityscapes_labelled_data_by_name():
    cfg = tiny_config(data__classes="synthia16")
    from dgseg.engine.data import build_eval_set

    spec = cfg.data.val[0]
    full = build_eval_set(spec)[0]["label"]
    sub = build_eval_set(spec, cfg=cfg)[0]["label"]
    lut = np.full(256, 255)
    for i, n in enumerate(SYNTHIA16):
        lut[CLASSES.index(n)] = i
    assert torch.equal(sub, torch.from_numpy(lut)[full])
    assert (full == CLASSES.index("terrain")).any()  # the scene has a class the subset leaves out


def test_the_shipped_synthia_config_reports_the_16_and_13_class_subsets():
    from pathlib import Path

    cfg = dgseg.load_config(Path(dgseg.__file__).parent / "configs" / "rein_dinov2_l_synthia.yaml")
    assert [s.name for s in cfg.data.train] == ["synthia"]
    assert cfg.eval.miou_subsets == ["synthia16", "synthia13"] and cfg.model.num_classes == 19
    from dgseg.engine.evaluate import subset_mious

    iou = [float(i) for i in range(19)]
    got = subset_mious(iou, cfg)
    assert got["mIoU_synthia16"] == pytest.approx(np.mean([CLASSES.index(n) for n in SYNTHIA16]))
    assert got["mIoU_synthia13"] == pytest.approx(np.mean([CLASSES.index(n) for n in SYNTHIA13]))


def test_the_readme_example_loads_and_reads_its_toy_data(tmp_path, monkeypatch):
    """The files of README's "Your own dataset and classes", as a user would copy them."""
    import re
    import shutil
    from pathlib import Path

    from dgseg.engine.data import build_train_set

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own dataset and classes")[1].split("### The Synthia protocol")[0]
    (classes, config), toy = re.findall(r"```yaml\n(.*?)```", section, re.S), re.findall(r"```python\n(.*?)```",
                                                                                         section, re.S)[0]
    monkeypatch.chdir(tmp_path)
    shutil.copytree(Path(dgseg.__file__).parent / "configs", tmp_path / "configs")
    (tmp_path / "my_classes.yaml").write_text(classes)
    (tmp_path / "my_experiment.yaml").write_text(config)
    exec(compile(toy, "README toy data", "exec"), {})
    cfg = dgseg.load_config("my_experiment.yaml")
    assert cfg.model.num_classes == 5 and cfg.data.classes["names"] == ["background", "crack", "rust", "paint", "bolt"]
    assert cfg.data.train[0].label_map == {10: 0, 20: 1, 30: 2, 40: 3, 50: 4} == cfg.data.val[0].label_map
    label = build_train_set(cfg)[0]["label"]
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4, 255} and (label < 5).any()


def test_data_check_of_a_cityscapes_dataset_in_a_subset_counts_the_left_out_classes_as_ignore():
    from dgseg.data.check import check_dataset

    full = check_dataset("synthetic-game", None, "val", length=2, size=(48, 64))
    sub = check_dataset("synthetic-game", None, "val", classes="synthia13", length=2, size=(48, 64))
    assert sub.ok and sub.class_names == tuple(SYNTHIA13) and len(sub.class_pixels) == 14
    assert sub.class_pixels[:13].tolist() == [int(full.class_pixels[CLASSES.index(n)]) for n in SYNTHIA13]
    assert sub.class_pixels.sum() == full.class_pixels.sum()


def test_data_check_with_an_unreadable_label_map_is_a_clear_error(tmp_path, capsys):
    from dgseg.cli import main

    assert main(["data", "check", "folder", str(tmp_path), "--label-map", "[10, 20"]) == 2
    assert "--label-map: not valid YAML" in capsys.readouterr().err


def test_synthia_subsets_are_the_usual_train_id_lists():
    """``synthia_set_16`` / ``synthia_set_13`` of the SYNTHIA -> Cityscapes evaluation scripts."""
    cityscapes = load_class_set("cityscapes")
    assert subset_indices(load_class_set("synthia16"), cityscapes, "") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12,
                                                                           13, 15, 17, 18]
    assert subset_indices(load_class_set("synthia13"), cityscapes, "") == [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15,
                                                                           17, 18]


def test_a_config_built_in_code_gets_its_class_count_from_the_classes():
    from dgseg.config import Config
    from dgseg.engine.train import checkpoint_meta

    cfg = Config()
    cfg.data.classes = "synthia13"
    assert cfg.model.num_classes is None
    meta = checkpoint_meta(cfg, 0)
    assert meta["num_classes"] == 13 and meta["classes"]["names"] == SYNTHIA13
