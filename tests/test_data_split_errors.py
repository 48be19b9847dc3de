"""What a split that yields nothing says: no image with a label names the files that did not pair (not
"empty"), every sample failing to load names the first files and their reasons, and a split file not found
names the absolute path looked at and the file of that name under the dataset's root."""

from __future__ import annotations

import io
import warnings

import pytest
from PIL import Image
from test_data_datasets import label, rgb

from dgseg.cli import main
from dgseg.data import DataError, build_dataset, run_check
from dgseg.data.check import check_dataset

CITIES = {"frankfurt": 2, "lindau": 2}


def cityscapes_colour_only(root, split: str = "val"):
    """A Cityscapes split whose gtFine folder holds the colour pictures only (no *_labelIds.png)."""
    for city, n in CITIES.items():
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            rgb(root / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
            rgb(root / f"gtFine/{split}/{city}/{stem}_gtFine_color.png")
    return root


def test_a_split_where_no_image_has_a_label_lists_each_file_instead_of_calling_it_empty(tmp_path):
    root = cityscapes_colour_only(tmp_path)
    report = check_dataset("cityscapes", str(root), "val")
    images = sorted(root.glob("leftImg8bit/val/*/*.png"))
    assert report.problems == [
        f"{root}/leftImg8bit/val: no image of cityscapes split 'val' pairs with a label in {root}/gtFine/val; "
        "4 files did not pair",
        *(f"{image}: image without a label: expected {image.name.replace('_leftImg8bit.png', '')}_gtFine_labelTrainIds"
          f".png or {image.name.replace('_leftImg8bit.png', '')}_gtFine_labelIds.png under {root}/gtFine/val"
          for image in images),
    ]
    out = io.StringIO()
    assert run_check("cityscapes", str(root), "val", out=out) == 1
    assert "empty" not in out.getvalue() and "FAILED: 5 problem(s)" in out.getvalue()
    for on_error in ("raise", "skip"):  # training: the same, naming the first files (skipping would leave none)
        with pytest.raises(DataError) as caught:
            build_dataset("cityscapes", root, "val", on_error=on_error)
        assert str(caught.value).startswith(f"{report.problems[0]}: (1) {report.problems[1]}; (2) {images[1]}: ")
        assert "on_error=skip" not in str(caught.value)


def test_an_empty_label_folder_names_the_first_five_images_and_the_count(tmp_path):
    for i in range(1, 8):
        rgb(tmp_path / f"images/{i:05d}.png")
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError) as caught:
        build_dataset("gtav", tmp_path, on_error="skip")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}/images: no image of gtav split 'train' pairs with a label in "
                              f"{tmp_path}/labels; 7 files did not pair: (1) {tmp_path}/images/00001.png: image without "
                              f"a label: expected 00001_labelTrainIds.png or 00001.png under {tmp_path}/labels; (2) ")
    assert "(5) " in message and "(6) " not in message and message.endswith("; and 2 more problems")
    assert len(check_dataset("gtav", str(tmp_path)).problems) == 1 + 7


def test_a_split_with_no_file_at_all_is_still_called_empty(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (problem,) = check_dataset("gtav", str(tmp_path)).problems
    assert problem == (f"{tmp_path}/images: split 'train' of gtav is empty; expected image files (.png, .jpg) "
                       f"with labels in {tmp_path}/labels")


def test_when_every_sample_fails_to_load_the_error_names_the_first_files_and_their_reasons(tmp_path):
    (tmp_path / "labels").mkdir()
    for i in range(1, 8):  # every label a colour picture
        rgb(tmp_path / f"images/{i:05d}.png")
        Image.new("RGB", (8, 6), (128, 64, 128)).save(tmp_path / f"labels/{i:05d}.png")
    ds = build_dataset("gtav", tmp_path, on_error="skip")
    with warnings.catch_warnings(), pytest.raises(DataError) as caught:
        warnings.simplefilter("ignore")
        ds[0]
    message = str(caught.value)
    assert message.startswith(f"gtav: every one of its 7 samples failed to load: (1) {tmp_path}/images/00001.png: "
                              f"{tmp_path}/labels/00001.png: label image has mode RGB; expected a single-channel PNG")
    assert f"(5) {tmp_path}/images/00005.png: " in message and message.endswith("; and 2 more problems")
    assert "dataset.skipped" not in message and len(ds.skipped) == 7


def test_a_relative_split_file_is_read_from_the_working_folder_and_one_under_the_root_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data/cityscapes"
    for stem in ("a_1", "a_2"):
        rgb(root / f"leftImg8bit/train/a/{stem}_leftImg8bit.png")
        label(root / f"gtFine/train/a/{stem}_gtFine_labelIds.png", [7])
    (root / "sixteenth.txt").write_text("a_2\n")
    with pytest.raises(DataError) as caught:
        build_dataset("cityscapes", "data/cityscapes", "train", split_file="sixteenth.txt")
    assert str(caught.value) == (
        f"sixteenth.txt: split file not found (a relative path is read from the folder dgseg runs in: looked at "
        f"{tmp_path}/sixteenth.txt); data/cityscapes/sixteenth.txt is there, under the cityscapes root "
        "data/cityscapes: write split_file: data/cityscapes/sixteenth.txt; expected a text file listing one image "
        "per line, or GTAV's split.mat")
    assert len(build_dataset("cityscapes", "data/cityscapes", "train", split_file="data/cityscapes/sixteenth.txt")) == 1
    with pytest.raises(DataError) as caught:  # an absolute path: itself; a file of its name under the root: named
        build_dataset("cityscapes", root, "train", split_file=tmp_path / "lists/sixteenth.txt")
    assert str(caught.value).startswith(f"{tmp_path}/lists/sixteenth.txt: split file not found; {root}/sixteenth.txt "
                                        f"is there, under the cityscapes root {root}: write split_file: {root}/sixteenth.txt;")
    rgb(tmp_path / "gta/images/00001.png")
    label(tmp_path / "gta/labels/00001.png", [7])
    with pytest.raises(DataError, match=r"^val\.txt: split file not found \(a relative path .* looked at .*/val\.txt\); "
                                        r"expected"):  # a dataset without split folders, none under its root
        build_dataset("gtav", "gta", "val", split_file="val.txt")


def test_data_check_checks_the_images_a_split_file_lists(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    for stem, raw in (("a_1", 7), ("a_2", 26), ("a_3", 7)):
        rgb(root / f"leftImg8bit/train/a/{stem}_leftImg8bit.png")
        label(root / f"gtFine/train/a/{stem}_gtFine_labelIds.png", [raw])
    (root / "sixteenth.txt").write_text("a_2\n")
    assert main(["data", "check", "cityscapes", str(root), "--split-file", str(root / "sixteenth.txt"),
                 "--patch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "samples: 1 listed, 1 read" in out and "     13 car            100.00%  48" in out
    assert main(["data", "check", "cityscapes", str(root), "--split-file", str(tmp_path / "none.txt")]) == 2
    assert f"error: --split-file: {tmp_path}/none.txt: split file not found; " in capsys.readouterr().err
    assert main(["data", "check", "synthetic-fog", "", "--split-file", "x.txt"]) == 2
    assert "--split-file x.txt: synthetic-fog is generated, it has no files to select" in capsys.readouterr().err
