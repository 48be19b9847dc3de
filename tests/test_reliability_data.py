"""Reliability of the dataset readers: every image mode a dataset may hold, and corrupt bytes of any
kind end in a DataError that names the file, never another exception, a crash or a hang (issue 9).
Pairing problems, size mismatches and unknown label values are in test_data_datasets.py."""

from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_config

from dgseg.data import DataError, build_dataset
from dgseg.data.datasets import read_image, read_label
from dgseg.engine.evaluate import evaluate_domain

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def save(path: Path, im: Image.Image, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)
    return path


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging (SIGALRM; pytest runs tests in the main thread)."""
    def expire(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------ image modes


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1", "CMYK"])
def test_images_of_any_8_bit_mode_are_read_as_rgb_uint8(tmp_path, mode):
    im = Image.fromarray(RGB).convert(mode)
    path = save(tmp_path / "x.tif" if mode == "CMYK" else tmp_path / "x.png", im, "TIFF" if mode == "CMYK" else "PNG")
    arr = read_image(path)
    assert arr.shape == (12, 16, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, np.asarray(im.convert("RGB")))


def test_rgba_keeps_the_colour_and_drops_the_alpha(tmp_path):
    rgba = np.dstack([RGB, np.zeros((12, 16), np.uint8)])  # fully transparent: the colour must survive
    np.testing.assert_array_equal(read_image(save(tmp_path / "x.png", Image.fromarray(rgba))), RGB)


def test_16_bit_grayscale_keeps_its_high_byte(tmp_path):
    gray = RNG.integers(0, 65536, (12, 16)).astype(np.uint16)
    path = save(tmp_path / "x.png", Image.fromarray(gray))
    assert Image.open(path).mode == "I;16"
    arr = read_image(path)
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, np.repeat((gray >> 8).astype(np.uint8)[..., None], 3, axis=2))


def test_16_bit_rgb_keeps_its_high_bytes(tmp_path):
    from test_data_datasets import png16_rgb

    deep = RNG.integers(0, 65536, (12, 16, 3)).astype(np.uint16)
    np.testing.assert_array_equal(read_image(png16_rgb(tmp_path / "x.png", deep)), (deep >> 8).astype(np.uint8))


def test_float_and_out_of_range_32_bit_images_are_refused_naming_the_file(tmp_path):
    path = save(tmp_path / "f.tif", Image.fromarray(np.full((4, 4), 0.5, np.float32)), "TIFF")
    with pytest.raises(DataError, match=r"f\.tif: floating-point image"):
        read_image(path)
    path = save(tmp_path / "i.tif", Image.fromarray(np.full((4, 4), -7, np.int32)), "TIFF")
    with pytest.raises(DataError, match=r"i\.tif: 32-bit integer image with values -7\.\.-7"):
        read_image(path)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_label_files_with_colour_or_alpha_are_refused_naming_the_file(tmp_path, mode):
    path = save(tmp_path / "lab.png", Image.fromarray(RGB).convert(mode))
    with pytest.raises(DataError, match=rf"lab\.png: label image has mode {mode}; expected a single-channel"):
        read_label(path)


def test_16_bit_label_values_are_kept(tmp_path):
    raw = np.array([[7, 300], [65535, 0]], np.uint16)
    np.testing.assert_array_equal(read_label(save(tmp_path / "l.png", Image.fromarray(raw))), raw)


def with_orientation(path: Path, array: np.ndarray, orientation: int, fmt: str = "PNG") -> Path:
    im = Image.fromarray(array)
    exif = im.getexif()
    exif[0x0112] = orientation  # the EXIF Orientation tag
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    return path


@pytest.mark.parametrize("orientation, turned", [(1, RGB), (3, np.rot90(RGB, 2)), (6, np.rot90(RGB, -1)),
                                                 (8, np.rot90(RGB, 1)), (2, RGB[:, ::-1])])
def test_images_are_turned_by_their_exif_orientation_as_opencv_imread_color_does(tmp_path, orientation, turned):
    path = with_orientation(tmp_path / "x.png", RGB, orientation)
    arr = read_image(path)
    np.testing.assert_array_equal(arr, turned)
    cv2 = pytest.importorskip("cv2")  # Rein's loader: mmcv.imfrombytes -> cv2.imdecode(IMREAD_COLOR)
    np.testing.assert_array_equal(arr, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])  # the tags that turn by 90 degrees: W and H swap
def test_labels_are_read_as_stored_and_a_label_of_an_exif_turned_image_is_refused_saying_so(tmp_path, orientation):
    raw = np.zeros((12, 16), np.uint8)
    lab = with_orientation(tmp_path / "labels" / "a.png", raw, orientation)
    assert read_label(lab).shape == (12, 16)  # mmcv reads labels 'unchanged': no orientation applied
    with_orientation(tmp_path / "images" / "a.jpg", RGB, orientation, "JPEG")
    with pytest.raises(DataError, match=rf"a\.png: label is 16x12 but its image .*a\.jpg is 12x16 \(WxH\); expected the "
                                        rf"same size \(the image's EXIF orientation tag \({orientation}\) turns it"):
        build_dataset("folder", tmp_path, "train")[0]


@pytest.mark.parametrize("orientation", [None, 1, 3])  # no tag, upright, turned 180 degrees: W and H as stored
def test_a_transposed_label_of_an_image_without_a_turning_exif_tag_is_called_transposed(tmp_path, orientation):
    if orientation is None:
        save(tmp_path / "images" / "a.jpg", Image.fromarray(RGB), "JPEG")
    else:
        with_orientation(tmp_path / "images" / "a.jpg", RGB, orientation, "JPEG")
    save(tmp_path / "labels" / "a.png", Image.fromarray(np.zeros((16, 12), np.uint8)))
    with pytest.raises(DataError) as caught:
        build_dataset("folder", tmp_path, "train")[0]
    assert "a.png: label is 12x16 but its image" in str(caught.value)
    assert "a.jpg is 16x12 (WxH); expected the same size (the label is the image's size transposed: width and height " \
           "swapped)" in str(caught.value)
    assert "EXIF" not in str(caught.value)


# ------------------------------------------------------------------------------------------ corrupt bytes


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RGB).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def png_with_bad_zlib_checksum(mode: str = "L") -> bytes:
    """A PNG whose chunks are intact (CRCs right) but whose compressed pixels fail zlib's check: the
    file that made torchvision's libpng decoder crash the whole process."""
    data, out, pos = encoded("PNG", mode), b"\x89PNG\r\n\x1a\n", 8
    while pos < len(data):
        n = struct.unpack(">I", data[pos: pos + 4])[0]
        tag, body = data[pos + 4: pos + 8], data[pos + 8: pos + 8 + n]
        if tag == b"IDAT":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        out += struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        pos += 12 + n
    return out


