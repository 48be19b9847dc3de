"""A user's own 5-class dataset end to end: train, eval and predict through the CLI, names and colours kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny import tiny_dict

from dgseg.cli import main as cli

NAMES = ["background", "crack", "rust", "paint", "bolt"]
PALETTE = [[10, 20, 30], [200, 40, 40], [40, 200, 40], [40, 40, 200], [250, 250, 0]]
RAW = [10, 20, 30, 40, 50]  # raw label values of the 5 classes; 0 = unlabelled


def make_dataset(root, split: str, n: int) -> None:
    """Images 48 x 64 with a stripe per class (class k in raw value RAW[k]), unlabelled corners."""
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    rng = np.random.default_rng(len(split))
    for i in range(n):
        label = np.repeat(np.repeat(np.array(RAW, np.uint8), 13)[:64][None], 48, axis=0)
        label[:4, :4] = 0
        image = (np.array(PALETTE, np.uint8)[np.searchsorted(RAW, label.clip(10))] * 0.5
                 + rng.integers(0, 100, (48, 64, 3))).astype(np.uint8)
        Image.fromarray(image).save(root / split / "images" / f"img_{i}.jpg")
        Image.fromarray(label).save(root / split / "labels" / f"img_{i}.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Trained through ``dgseg train`` from a config + classes file; the classes file removed afterwards."""
    tmp = tmp_path_factory.mktemp("mine")
    make_dataset(tmp / "data", "train", 4)
    make_dataset(tmp / "data", "val", 2)
    classes = tmp / "my_classes.yaml"
    classes.write_text(yaml.safe_dump({"names": NAMES, "palette": PALETTE}))
    label_map = dict(zip(RAW, range(5)))
    data = tiny_dict(train__max_iters=2, train__checkpoint_interval=2)
    data["model"].pop("num_classes", None)
    data["data"].update(classes=str(classes), source=None,
                        train=[{"name": "folder", "root": str(tmp / "data"), "split": "train", "label_map": label_map}],
                        val=[{"name": "folder", "root": str(tmp / "data"), "split": "val", "label_map": label_map}])
    config = tmp / "mine.yaml"
    config.write_text(yaml.safe_dump(data))
    assert cli(["train", str(config), "--out", str(tmp / "run"), "--no-progress"]) == 0
    classes.unlink()  # the checkpoint records the class set: nothing below needs the file
    return tmp


def test_train_records_the_class_set_in_the_checkpoint(run):
    from dgseg.engine.checkpoint import latest_checkpoint, load_checkpoint

    _, meta = load_checkpoint(latest_checkpoint(run / "run"))
    assert meta["classes"] == {"names": NAMES, "palette": PALETTE}
    assert meta["num_classes"] == 5 and meta["config"]["data"]["classes"]["names"] == NAMES


def test_eval_on_the_checkpoint_writes_tables_and_json_with_the_names(run, capsys):
    assert cli(["eval", "--checkpoint", str(run / "run"), "--out", str(run / "ev"), "--no-progress"]) == 0
    ev = json.loads((run / "ev" / "eval.json").read_text())
    assert ev["classes"] == NAMES and len(ev["domains"]["folder"]["IoU"]) == 5
    md = (run / "ev" / "eval.md").read_text()
    per_class = md.split("## Per class IoU")[1]
    assert [line.split("|")[1].strip() for line in per_class.strip().splitlines()[2:7]] == NAMES


def test_predict_colours_with_the_given_palette(run):
    assert cli(["predict", "--checkpoint", str(run / "run"), str(run / "data" / "val" / "images"),
                "--out", str(run / "pred"), "--no-progress"]) == 0
    pred = np.asarray(Image.open(run / "pred" / "img_0_labelTrainIds.png"))
    color = np.asarray(Image.open(run / "pred" / "img_0_color.png").convert("RGB"))
    assert pred.max() < 5
    assert np.array_equal(color, np.array(PALETTE, np.uint8)[pred])


def test_eval_on_a_dataset_of_another_class_count_is_an_error_naming_both(run, capsys):
    other = '[{name: synthetic-night, split: val, length: 1, size: [48, 64]}]'
    assert cli(["eval", "--checkpoint", str(run / "run"), "--set", f"data.val={other}", "--out", str(run / "other"),
                "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'cityscapes' (19 classes" in err and "(5 classes: background, crack, rust, paint, bolt)" in err


def test_onnx_export_carries_names_and_palette(run):
    pytest.importorskip("onnx")
    from dgseg.engine.classes_meta import onnx_class_metadata
    from dgseg.engine.inference import export_onnx, load_model

    model, cfg = load_model(run / "run")
    path = export_onnx(model, cfg, run / "m.onnx", (32, 32))
    assert onnx_class_metadata(path) == {"classes": NAMES, "palette": PALETTE, "ignore_index": 255}


def test_data_check_prints_the_histogram_with_the_names(run, tmp_path, capsys):
    classes = tmp_path / "c.yaml"
    classes.write_text(yaml.safe_dump({"names": NAMES}))
    code = cli(["data", "check", "folder", str(run / "data"), "--split", "val", "--classes", str(classes),
                "--label-map", "{10: 0, 20: 1, 30: 2, 40: 3, 50: 4}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "  0 background      19.90%  1,216" in out and "  4 bolt            18.85%  1,152" in out
    assert "255 ignore           0.52% of all pixels  32" in out


def test_a_config_that_renames_the_classes_of_a_checkpoint_is_warned_about(run):
    from dgseg.engine.inference import load_model

    with pytest.warns(UserWarning, match=r"trained with the classes \['background', 'crack'.*config names them \['a'"):
        _, cfg = load_model(run / "run", overrides=["data.classes={names: [a, b, c, d, e]}"])
    assert cfg.model.num_classes == 5
