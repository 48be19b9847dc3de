"""Datasets read from tiny fake trees in each real layout: ID mapping, pairing, and every error."""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgseg.config import DatasetSpec
from dgseg.data import DataError, TrainTransform, build_dataset, build_datasets, run_check
from dgseg.data.check import check_dataset
from dgseg.data.reading import SplitNotFound

H, W = 6, 8


def rgb(path: Path, seed: int = 0, size=(H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def label(path: Path, values, mode: str = "L") -> Path:
    """A single-channel label PNG: the value grid repeated to H x W (values: list of ints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.resize(np.asarray(values, np.uint8), (H, W))
    if mode == "P":  # palette PNG (GTAV, Mapillary): the pixel values are palette indices
        im = Image.frombytes("P", (W, H), arr.tobytes())
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    else:
        im = Image.fromarray(arr)
    im.save(path)
    return path


def png16_rgb(path: Path, arr: np.ndarray) -> Path:
    """Write a 16-bit RGB PNG (as SYNTHIA's labels are) with zlib, no imaging library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def first_label(ds) -> np.ndarray:
    return ds[0]["label"].numpy()


# ---------------------------------------------------------------------------------------------- layouts


def test_gtav_maps_cityscapes_label_ids_and_yields_the_item_contract(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7, 26, 0, 33], mode="P")
    ds = build_dataset("gtav", tmp_path, "train")
    item = ds[0]
    assert set(item) == {"image", "label", "path"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, H, W)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
    assert item["path"].endswith("00001.png")
    np.testing.assert_array_equal(item["label"][0, :4].numpy(), [0, 13, 255, 18])


def test_gtav_uses_label_train_ids_files_when_present(tmp_path):
    rgb(tmp_path / "images/00002.png")
    label(tmp_path / "labels/00002.png", [7])  # would be road
    label(tmp_path / "labels/00002_labelTrainIds.png", [10])  # sky: preferred
    assert (first_label(build_dataset("gtav", tmp_path, "train")) == 10).all()


def test_gtav_val_needs_a_split_file(tmp_path):
    for i in (1, 2, 3):
        rgb(tmp_path / f"images/{i:05d}.png", seed=i)
        label(tmp_path / f"labels/{i:05d}.png", [7])
    assert len(build_dataset("gtav", tmp_path, "train")) == 3
    with pytest.raises(DataError, match="split_file"):
        build_dataset("gtav", tmp_path, "val")
    split = tmp_path / "my_val.txt"
    split.write_text("00002\n00003.png\n")
    ds = build_dataset("gtav", tmp_path, "val", split_file=split)
    assert [Path(s.image).name for s in ds.samples] == ["00002.png", "00003.png"]
    (tmp_path / "val.txt").write_text("00001\n")
    assert len(build_dataset("gtav", tmp_path, "val")) == 1


def test_cityscapes_layout_pairs_across_city_folders(tmp_path):
    for city, stem, raw in (("aachen", "aachen_000000_000019", 7), ("bochum", "bochum_000000_000313", 26)):
        rgb(tmp_path / f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png")
        label(tmp_path / f"gtFine/val/{city}/{stem}_gtFine_labelIds.png", [raw])
        label(tmp_path / f"gtFine/val/{city}/{stem}_gtFine_color.png", [99])  # not a label file
        (tmp_path / f"gtFine/val/{city}/{stem}_gtFine_polygons.json").write_text("{}")
    label(tmp_path / "gtFine/val/bochum/bochum_000000_000313_gtFine_labelTrainIds.png", [11])
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert len(ds) == 2
    assert (ds[0]["label"] == 0).all()  # aachen: label IDs 7 -> road
    assert (ds[1]["label"] == 11).all()  # bochum: labelTrainIds preferred


def test_split_file_selects_a_subset_of_a_split_folder(tmp_path):
    for stem in ("a_1", "a_2", "a_3"):
        rgb(tmp_path / f"leftImg8bit/train/a/{stem}_leftImg8bit.png")
        label(tmp_path / f"gtFine/train/a/{stem}_gtFine_labelIds.png", [7])
    (tmp_path / "sixteenth.txt").write_text("a_2  # the labelled one\n")
    ds = build_dataset("cityscapes", tmp_path, "train", split_file=tmp_path / "sixteenth.txt")
    assert [Path(s.image).name for s in ds.samples] == ["a_2_leftImg8bit.png"]


def test_a_config_entry_selects_the_same_subset_with_its_split_file_key(tmp_path):
    """Rein's "+ 1/16 Cityscapes labels" setting from a config: data.train[i].split_file."""
    from dgseg.config import load_config
    from dgseg.engine.data import build_eval_set, build_train_set

    for stem in ("a_1", "a_2", "a_3"):
        rgb(tmp_path / f"leftImg8bit/train/a/{stem}_leftImg8bit.png")
        label(tmp_path / f"gtFine/train/a/{stem}_gtFine_labelIds.png", [7])
    (tmp_path / "sixteenth.txt").write_text("a_2\na_3\n")
    entry = f"{{name: cityscapes, root: {tmp_path}, split: train, split_file: {tmp_path / 'sixteenth.txt'}}}"
    cfg = load_config(None, [f"data.train=[{entry}]", f"data.val=[{entry}]", "data.crop_size=[16,16]"])
    assert len(build_train_set(cfg)) == 2 and len(build_eval_set(cfg.data.val[0], cfg=cfg)) == 2
    with pytest.raises(ValueError, match=r"synthetic-fog: split_file 'x.txt': the generated benchmark has no files"):
        build_eval_set(DatasetSpec(name="synthetic-fog", split="val", split_file="x.txt"))


def test_split_files_may_list_file_names_with_the_datasets_own_suffix_and_prefix(tmp_path):
    for stem in ("a_1", "a_2", "a_3", "a_4"):
        rgb(tmp_path / f"leftImg8bit/train/a/{stem}_leftImg8bit.png")
        label(tmp_path / f"gtFine/train/a/{stem}_gtFine_labelIds.png", [7])
    split = tmp_path / "names.txt"  # a file name, with its folder, mmseg's "<stem>_leftImg8bit", a stem
    split.write_text("a_1_leftImg8bit.png\na/a_2_leftImg8bit.png\na_3_leftImg8bit\n")
    ds = build_dataset("cityscapes", tmp_path, "train", split_file=split)
    assert [Path(s.image).name for s in ds.samples] == [f"a_{i}_leftImg8bit.png" for i in (1, 2, 3)]

    for i in range(4):
        rgb(tmp_path / f"us/rgb/rgb_{i}.png")
        label(tmp_path / f"us/ss/ss_{i}.png", [1])
    (tmp_path / "us/val.txt").write_text("rgb_0.png\nrgb_1\n2\n")
    ds = build_dataset("urbansyn", tmp_path / "us", "val")
    assert [Path(s.image).name for s in ds.samples] == ["rgb_0.png", "rgb_1.png", "rgb_2.png"]


def test_a_split_file_entry_without_an_image_names_the_expected_file(tmp_path):
    rgb(tmp_path / "rgb/rgb_0.png")
    label(tmp_path / "ss/ss_0.png", [1])
    (tmp_path / "val.txt").write_text("rgb_0.png\nrgb_9.png\n")
    with pytest.raises(DataError, match=r"rgb/9: listed in the split file but no such image found: "
                                        r"expected rgb_9\.png in .*rgb"):
        build_dataset("urbansyn", tmp_path, "val")


def test_synthia_reads_the_class_from_the_first_channel_of_16_bit_labels(tmp_path):
    rgb(tmp_path / "RGB/0000000.png")
    arr = np.zeros((H, W, 3), np.uint16)
    arr[..., 0] = np.resize(np.array([3, 1, 8, 12], np.uint16), (H, W))
    arr[..., 1] = 1000  # instance IDs in the second channel
    png16_rgb(tmp_path / "GT/LABELS/0000000.png", arr)
    # PIL alone drops the low byte of 16-bit RGB PNGs: the dataset must not rely on it
    assert np.asarray(Image.open(tmp_path / "GT/LABELS/0000000.png"))[..., 0].max() == 0
    np.testing.assert_array_equal(
        first_label(build_dataset("synthia", tmp_path, "train"))[0, :4], [0, 10, 13, 17]
    )


def test_16_bit_first_channel_without_torchvision_decoder(tmp_path):
    from dgseg.data.datasets import _read_png16_first_channel_pil, read_png16_first_channel

    arr = np.zeros((H, W, 3), np.uint16)
    arr[..., 0] = np.arange(H * W).reshape(H, W) * 1000 + 7  # values above 255 too
    arr[..., 2] = 5
    path = png16_rgb(tmp_path / "x.png", arr)
    np.testing.assert_array_equal(read_png16_first_channel(path), arr[..., 0])
    np.testing.assert_array_equal(_read_png16_first_channel_pil(path), arr[..., 0])


def test_urbansyn_pairs_rgb_and_ss_prefixes_and_ignores_void(tmp_path):
    rgb(tmp_path / "rgb/rgb_0001.png")
    label(tmp_path / "ss/ss_0001.png", [0, 19, 13])
    np.testing.assert_array_equal(first_label(build_dataset("urbansyn", tmp_path))[0, :3], [0, 255, 13])


def test_bdd100k_masks_are_train_ids(tmp_path):
    rgb(tmp_path / "images/10k/val/abc-123.jpg")
    label(tmp_path / "labels/sem_seg/masks/val/abc-123.png", [5, 255])
    np.testing.assert_array_equal(first_label(build_dataset("bdd100k", tmp_path, "val"))[0, :2], [5, 255])


def write_mapillary(root: Path, split_dir: str = "training") -> None:
    names = [
        "object--vehicle--car",
        "construction--flat--road",
        "void--unlabeled",
        "nature--sky",
        "marking--general",
        "human--rider--bicyclist",
    ]
    (root / "config_v1.2.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "config_v1.2.json").write_text(
        json.dumps({"labels": [{"name": n, "readable": n} for n in names]})
    )
    rgb(root / f"{split_dir}/images/img1.jpg")
    label(root / f"{split_dir}/v1.2/labels/img1.png", [0, 1, 2, 3, 4, 5], mode="P")


def test_mapillary_maps_by_the_class_names_of_its_config(tmp_path):
    write_mapillary(tmp_path)
    expected = [13, 0, 255, 10, 0, 12]  # car, road, ignore, sky, lane marking -> road, bicyclist -> rider
    np.testing.assert_array_equal(first_label(build_dataset("mapillary", tmp_path, "train"))[0, :6], expected)
    assert len(build_dataset("mapillary", tmp_path, "training")) == 1


def test_mapillary_without_config_names_the_expected_file(tmp_path):
    write_mapillary(tmp_path)
    (tmp_path / "config_v1.2.json").unlink()
    with pytest.raises(DataError, match="config_v1.2.json"):
        build_dataset("mapillary", tmp_path, "train")


@pytest.mark.parametrize("condition", ["fog", "night", "rain", "snow"])
def test_acdc_conditions(tmp_path, condition):
    stem = "GOPR0351_frame_000159"
    rgb(tmp_path / f"rgb_anon/{condition}/val/GOPR0351/{stem}_rgb_anon.png")
    label(tmp_path / f"gt/{condition}/val/GOPR0351/{stem}_gt_labelIds.png", [24])
    rgb(tmp_path / f"rgb_anon/{condition}/val_ref/GOPR0351/{stem}_ref_anon.png")  # not part of the split
    ds = build_dataset(f"acdc-{condition}", tmp_path, "val")
    assert len(ds) == 1 and (first_label(ds) == 11).all()


def test_folder_with_and_without_split_subfolders(tmp_path):
    rgb(tmp_path / "a/train/images/x.jpg")
    label(tmp_path / "a/train/labels/x.png", [4])
    rgb(tmp_path / "b/images/sub/y.png")
    label(tmp_path / "b/labels/sub/y.png", [9, 255])
    assert (first_label(build_dataset("folder", tmp_path / "a", "train")) == 4).all()
    np.testing.assert_array_equal(  # no split folders: train is every image (other splits: test_data_folder.py)
        first_label(build_dataset("folder", tmp_path / "b", "train"))[0, :2], [9, 255]
    )


def test_synthetic_names_need_no_root():
    ds = build_dataset("synthetic-fog", root=None, split="val", length=2, size=(32, 64), seed=1)
    assert len(ds) == 2 and ds[0]["image"].shape == (3, 32, 64)
    with pytest.raises(DataError, match="no root"):
        build_dataset("synthetic-fog", root="/data", split="val")


def test_build_datasets_concatenates_with_a_common_transform(tmp_path):
    rgb(tmp_path / "g/images/00001.png")
    label(tmp_path / "g/labels/00001.png", [7])
    specs = [
        {"name": "gtav", "root": tmp_path / "g"},
        {"name": "synthetic-game", "length": 3, "size": (32, 64)},
    ]
    ds = build_datasets(specs, transform=TrainTransform(crop_size=(16, 16), scale=None, photometric=False))
    assert len(ds) == 4
    assert ds[0]["image"].shape == (3, 16, 16) and ds[0]["image"].dtype == torch.float32
    assert ds[3]["label"].shape == (16, 16)


def test_unknown_dataset_name_lists_the_valid_ones():
    with pytest.raises(DataError, match="cityscapes"):
        build_dataset("kitti", "/nowhere", "train")


# ----------------------------------------------------------------------------------------------- errors


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        build_dataset("cityscapes", tmp_path / "nope", "val")


def test_missing_split_folder_names_the_folder_and_the_splits_found(tmp_path):
    rgb(tmp_path / "leftImg8bit/train/aachen/a_leftImg8bit.png")
    label(tmp_path / "gtFine/train/aachen/a_gtFine_labelIds.png", [7])
    with pytest.raises(SplitNotFound, match=r"leftImg8bit/val: image folder of cityscapes split 'val' not found "
                                            r"\(found splits train\); expected the layout"):
        build_dataset("cityscapes", tmp_path, "val")  # `dgseg data check`: a --split error (exit 2)
    with pytest.raises(ValueError, match=r"^--split: .*leftImg8bit/val: image folder"):
        check_dataset("cityscapes", str(tmp_path), "val")
    shutil.rmtree(tmp_path / "gtFine")  # the split is there, its labels are not: the dataset's problem (exit 1)
    (problem,) = check_dataset("cityscapes", str(tmp_path), "train").problems
    assert problem.startswith(f"{tmp_path}/gtFine/train: label folder of cityscapes split 'train' not found")


def test_unknown_split_name_is_an_error(tmp_path):
    (tmp_path / "leftImg8bit").mkdir()
    with pytest.raises(SplitNotFound, match="unknown split"):
        build_dataset("cityscapes", tmp_path, "validation")


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "images/10k/val").mkdir(parents=True)
    (tmp_path / "labels/sem_seg/masks/val").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        build_dataset("bdd100k", tmp_path, "val")


def test_image_without_label_raises_or_is_skipped_with_a_record(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7])
    rgb(tmp_path / "images/00002.png")
    with pytest.raises(DataError, match="00002.png: image without a label"):
        build_dataset("gtav", tmp_path)
    with pytest.warns(UserWarning, match="left out"):
        ds = build_dataset("gtav", tmp_path, on_error="skip")
    assert len(ds) == 1
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("00002.png")


def test_image_files_of_a_suffix_the_dataset_does_not_read_are_pairing_problems_not_dropped(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7])
    rgb(tmp_path / "images/00002.jpeg")  # GTAV reads .png and .jpg
    rgb(tmp_path / "images/00003.webp")
    (tmp_path / "images/notes.txt").write_text("not an image file: not a problem")
    with pytest.raises(DataError, match=r"00002\.jpeg: image file not read by this dataset: expected names "
                                        r"ending in \.png or \.jpg.*\(and 1 more problems\)"):
        build_dataset("gtav", tmp_path)
    with pytest.warns(UserWarning, match="2 files left out"):
        ds = build_dataset("gtav", tmp_path, on_error="skip")
    assert len(ds) == 1
    assert [Path(p).name for p, _ in ds.skipped] == ["00002.jpeg", "00003.webp"]
    report = check_dataset("gtav", tmp_path, "train")
    assert not report.ok and any("00003.webp: image file not read" in p for p in report.problems)


