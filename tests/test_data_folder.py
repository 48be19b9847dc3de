"""The ``folder`` dataset's layouts and pairing: split folders or images/ and labels/ directly under the root
(where ``train`` and ``all`` are every image and another split needs a split file), labels at the same path
under labels/ as their images under images/ (the same file name in several sub-folders), and split-file
entries with sub-folders. Built-in datasets keep pairing by stem (the end of this file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data_datasets import label, rgb

from dgseg.data import DataError, build_dataset
from dgseg.data.check import check_dataset


def names(ds) -> list[str]:
    """The images of a dataset, as paths under their images/ folder."""
    out = []
    for s in ds.samples:
        parts = Path(s.image).parts
        out.append("/".join(parts[len(parts) - parts[::-1].index("images"):]))
    return out


def pairs(ds) -> dict[str, int]:
    """image path under images/ -> the value of its label (every label here is one value)."""
    return {n: int(ds[i]["label"][0, 0]) for i, n in enumerate(names(ds))}


def flat(root: Path, *stems: str) -> Path:
    """images/<stem>.jpg and labels/<stem>.png directly under root, label value = position in ``stems``."""
    for i, stem in enumerate(stems):
        rgb(root / f"images/{stem}.jpg")
        label(root / f"labels/{stem}.png", [i])
    return root


# ---------------------------------------------------------------------------------------------- layouts


def test_without_split_folders_train_and_all_are_every_image_and_another_split_needs_a_split_file(tmp_path):
    root = flat(tmp_path, "a", "b", "c")
    assert names(build_dataset("folder", root, "train")) == ["a.jpg", "b.jpg", "c.jpg"]
    assert names(build_dataset("folder", root, "all")) == ["a.jpg", "b.jpg", "c.jpg"]
    for split in ("val", "test", "anything"):  # not the training images without a word
        with pytest.raises(DataError) as caught:
            build_dataset("folder", root, split)
        assert str(caught.value) == (
            f"{root}/{split}/images: folder split '{split}' not found; {root} holds images/ and labels/ directly "
            f"(no split folders: split 'all' is every image, as is 'train' without {root}/train.txt); expected "
            f"split folders {split}/images and {split}/labels under {root}, a split file {root}/{split}.txt or the "
            "entry's split_file (one image per line), or split: all")
        with pytest.raises(ValueError) as refused:  # `dgseg data check` builds the same: the --split is wrong
            check_dataset("folder", str(root), split)
        assert str(refused.value) == f"--split: {caught.value}"
    (root / "val.txt").write_text("b.jpg\n")
    assert names(build_dataset("folder", root, "val")) == ["b.jpg"]
    with pytest.raises(DataError, match=r"train.txt: not found, and split 'train' without it would read every image"
                       r" under .*images, those listed in .*val.txt too"):
        build_dataset("folder", root, "train")  # the validation images are not trained on without a word
    (tmp_path / "mine.txt").write_text("c\n")
    assert names(build_dataset("folder", root, "test", split_file=tmp_path / "mine.txt")) == ["c.jpg"]
    (root / "train.txt").write_text("a\nc\n")  # a training list keeps the validation images out of training
    assert names(build_dataset("folder", root, "train")) == ["a.jpg", "c.jpg"]
    assert names(build_dataset("folder", root, "all")) == ["a.jpg", "b.jpg", "c.jpg"]


def test_a_missing_split_folder_names_the_split_layout_first_and_the_split_folders_found(tmp_path):
    for split in ("train", "val"):
        flat(tmp_path / split, "a")
    (tmp_path / "notes").mkdir()  # not a split folder: no images/ in it
    message = (f"{tmp_path}/test/images: image folder of folder split 'test' not found (found split folders train, "
               f"val); expected {tmp_path}/test/images and {tmp_path}/test/labels, or images/ and labels/ directly "
               f"under {tmp_path} (no split folders)")
    with pytest.raises(DataError) as caught:
        build_dataset("folder", tmp_path, "test")
    assert str(caught.value) == message
    with pytest.raises(ValueError) as refused:  # `dgseg data check`: an option error, not the dataset's problem
        check_dataset("folder", str(tmp_path), "test")
    assert str(refused.value) == f"--split: {message}"
    with pytest.raises(DataError, match=rf"{tmp_path}/notes/x/images: image folder of folder split 'x' not found; expected"):
        build_dataset("folder", tmp_path / "notes", "x")  # no split folder at all: none listed
    assert check_dataset("folder", str(tmp_path / "notes"), "x").problems[0].startswith(
        f"{tmp_path}/notes/x/images: image folder")  # nothing there for any split: the dataset's problem
    assert names(build_dataset("folder", tmp_path, "val")) == ["a.jpg"]


# ---------------------------------------------------------------------------------------------- pairing


def test_the_same_file_name_in_two_sub_folders_pairs_by_its_path_under_images(tmp_path):
    for value, cam in enumerate(("cam0", "cam1")):
        rgb(tmp_path / f"val/images/{cam}/0001.jpg")
        label(tmp_path / f"val/labels/{cam}/0001.png", [value])
    ds = build_dataset("folder", tmp_path, "val")
    assert pairs(ds) == {"cam0/0001.jpg": 0, "cam1/0001.jpg": 1}
    assert check_dataset("folder", str(tmp_path), "val", patch_size=2).problems == []


def test_an_image_without_its_label_names_the_label_expected_with_its_sub_folder(tmp_path):
    for cam in ("cam0", "cam1"):
        rgb(tmp_path / f"images/{cam}/0001.jpg")
    label(tmp_path / "labels/cam0/0001.png", [3])
    with pytest.raises(DataError, match=r"images/cam1/0001\.jpg: image without a label: expected cam1/0001\.png "
                                        rf"under {tmp_path}/labels; leave such files out with --set data.on_error"):
        build_dataset("folder", tmp_path)
    with pytest.warns(UserWarning, match="1 files left out while pairing"):
        assert pairs(build_dataset("folder", tmp_path, on_error="skip")) == {"cam0/0001.jpg": 3}


def test_a_label_in_another_sub_folder_pairs_by_stem_only_when_no_other_image_or_label_has_that_stem(tmp_path):
    rgb(tmp_path / "images/cam0/b000.jpg")
    rgb(tmp_path / "images/cam1/b001.jpg")
    label(tmp_path / "labels/b000.png", [4])  # not mirrored: as before sub-folders counted, the stem is unique
    label(tmp_path / "labels/camX/b001.png", [5])
    assert pairs(build_dataset("folder", tmp_path)) == {"cam0/b000.jpg": 4, "cam1/b001.jpg": 5}
    rgb(tmp_path / "images/cam2/b001.jpg")  # now two images of stem b001: the camX label is nobody's
    label(tmp_path / "labels/cam2/b001.png", [6])
    problems = check_dataset("folder", str(tmp_path), patch_size=2).problems
    assert problems == [
        f"{tmp_path}/images/cam1/b001.jpg: image without a label: expected cam1/b001.png under {tmp_path}/labels "
        f"({tmp_path}/labels/camX/b001.png has its stem, but a label in another sub-folder pairs by stem only when "
        "no other image or label has that stem)",
        f"{tmp_path}/labels/camX/b001.png: label without an image: expected "
        + " or ".join(f"camX/b001{s}" for s in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"))
        + f" under {tmp_path}/images"]


@pytest.mark.parametrize("name, images, labels, expected", [
    # two images of stem 0001: Cam0/0001 does not pair by stem with the label in cam0/ either
    ("folder", ["Cam0/0001.jpg", "cam1/0001.jpg"], ["cam0/0001.png", "cam1/0001.png"], "Cam0/0001.png"),
    ("folder", ["A.jpg", "b.jpg"], ["a.png", "b.png"], "A.png"),
    ("gtav", ["A.png", "b.png"], ["a.png", "b.png"], "A_labelTrainIds.png or A.png"),  # pairing by stem too
])
def test_an_image_without_a_label_names_the_label_whose_path_differs_only_in_letter_case(tmp_path, name, images,
                                                                                         labels, expected):
    for image in images:
        rgb(tmp_path / "images" / image)
    for value, path in enumerate(labels):
        label(tmp_path / "labels" / path, [value])
    problems = check_dataset(name, str(tmp_path), patch_size=2).problems
    assert problems[0] == (
        f"{tmp_path}/images/{images[0]}: image without a label: expected {expected} under {tmp_path}/labels; "
        f"{tmp_path}/labels/{labels[0]} differs from the name expected only in letter case (pairing is "
        "case-sensitive, also on a case-insensitive file system)")
    assert len(problems) == 2 and problems[1].startswith(f"{tmp_path}/labels/{labels[0]}: label without an image")


# ---------------------------------------------------------------------------------------------- split files


def cams(root: Path) -> Path:
    for value, (cam, stem) in enumerate((("cam0", "0001"), ("cam1", "0001"), ("cam0", "0002"))):
        rgb(root / f"images/{cam}/{stem}.jpg")
        label(root / f"labels/{cam}/{stem}.png", [value])
    return root


@pytest.mark.parametrize("entry, selected", [
    ("cam1/0001", ["cam1/0001.jpg"]),
    ("cam0/0001.jpg", ["cam0/0001.jpg"]),
    ("images/cam1/0001.jpg", ["cam1/0001.jpg"]),  # folders above images/ are fine
    ("/data/site/images/cam0/0001.png", ["cam0/0001.jpg"]),
    ("0002", ["cam0/0002.jpg"]),  # a bare stem of one image
    ("cam1\\0001.jpg", ["cam1/0001.jpg"]),  # a list written on Windows
    ("images\\cam0\\0002", ["cam0/0002.jpg"]),
])
def test_a_split_file_entry_may_name_the_sub_folder_of_its_image(tmp_path, entry, selected):
    (cams(tmp_path) / "val.txt").write_text(f"{entry}\n")
    assert names(build_dataset("folder", tmp_path, "val")) == selected


@pytest.mark.parametrize("entry", ["0001", "0001.png"])
def test_a_split_file_entry_of_several_images_is_an_error_naming_them(tmp_path, entry):
    (cams(tmp_path) / "val.txt").write_text(f"0002\n{entry}\n")
    message = (f"{tmp_path}/val.txt: split-file entry '0001' matches 2 images under {tmp_path}/images "
               "(cam0/0001.jpg, cam1/0001.jpg); expected one: write the entry with its sub-folders under images/, "
               "e.g. cam0/0001.jpg")
    for on_error in ("raise", "skip"):  # not a bad file to leave out: the split file is wrong
        with pytest.raises(DataError) as caught:
            build_dataset("folder", tmp_path, "val", on_error=on_error)
        assert str(caught.value) == message


def test_a_split_file_entry_without_an_image_names_its_sub_folder_and_the_images_of_its_stem(tmp_path):
    (cams(tmp_path) / "val.txt").write_text("cam0/0002\ncam1/0002\ncam0/0009\n")  # the image is cam0/0002 alone
    with pytest.raises(DataError) as caught:
        build_dataset("folder", tmp_path, "val")
    assert str(caught.value).startswith(
        f"{tmp_path}/images/cam0/0009: listed in the split file {tmp_path}/val.txt but no such image found: expected "
        f"cam0/0009.png or cam0/0009.jpg or cam0/0009.jpeg or cam0/0009.bmp or cam0/0009.tif or cam0/0009.tiff or "
        f"cam0/0009.webp in {tmp_path}/images (and 1 more problems)")
    with pytest.warns(UserWarning, match="2 files left out while pairing"):
        ds = build_dataset("folder", tmp_path, "val", on_error="skip")
    assert names(ds) == ["cam0/0002.jpg"]
    assert ds.skipped[1] == (f"{tmp_path}/images/cam1/0002", (
        f"listed in the split file {tmp_path}/val.txt but no such image found: expected "
        + " or ".join(f"cam1/0002{s}" for s in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"))
        + f" in {tmp_path}/images (found with its stem: cam0/0002.jpg; write the entry as that path)"))


def test_a_split_file_entry_with_a_sub_folder_is_not_read_as_an_image_of_another_folder(tmp_path):
    cams(tmp_path)
    rgb(tmp_path / "images/0003.jpg")  # directly under images/: its entry is 0003 (or images/0003)
    label(tmp_path / "labels/0003.png", [3])
    (tmp_path / "val.txt").write_text("images/0003\n")
    assert names(build_dataset("folder", tmp_path, "val")) == ["0003.jpg"]
    (tmp_path / "val.txt").write_text("cam1/0003\n")  # no cam1/0003: not 0003 under images/ either
    with pytest.raises(DataError, match=r"images/cam1/0003: listed in the split file .* but no such image found"):
        build_dataset("folder", tmp_path, "val")


def test_a_split_file_selects_images_of_a_split_folder_by_sub_folder(tmp_path):
    cams(tmp_path / "train")
    (tmp_path / "few.txt").write_text("cam1/0001.jpg\n")
    assert pairs(build_dataset("folder", tmp_path, "train", split_file=tmp_path / "few.txt")) == {"cam1/0001.jpg": 1}


# ---------------------------------------------------------------------------------------------- built-ins


def test_built_in_datasets_still_pair_by_stem_across_sub_folders(tmp_path):
    # Cityscapes' stems are unique across cities: a label in another city folder pairs, a repeated stem is refused
    rgb(tmp_path / "leftImg8bit/val/aachen/a_1_leftImg8bit.png")
    label(tmp_path / "gtFine/val/bochum/a_1_gtFine_labelTrainIds.png", [2])
    assert int(build_dataset("cityscapes", tmp_path, "val")[0]["label"][0, 0]) == 2
    rgb(tmp_path / "leftImg8bit/val/bochum/a_1_leftImg8bit.png")
    with pytest.raises(DataError, match=r"bochum/a_1_leftImg8bit\.png: duplicate image stem 'a_1' \(also .*aachen"):
        build_dataset("cityscapes", tmp_path, "val")
