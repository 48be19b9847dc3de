"""Label files in two forms, raw IDs and train IDs: SYNTHIA prepared with DAFormer's / VLTSeg's converter
(``GT/LABELS/*_labelTrainIds.png`` beside the 16-bit originals) reads as GTAV and Cityscapes do; a label file
named as another form never asks for an image of that name; a train-ID file under a raw-ID name is said to
look like one, with the name it needs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_datasets import H, W, label, png16_rgb, rgb

from dgseg.data import DataError, build_dataset
from dgseg.data.check import check_dataset
from dgseg.data.labels import CITYSCAPES_ID_TO_TRAIN, SYNTHIA_ID_TO_TRAIN

# DAFormer tools/convert_datasets/synthia.py (VLTSeg's tools/dataset_converters/synthia.py is the same):
# id_to_trainid, from SYNTHIA_RAND_CITYSCAPES' README; every other raw ID -> 255
DAFORMER_SYNTHIA = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13,
                    18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
SYNTHIA_RAW = [3, 4, 2, 6, 1, 8, 10, 0, 11, 15, 22, 13]  # road ... traffic light, lanemarking, parking-slot


def synthia(root: Path, n: int = 2, converted: bool = True) -> Path:
    """SYNTHIA-RAND-CITYSCAPES' files, and with ``converted`` those DAFormer's converter writes beside them."""
    for i in range(n):
        rgb(root / f"RGB/{i:07d}.png", seed=i)
        raw = np.resize(np.roll(SYNTHIA_RAW, i), (H, W)).astype(np.uint16)
        png16_rgb(root / f"GT/LABELS/{i:07d}.png", np.stack([raw, np.full_like(raw, 1000), 0 * raw], -1))
        if converted:
            label(root / f"GT/LABELS/{i:07d}_labelTrainIds.png",
                  [DAFORMER_SYNTHIA.get(int(v), 255) for v in raw.ravel()])
    return root


def test_the_converters_train_ids_are_dgsegs_synthia_table():
    assert SYNTHIA_ID_TO_TRAIN == DAFORMER_SYNTHIA  # so both forms of a SYNTHIA label read the same


def test_synthia_prepared_by_the_common_converter_reads_its_train_id_files_as_the_originals(tmp_path):
    both, original = synthia(tmp_path / "both"), synthia(tmp_path / "original", converted=False)
    ds = build_dataset("synthia", both, "train", on_error="raise")
    assert [Path(s.label).name for s in ds.samples] == ["0000000_labelTrainIds.png", "0000001_labelTrainIds.png"]
    alone = build_dataset("synthia", original, "train")
    assert [Path(s.label).name for s in alone.samples] == ["0000000.png", "0000001.png"]  # still read alone
    for i in range(2):
        np.testing.assert_array_equal(ds[i]["label"].numpy(), alone[i]["label"].numpy())
    report, report_alone = check_dataset("synthia", str(both), patch_size=2), check_dataset("synthia", str(original), patch_size=2)
    assert report.ok and report.listed == report.read == 2, report.format()
    np.testing.assert_array_equal(report.class_pixels, report_alone.class_pixels)


def test_synthias_train_id_file_is_preferred_and_read_as_an_8_bit_label(tmp_path):
    root = synthia(tmp_path, n=1, converted=False)
    label(root / "GT/LABELS/0000000_labelTrainIds.png", [11])  # person: not what the original says
    assert (build_dataset("synthia", root)[0]["label"] == 11).all()
    Image.new("RGB", (W, H), (11, 0, 0)).save(root / "GT/LABELS/0000000_labelTrainIds.png")
    with pytest.raises(DataError, match=r"0000000_labelTrainIds\.png: label image has mode RGB"):
        build_dataset("synthia", root)[0]  # not its first channel, as the 16-bit originals are read


@pytest.mark.parametrize("name, split, image, labels, found, expected", [
    ("gtav", "train", "images/00001.png", ["labels/00001.png", "labels/00001_color.png"], "labels/00001_color.png",
     r"00001_color\.png: label file not read by this dataset: its name ends in _color\.png, not in a label suffix "
     r"this dataset reads \(_labelTrainIds\.png or \.png\); its image .*images/00001\.png pairs with .*labels/00001\.png$"),
    ("gtav", "train", "images/00001.png", ["labels/00001_labelIds.png"], "labels/00001_labelIds.png",
     r"00001_labelIds\.png: label file not read by this dataset: its name ends in _labelIds\.png, .*; the label of "
     r"its image .*images/00001\.png is 00001_labelTrainIds\.png or 00001\.png under .*labels: rename the file to the "
     r"name of the form it holds or move it out of .*labels$"),
    ("bdd100k", "val", "images/10k/val/a-1.jpg", ["labels/sem_seg/masks/val/a-1.png", "labels/sem_seg/masks/val/b-2_labelTrainIds.png"],
     "labels/sem_seg/masks/val/b-2_labelTrainIds.png",
     r"b-2_labelTrainIds\.png: label without an image: expected b-2\.jpg or b-2\.png under .*images/10k/val \(its name "
     r"ends in _labelTrainIds\.png, not in a label suffix this dataset reads \(\.png\)\)$"),
])  # fmt: skip
def test_a_label_named_as_another_label_form_names_the_image_of_its_stem_never_one_with_that_ending(
        tmp_path, name, split, image, labels, found, expected):
    rgb(tmp_path / image)
    for path in labels:
        label(tmp_path / path, [1])
    problems = [p for p in check_dataset(name, str(tmp_path), split, patch_size=2).problems if found in p]
    assert len(problems) == 1 and re.search(expected, problems[0]), problems


def train_ids_of(raw_ids) -> list[int]:
    return [CITYSCAPES_ID_TO_TRAIN.get(v, 255) for v in raw_ids]


STREET = [7, 7, 7, 8, 11, 11, 21, 23, 26, 0]  # Cityscapes label IDs: road, sidewalk, building, ..., unlabeled


@pytest.mark.parametrize("name, image, raw_name, suffix", [
    ("gtav", "images/00001.png", "labels/00001.png", "_labelTrainIds.png"),
    ("synthia", "RGB/0000000.png", "GT/LABELS/0000000.png", "_labelTrainIds.png"),
    ("cityscapes", "leftImg8bit/train/a/a_1_leftImg8bit.png", "gtFine/train/a/a_1_gtFine_labelIds.png",
     "_gtFine_labelTrainIds.png"),
    ("acdc-night", "rgb_anon/night/train/s/s_1_rgb_anon.png", "gt/night/train/s/s_1_gt_labelIds.png",
     "_gt_labelTrainIds.png"),
])  # fmt: skip
def test_a_train_id_file_under_the_raw_id_name_is_said_to_look_like_one_with_the_name_to_give_it(
        tmp_path, name, image, raw_name, suffix):
    stem = Path(raw_name).name.split("_gt")[0].removesuffix(".png")
    train_name = f"{Path(raw_name).parent}/{stem}{suffix}"
    rgb(tmp_path / image)
    label(tmp_path / raw_name, train_ids_of(STREET))  # train IDs, 255 for unlabeled: not a raw ID of any table
    (problem,) = check_dataset(name, str(tmp_path), "train", patch_size=2).problems
    assert problem.startswith(f"{tmp_path / raw_name}: label values [255] are not defined by ")
    table = "synthia IDs" if name == "synthia" else "cityscapes label IDs"
    assert problem.endswith(f"; its values [0, 1, 2, 8, 10, 13, 255] look like train IDs ({table} do not define [255]): "
                            f"{name} reads a label file as train IDs when it is named *{suffix}, "
                            f"here {tmp_path / train_name}")
    with pytest.raises(DataError, match=r"look like train IDs .*here .*" + Path(train_name).name):
        build_dataset(name, tmp_path, "train", unknown_labels="error")[0]  # training's message says it too

    # no 255: Cityscapes label IDs read most pixels as void; SYNTHIA's read most train IDs as classes, but its
    # raw-ID files are 16-bit and a train-ID file is 8-bit
    label(tmp_path / raw_name, train_ids_of(STREET[:-1]))
    report = check_dataset(name, str(tmp_path), "train", patch_size=2)
    assert report.ok and f"here {tmp_path / train_name}" in report.warnings[0], report.format()
    why = ("synthia IDs come in 16-bit files; this file is 8-bit" if name == "synthia" else
           "cityscapes label IDs read 79% of its pixels as ignore")
    assert report.warnings[0].startswith("1 label file read as raw label IDs seems to hold train IDs; the first, "
                                         f"{tmp_path / raw_name}: its values [0, 1, 2, 8, 10, 13] look like train "
                                         f"IDs ({why})")

    (tmp_path / raw_name).rename(tmp_path / train_name)  # named as the hint says: read as train IDs, no word
    report = check_dataset(name, str(tmp_path), "train", patch_size=2)
    assert report.ok and not report.train_id_like and report.class_pixels[0] > 0, report.format()


def test_raw_id_files_and_datasets_of_one_form_get_no_train_id_hint(tmp_path):
    rgb(tmp_path / "gta/images/00001.png")
    label(tmp_path / "gta/labels/00001.png", STREET)  # real label IDs: sky, vegetation, car are above 18
    rgb(tmp_path / "cs/leftImg8bit/test/a/a_1_leftImg8bit.png")
    label(tmp_path / "cs/gtFine/test/a/a_1_gtFine_labelIds.png", [0])  # Cityscapes' test labels: all 0
    rgb(tmp_path / "bdd/images/10k/val/a.jpg")
    label(tmp_path / "bdd/labels/sem_seg/masks/val/a.png", [0, 0, 0, 1, 255])  # train IDs is its only form
    rgb(tmp_path / "syn/RGB/0000000.png")
    raw = np.resize(np.array([3, 4, 2, 1], np.uint16), (H, W))  # 16-bit raw IDs, all of them under 19
    png16_rgb(tmp_path / "syn/GT/LABELS/0000000.png", np.stack([raw, raw, 0 * raw], -1))
    for name, root, split in (("gtav", "gta", "train"), ("cityscapes", "cs", "test"), ("bdd100k", "bdd", "val"),
                              ("synthia", "syn", "train")):
        report = check_dataset(name, str(tmp_path / root), split, patch_size=2)
        assert report.ok and not report.train_id_like, report.format()