def test_label_without_image_is_an_error(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7])
    label(tmp_path / "labels/00009.png", [7])
    with pytest.raises(DataError, match="00009.png: label without an image"):
        build_dataset("gtav", tmp_path)


@pytest.mark.parametrize("name, message", [("gtav", "duplicate image stem 'a'"),
                                           ("folder", r"a\.png: duplicate image 'a' \(also .*a\.jpg\)")])
def test_duplicate_stems_are_an_error(tmp_path, name, message):
    # a folder pairs by path under images/: the same stem in two sub-folders is fine (test_data_folder.py)
    rgb(tmp_path / "images/a.png")
    rgb(tmp_path / "images/a.jpg")
    label(tmp_path / "labels/a.png", [1])
    with pytest.raises(DataError, match=message):
        build_dataset(name, tmp_path, "train")


def test_truncated_image_raises_naming_the_file(tmp_path):
    path = rgb(tmp_path / "images/00001.png", size=(64, 64))
    path.write_bytes(path.read_bytes()[:200])
    label(tmp_path / "labels/00001.png", [7])
    ds = build_dataset("gtav", tmp_path)  # listing is cheap: no decoding yet
    with pytest.raises(DataError, match="00001.png: unreadable or truncated"):
        ds[0]


def test_bad_sample_is_replaced_and_recorded_when_skipping(tmp_path):
    bad = rgb(tmp_path / "images/00001.png")
    bad.write_bytes(b"not an image")
    rgb(tmp_path / "images/00002.png")
    label(tmp_path / "labels/00001.png", [7])
    label(tmp_path / "labels/00002.png", [8])
    ds = build_dataset("gtav", tmp_path, on_error="skip")
    with pytest.warns(UserWarning, match="skipping a bad sample"):
        item = ds[0]
    assert item["path"].endswith("00002.png") and (item["label"] == 1).all()
    assert len(ds.skipped) == 1
    path, reason = ds.skipped[0]
    assert path.endswith("00001.png") and "unreadable" in reason