READERS = {
    "image": read_image,
    "label": read_label,
    "16-bit label": lambda p: read_label(p, "png16"),
}


@pytest.mark.parametrize("reader", READERS)
def test_a_png_with_a_bad_zlib_checksum_is_a_data_error_not_a_crash(tmp_path, reader):
    path = tmp_path / "bad.png"
    path.write_bytes(png_with_bad_zlib_checksum())
    with pytest.raises(DataError, match=r"bad\.png: unreadable or truncated"):
        READERS[reader](path)


def fuzz_cases(n: int, seed: int = 0):
    """Random bytes, truncations, bit flips and valid headers with garbage after, of real files."""
    rnd = random.Random(seed)
    seeds = [encoded("PNG"), encoded("PNG", "L"), encoded("PNG", "P"), encoded("JPEG"), encoded("BMP"),
             encoded("TIFF"), encoded("GIF", "P"), encoded("WEBP"),
             png_with_bad_zlib_checksum(), png_with_bad_zlib_checksum("RGB")]
    for i in range(n):
        base = seeds[i % len(seeds)]
        kind = i // len(seeds) % 4
        if kind == 0:
            yield base[: rnd.randrange(len(base))]
        elif kind == 1:
            data = bytearray(base)
            for _ in range(rnd.randint(1, 8)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            yield bytes(data)
        elif kind == 2:
            yield rnd.randbytes(rnd.randrange(300))
        else:
            yield base[:16] + rnd.randbytes(rnd.randrange(300))


def test_readers_fed_random_and_broken_bytes_raise_only_data_errors_naming_the_file(tmp_path):
    path = tmp_path / "fuzzed.png"
    outcomes = {"read": 0, "DataError": 0}
    with time_limit(60), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning on a garbled header
        for data in fuzz_cases(144):
            path.write_bytes(data)
            for read in READERS.values():
                try:
                    read(path)
                    outcomes["read"] += 1
                except DataError as e:
                    assert str(path) in str(e)
                    outcomes["DataError"] += 1
    assert outcomes["DataError"] > 200  # most of them are broken, a few bit flips decode anyway


def test_a_folder_dataset_of_fuzzed_images_fails_item_by_item_with_data_errors(tmp_path):
    cases = list(fuzz_cases(36, seed=1))
    for i, data in enumerate(cases):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{i:03d}.png").write_bytes(data)
        save(tmp_path / "labels" / f"{i:03d}.png", Image.fromarray(np.zeros((12, 16), np.uint8)))
    ds = build_dataset("folder", tmp_path)
    with time_limit(60), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(ds)):
            try:
                item = ds[i]
            except DataError as e:
                assert f"{i:03d}.png" in str(e)
            else:
                assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3


