"""``dgseg data check`` warns (and still passes) about what is legal but likely a mistake: raw label values a
``label_map`` does not list (read as ignore by definition) and classes without a pixel; a ``--label-map``
with a key written twice is refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from dgseg.cli import main
from dgseg.data.check import check_dataset, run_check

CLASSES = {"names": ["background", "crack", "rust"]}


def pair(root: Path, stem: str, values, shape=(4, 8)) -> Path:
    """An image and its label PNG under ``root``/train; ``values`` repeated over the label (8 or 16 bit)."""
    for d in ("images", "labels"):
        (root / "train" / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(root / "train" / "images" / f"{stem}.png")
    arr = np.resize(np.asarray(values, np.uint16 if max(values) > 255 else np.uint8), shape)
    path = root / "train" / "labels" / f"{stem}.png"
    Image.fromarray(arr).save(path)
    return path


def check(root: Path, label_map=None, **kwargs):
    extra = {} if label_map is None else {"label_map": label_map}
    return check_dataset("folder", str(root), "train", classes=CLASSES, patch_size=2, **extra, **kwargs)


def test_a_value_the_label_map_forgets_is_a_warning_with_its_share_and_files(tmp_path):
    a = pair(tmp_path, "a", [0, 10, 20, 30])  # 8 px each of 32
    b = pair(tmp_path, "b", [0, 10, 20, 50])
    report = check(tmp_path, {10: 0, 20: 1, 30: 2})  # 0 and 50 unlisted: ignore, unannounced before
    assert report.ok and report.problems == []
    assert {v: (u.pixels, u.files, u.examples) for v, u in report.unlisted.items()} == {
        0: (16, 2, [str(a), str(b)]), 50: (8, 1, [str(b)])}
    unlisted, = [w for w in report.warnings if "does not list" in w]
    assert unlisted == (
        "label values the label_map does not list are read as 255 (ignore); map each to its class, or list it as "
        f"VALUE: 255 to mean ignore:\n        raw 0: 25.00% of all pixels (16) in 2 files, e.g. {a}, {b}"
        f"\n        raw 50: 12.50% of all pixels (8) in 1 file, e.g. {b}")
    out = io.StringIO()
    assert run_check("folder", str(tmp_path), "train", out=out, label_map={10: 0, 20: 1, 30: 2},
                     patch_size=2) == 0  # the cityscapes names here: 16 of 19 classes without a pixel
    text = out.getvalue()
    assert "  warnings (2):\n    - label values the label_map does not list" in text
    assert text.endswith("  problems: none\nOK (2 warnings)\n")


def test_values_mapped_to_255_on_purpose_are_no_warning(tmp_path):
    pair(tmp_path, "a", [0, 10, 20, 30, 255])
    report = check(tmp_path, {0: 255, 10: 0, 20: 1, 30: 2, 255: 255})
    assert report.unlisted == {} and report.warnings == []
    assert report.format().endswith("  problems: none\nOK")


def test_stray_values_are_named_with_the_file_they_are_in(tmp_path):
    pair(tmp_path, "a", [10, 20, 30, 30])
    stray = pair(tmp_path, "b", [10, 20, 60, 254])
    report = check(tmp_path, {10: 0, 20: 1, 30: 2})
    assert sorted(report.unlisted) == [60, 254] and report.unlisted[254].examples == [str(stray)]
    assert f"raw 60: 12.50% of all pixels (8) in 1 file, e.g. {stray}" in report.format()


def test_sixteen_bit_values_and_more_than_shown_are_summed(tmp_path):
    from dgseg.data.check import SHOWN  # the values listed one by one

    values = [1000 + i for i in range(SHOWN + 2)] + [7] * 20  # 7 listed; the rest one pixel group each
    pair(tmp_path, "a", values, shape=(8, len(values)))
    report = check(tmp_path, {7: 0, 1000: 1})
    assert sorted(report.unlisted) == [1001 + i for i in range(SHOWN + 1)]
    text = report.format()
    assert "raw 1001: 3.12% of all pixels (8) in 1 file" in text  # 8 of 256 px
    assert f"raw {1000 + SHOWN}: " in text and f"raw {1001 + SHOWN}: " not in text
    assert "and 1 more value: 3.12% of all pixels (8)" in text


def test_a_class_without_a_pixel_is_a_warning_with_or_without_a_label_map(tmp_path):
    pair(tmp_path, "a", [0, 1, 255])  # classes 0 and 1, no rust
    report = check(tmp_path)
    assert report.ok and report.unlisted is None
    assert report.warnings == ["classes without a pixel in split train: 2 rust"]
    assert "  warnings (1):\n    - classes without a pixel in split train: 2 rust\n" in report.format()
    assert check(tmp_path, {0: 0, 1: 1, 255: 255}).warnings == ["classes without a pixel in split train: 2 rust"]
    pair(tmp_path, "b", [2])
    assert check(tmp_path).warnings == []


def test_reduce_zero_label_names_its_values_itself(tmp_path):
    """0 -> ignore and 1..K -> 0..K-1 are the rule, not an omission; other values stay problems (unknown)."""
    pair(tmp_path, "a", [0, 1, 2, 3])
    report = check(tmp_path, reduce_zero_label=True)
    assert report.ok and report.unlisted is None and report.warnings == []
    pair(tmp_path, "b", [4])
    assert "label values [4] are not defined by folder" in check(tmp_path, reduce_zero_label=True).problems[0]


def test_a_label_map_key_written_twice_is_refused_naming_the_option_and_the_key(tmp_path, capsys):
    pair(tmp_path, "a", [10, 20])
    argv = ["data", "check", "folder", str(tmp_path), "--split", "train", "--patch-size", "2", "--label-map"]
    assert main([*argv, "{10: 0, 10: 1}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("dgseg data check: error: --label-map '{10: 0, 10: 1}': line 1: key 10 is written twice in one mapping "
                   "(first on line 1); expected each key once"), err
    assert main([*argv, "{10: 0, 20: 1, 255: 255}"]) == 0


def test_a_label_map_on_a_dataset_other_than_folder_is_refused_by_name(capsys):
    """It was a TypeError traceback from the dataset's constructor."""
    assert main(["data", "check", "synthetic-game", "none", "--split", "val", "--label-map", "{1: 0}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dgseg data check: error: --label-map: for 'folder' datasets only; 'synthetic-game' maps its own"), err
    assert main(["data", "check", "gtav", "data/gta", "--reduce-zero-label"]) == 2
    assert "--reduce-zero-label: for 'folder' datasets only; 'gtav'" in capsys.readouterr().err
    assert main(["data", "check", "foldr", "data/mine", "--label-map", "{1: 0}"]) == 2  # a misspelt name is that
    assert "dgseg data check: error: NAME 'foldr': unknown dataset; expected one of gtav, " in capsys.readouterr().err


def test_an_option_that_does_not_fit_is_a_usage_error_and_a_dataset_problem_is_a_failed_check(tmp_path, capsys):
    """Exit 2 naming the option, as every command's usage errors; exit 1 is kept for what the dataset holds."""
    pair(tmp_path, "a", [1, 2])
    pair(tmp_path, "b", [1, 2])
    argv = ["data", "check", "folder", str(tmp_path), "--patch-size", "2"]

    def refused(*extra: str, command=argv) -> str:
        assert main([*command, *extra]) == 2
        captured = capsys.readouterr()
        assert "problems" not in captured.out  # no report: nothing was checked
        return captured.err.strip().splitlines()[-1]

    assert refused("--classes", "bogus").startswith(
        "dgseg data check: error: --classes: 'bogus' is neither a preset (cityscapes, synthia16, synthia13) nor a file")
    assert refused("--split", "val") == (
        f"dgseg data check: error: --split: {tmp_path}/val/images: image folder of folder split 'val' not found "
        f"(found split folders train); expected {tmp_path}/val/images and {tmp_path}/val/labels, or images/ and "
        f"labels/ directly under {tmp_path} (no split folders)")
    assert refused("--label-map", "{1: 300}").startswith("dgseg data check: error: --label-map: label_map maps 1 -> 300")
    assert refused("--split", "nope", command=["data", "check", "synthetic-game"]) == (
        "dgseg data check: error: --split: synthetic split 'nope' unknown; expected one of ['train', 'val', 'test']")
    (tmp_path / "train" / "labels" / "a.png").unlink()  # the dataset's own problem: a failed check, exit 1
    assert main(argv) == 1
    assert f"{tmp_path}/train/images/a.png: image without a label" in capsys.readouterr().out