def test_size_mismatch_names_both_files(tmp_path):
    rgb(tmp_path / "images/00001.png", size=(H + 1, W))
    label(tmp_path / "labels/00001.png", [7])
    ds = build_dataset("gtav", tmp_path)
    with pytest.raises(
        DataError, match=r"labels/00001.png: label is 8x6 but its image .*images/00001.png is 8x7"
    ):
        ds[0]


def test_unknown_label_values_are_an_error_naming_the_file_unless_ignored_explicitly(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7, 77])
    with pytest.raises(DataError, match=r"00001.png: label values \[77\] are not defined by cityscapes label "
                                        r"IDs.*--set data.unknown_labels=ignore"):
        build_dataset("gtav", tmp_path)[0]
    ds = build_dataset("gtav", tmp_path, unknown_labels="ignore")
    item = ds[0]
    assert set(np.unique(item["label"].numpy())) == {0, 255}
    (path, reason), = item["unknown_labels"]  # how a DataLoader worker's record reaches the main process
    assert path.endswith("00001.png") and "label values [77] read as 255" in reason
    ds[0]
    assert ds.ignored_labels == {path: reason}  # once per file, however often it is read
    with pytest.warns(UserWarning, match=r"00001.png: label values \[77\]"):
        build_dataset("gtav", tmp_path, unknown_labels="warn")[0]