# ------------------------------------------------------------------------------------------ skipping


SKIP_HINT = "; leave such files out with --set data.on_error=skip (on_error='skip' in Python)"


def bad_sample(root: Path, name: str) -> None:
    """A good sample d and a bad one: a, a label one row taller than its image; b, a colour label; c, a
    truncated image."""
    for stem in (name, "d"):
        save(root / "images" / f"{stem}.png", Image.fromarray(RGB))
        save(root / "labels" / f"{stem}.png", Image.fromarray(np.zeros((13 if stem == "a" else 12, 16), np.uint8)))
    if name == "b":
        save(root / "labels" / "b.png", Image.fromarray(RGB))
    if name == "c":
        (root / "images" / "c.png").write_bytes((root / "images" / "c.png").read_bytes()[:30])


@pytest.mark.parametrize("name, problem", [("a", r"a\.png: label is 16x13 but its image .*a\.png is 16x12 \(WxH\); "
                                                 r"expected the same size"),
                                           ("b", r"b\.png: label image has mode RGB; expected a single-channel PNG"),
                                           ("c", r"c\.png: unreadable or truncated image")])
def test_a_bad_sample_under_on_error_raise_says_how_to_skip_it_in_training_and_evaluation(tmp_path, name, problem):
    bad_sample(tmp_path, name)
    ds = build_dataset("folder", tmp_path)
    with pytest.raises(DataError, match=problem) as caught:
        ds[0]  # what a training step reads
    assert str(caught.value).endswith(SKIP_HINT) and str(caught.value).count("data.on_error") == 1
    cfg = tiny_config()  # on_error: raise, the default
    spec = type(cfg.data.train[0])(name="folder", root=str(tmp_path), split="all")
    with pytest.raises(DataError, match=problem) as caught:  # evaluation reads the same items
        evaluate_domain(torch.nn.Identity(), spec, cfg, torch.device("cpu"), progress=False)
    assert str(caught.value).endswith(SKIP_HINT)
    assert ds.samples and not ds.skipped  # nothing was skipped: the hint is advice only


def tree(root: Path, bad: set[int], n: int = 4) -> None:
    for i in range(n):
        path = save(root / "images" / f"{i}.png", Image.fromarray(RGB))
        if i in bad:
            path.write_bytes(path.read_bytes()[:30])
        save(root / "labels" / f"{i}.png", Image.fromarray(np.full((12, 16), i, np.uint8)))


def test_an_item_standing_in_for_bad_samples_says_which(tmp_path):
    tree(tmp_path, bad={0, 1})
    ds = build_dataset("folder", tmp_path, on_error="skip")
    with pytest.warns(UserWarning):
        first = ds[0]
    assert first["path"].endswith("2.png") and [Path(p).name for p, _ in first["skipped"]] == ["0.png", "1.png"]
    again = ds[1]  # 1 is known bad by now: no second warning, but the item still says it stands in for it
    assert again["path"].endswith("2.png") and [Path(p).name for p, _ in again["skipped"]] == ["1.png"]
    assert "skipped" not in ds[2] and len(ds.skipped) == 2


class Constant(torch.nn.Module):
    """Predicts class 0 everywhere: IoU counts tell which images were seen."""

    def predict(self, image, **kwargs):
        scores = torch.zeros(image.shape[0], 19, *image.shape[-2:])
        scores[:, 0] = 1
        return scores