def test_the_configs_auto_reads_a_built_in_datasets_unknown_ids_as_ignore_and_a_folders_as_an_error(tmp_path):
    # auto (default): built-in datasets as Rein's offline converters (every raw ID outside the table -> 255,
    # here logged); a folder's class count is the user's own, so a value beyond it is an error
    from dgseg.config import load_config
    from dgseg.engine.data import build_eval_set

    rgb(tmp_path / "gta/images/00001.png")
    label(tmp_path / "gta/labels/00001.png", [7, 77])
    cfg = load_config()
    assert cfg.data.unknown_labels == "auto"
    gta = DatasetSpec(name="gtav", root=str(tmp_path / "gta"), split="train")
    assert build_eval_set(gta, cfg=cfg)[0]["unknown_labels"][0][0].endswith("00001.png")
    cfg.data.unknown_labels = "error"
    with pytest.raises(DataError, match=r"label values \[77\] are not defined"):
        build_eval_set(gta, cfg=cfg)[0]
    rgb(tmp_path / "mine/val/images/a.png")
    label(tmp_path / "mine/val/labels/a.png", [1, 40])
    cfg = load_config(overrides=["data.classes={names: [a, b, c]}"])
    with pytest.raises(DataError, match=r"a.png: label values \[40\]"):
        build_eval_set(DatasetSpec(name="folder", root=str(tmp_path / "mine"), split="val"), cfg=cfg)[0]


@pytest.mark.parametrize("name, layout, raw", [
    ("gtav", ("images/0.png", "labels/0.png"), range(34)),  # every Cityscapes label ID, 19 classes or not
    ("cityscapes", ("leftImg8bit/train/a/a_leftImg8bit.png", "gtFine/train/a/a_gtFine_labelIds.png"), range(34)),
    ("urbansyn", ("rgb/rgb_0.png", "ss/ss_0.png"), [*range(20), 255]),
    ("bdd100k", ("images/10k/train/0.jpg", "labels/sem_seg/masks/train/0.png"), [*range(19), 255]),
])
def test_raw_ids_of_a_datasets_own_table_are_not_unknown_values(tmp_path, name, layout, raw):
    rgb(tmp_path / layout[0])
    label(tmp_path / layout[1], list(raw))
    build_dataset(name, tmp_path, "train")[0]  # the default (unknown_labels="error") does not raise


def test_colour_label_image_is_rejected(tmp_path):
    rgb(tmp_path / "images/00001.png")
    rgb(tmp_path / "labels/00001.png")
    with pytest.raises(DataError, match="colour"):
        build_dataset("gtav", tmp_path)[0]


# ---------------------------------------------------------------------------------------------- check


def test_check_reports_histogram_and_passes_on_a_clean_tree(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7, 26, 0, 0])
    out = io.StringIO()
    # 6 x 8 px images stand for real ones: a 2-px patch size keeps them above the smallest image a model takes
    assert run_check("gtav", str(tmp_path), "train", out=out, patch_size=2) == 0
    text = out.getvalue()
    assert "1 listed, 1 read" in text and "road" in text and "OK" in text
    report = check_dataset("gtav", str(tmp_path), "train")
    assert report.class_pixels[0] == report.class_pixels[13] == H * W // 4
    assert report.class_pixels[19] == H * W // 2  # ignore