@pytest.mark.filterwarnings("ignore:folder. skipping a bad sample:UserWarning")
@pytest.mark.filterwarnings("ignore:folder. 1 files left out while pairing:UserWarning")
def test_evaluation_with_skip_scores_each_good_image_once_and_records_every_file_left_out(tmp_path):
    """A bad sample is left out, not replaced by a stand-in counted twice; it and an image left out while pairing
    (no label) are both in the result with their reasons and counted in eval.md; ``images`` is the number
    scored; warnings name the domain by its table label."""
    from dgseg.engine.evaluate import write_results

    tree(tmp_path, bad={1})
    save(tmp_path / "images" / "lonely.png", Image.fromarray(RGB))  # no label: left out while pairing
    cfg = tiny_config(data__on_error="skip", data__source=None)
    spec = type(cfg.data.train[0])(name="folder", root=str(tmp_path), split="all", label="site-a")

    with pytest.warns(UserWarning, match=r"eval site-a: 2 files left out of the metric \(data.on_error=skip; 1 while "
                                         r"pairing images with labels\): .*1\.png, .*lonely\.png"):
        result = evaluate_domain(Constant(), spec, cfg, torch.device("cpu"), progress=False)
    assert result["images"] == 3  # 0, 2 and 3; not the 4 pairs listed
    (bad, lonely) = result["skipped"]
    assert bad["file"] == str(tmp_path / "images" / "1.png") and "unreadable or truncated image" in bad["reason"]
    assert "while" not in bad
    assert lonely == {"file": str(tmp_path / "images" / "lonely.png"), "while": "listing files",
                      "reason": f"image without a label: expected lonely.png under {tmp_path / 'labels'}"}
    iou = result["IoU"]
    assert iou[0] == pytest.approx(100.0 / 3) and iou[2] == iou[3] == 0.0 and np.isnan(iou[1])
    write_results({"site-a": result}, cfg, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["domains"]["site-a"]["skipped"] == [bad, lonely]
    md = (tmp_path / "out" / "eval.md").read_text()
    assert ("- site-a: 2 files left out, 3 scored (1 left out while pairing images with labels, 1 while reading)\n"
            f"  - {bad['file']}: {bad['reason']}\n  - {lonely['file']}: {lonely['reason']}\n") in md


@pytest.mark.filterwarnings("ignore:folder. skipping a bad sample:UserWarning")
def test_progress_bars_and_warnings_name_each_domain_by_its_table_label(tmp_path, capsys):
    """Two `folder` entries: each is named by its label, as in the tables, not both 'folder'."""
    from dgseg.engine.evaluate import evaluate

    tree(tmp_path / "a", bad=set())
    tree(tmp_path / "b", bad={0})
    val = [{"name": "folder", "root": str(tmp_path / x), "split": "all", "label": f"site-{x}"} for x in "ab"]
    cfg = tiny_config(data__on_error="skip", data__val=val, data__source="site-a")
    with pytest.warns(UserWarning, match=r"^eval site-b: 1 files left out of the metric") as caught:
        assert list(evaluate(Constant(), cfg, progress=True)) == ["site-a", "site-b"]
    bars = capsys.readouterr().err
    assert "eval site-a" in bars and "eval site-b" in bars and "eval folder" not in bars
    assert not [w for w in caught if "eval folder" in str(w.message)]


@pytest.mark.filterwarnings("ignore:folder. skipping a bad sample:UserWarning")
@pytest.mark.filterwarnings("ignore:eval .*files left out of the metric:UserWarning")
def test_the_corruption_results_list_the_files_left_out_as_eval_json_does(tmp_path, monkeypatch):
    from dgseg.engine import robustness
    from dgseg.engine.robustness import evaluate_corruptions

    monkeypatch.setattr(robustness, "corrupt", lambda rgb, *args: rgb)  # these images are below its 32 px

    tree(tmp_path, bad={1})
    cfg = tiny_config(data__on_error="skip", data__source=None)
    spec = type(cfg.data.train[0])(name="folder", root=str(tmp_path), split="all", label="site-a")
    found = evaluate_corruptions(Constant(), cfg, ["fog"], [1], device=torch.device("cpu"),
                                 progress=False, specs=[spec])["domains"]["site-a"]
    assert found["images"] == 3 and [Path(s["file"]).name for s in found["skipped"]] == ["1.png"]