def test_check_lists_every_problem_and_fails(tmp_path):
    rgb(tmp_path / "images/00001.png")
    label(tmp_path / "labels/00001.png", [7, 99])  # unknown value
    rgb(tmp_path / "images/00002.png")  # no label
    bad = rgb(tmp_path / "images/00003.png")
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    label(tmp_path / "labels/00003.png", [7])
    out = io.StringIO()
    assert run_check("gtav", str(tmp_path), "train", out=out, patch_size=2) == 1
    text = out.getvalue()
    assert "problems (3)" in text and "FAILED" in text
    assert "00002.png: image without a label" in text
    assert "00003.png: unreadable or truncated" in text
    assert "label values [99]" in text


def test_check_says_what_training_does_with_unknown_label_values(tmp_path):
    # as training resolves data.unknown_labels: auto is error for a folder (its class count is the user's)
    # and ignore for a built-in dataset; a folder's problem says how to change that
    rgb(tmp_path / "mine/val/images/a.png")
    label(tmp_path / "mine/val/labels/a.png", [1, 40])
    (problem,) = check_dataset("folder", str(tmp_path / "mine"), "val", patch_size=2).problems
    assert "a.png: label values [40] are not defined by folder" in problem
    assert problem.endswith("; training stops on these (data.unknown_labels=auto is error for folder datasets); "
                            "pass --set data.unknown_labels=ignore to read them as 255 (ignore), or give the "
                            "dataset a label_map from raw values to class indices (--label-map here)")
    (problem,) = check_dataset("folder", str(tmp_path / "mine"), "val", patch_size=2, unknown_labels="ignore").problems
    assert problem.endswith("; training reads them as 255, ignore (data.unknown_labels=ignore)")
    rgb(tmp_path / "gta/images/00001.png")
    label(tmp_path / "gta/labels/00001.png", [7, 77])
    (problem,) = check_dataset("gtav", str(tmp_path / "gta"), "train", patch_size=2).problems
    assert problem.endswith("label values [77] are not defined by cityscapes label IDs; training reads them as 255, "
                            "ignore (data.unknown_labels=auto is ignore for gtav datasets)")
    (problem,) = check_dataset("gtav", str(tmp_path / "gta"), "train", patch_size=2, unknown_labels="error").problems
    assert "training stops on these (data.unknown_labels=error); pass --set data.unknown_labels=ignore" in problem
    assert "label_map" not in problem  # a built-in dataset's raw IDs are read through its own table


def test_check_of_a_missing_root_fails_with_the_reason(tmp_path):
    out = io.StringIO()
    assert run_check("cityscapes", str(tmp_path / "none"), "val", out=out) == 1
    assert "root folder not found" in out.getvalue()


def test_a_relative_root_that_is_not_there_is_named_with_the_folder_it_was_read_from(tmp_path, monkeypatch):
    """A run's config keeps the roots it was given: read elsewhere (a moved run, another working folder) a relative
    root is looked for under the current folder, and the message says so with the absolute path it looked at."""
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()  # tmp_path as the OS names it (macOS: /private/var/...)
    with pytest.raises(DataError) as caught:
        build_dataset("folder", "data/site_a", "val")
    assert str(caught.value).startswith(
        f"{Path('data/site_a')}: folder root folder not found (a relative path is read from the folder dgseg runs in, "
        f"{here}: looked at {here / 'data' / 'site_a'}); expected a folder with <split>/images/ and <split>/labels/, or images/ and labels/ directly under it "
        "(no split folders)")
    with pytest.raises(DataError) as caught:
        build_dataset("folder", tmp_path / "elsewhere", "val")
    assert str(caught.value).startswith(f"{tmp_path / 'elsewhere'}: folder root folder not found; expected")
