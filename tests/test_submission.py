"""Test-server submissions: the official train ID -> label ID table, dataset splits, names, zip."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image
from tiny_run import tiny_run

from dgseg.cli import main
from dgseg.data import build_dataset
from dgseg.data.labels import CITYSCAPES_ID_TO_TRAIN
from dgseg.engine.inference import load_model, predict_files
from dgseg.engine.submission import CITYSCAPES_TRAIN_TO_LABEL_ID, split_images, to_label_ids
from dgseg.metrics import SegMetric

# cityscapesScripts' labels.py, (label ID, train ID) of the 19 evaluated classes, in table order
OFFICIAL = [(7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9), (23, 10),
            (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18)]


def image(path, seed=0, size=(40, 56)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_table_is_the_official_one_and_inverts_the_loader_table():
    assert {t: i for i, t in OFFICIAL} | {255: 0} == CITYSCAPES_TRAIN_TO_LABEL_ID
    assert {t: i for i, t in CITYSCAPES_ID_TO_TRAIN.items()} | {255: 0} == CITYSCAPES_TRAIN_TO_LABEL_ID


def test_label_ids_of_every_train_id_and_ignore():
    train_ids = np.array([[*range(19), 255]], dtype=np.uint8)
    assert to_label_ids(train_ids).tolist() == [[i for i, _ in OFFICIAL] + [0]]
    with pytest.raises(ValueError, match=r"\[19\].*not Cityscapes train IDs"):
        to_label_ids(np.array([[19]]))


def test_round_trip_through_the_cityscapes_loader_gives_100_miou(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.choice([*range(19), 255], size=(2, 20, 24)).astype(np.uint8)
    gt[0, 0, :20] = [*range(19), 255]  # every class and ignore present
    (tmp_path / "gtFine" / "val" / "aachen").mkdir(parents=True)
    for k in range(2):
        stem = f"aachen_000000_00000{k}"
        image(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png", k, (20, 24))
        Image.fromarray(to_label_ids(gt[k])).save(tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png")
    ds = build_dataset("cityscapes", tmp_path, "val")
    metric = SegMetric(num_classes=19)
    for k in range(2):
        read = ds[k]["label"].numpy()
        assert (read == gt[k]).all()
        metric.update(read, gt[k].astype(np.int64))
    result = metric.compute()
    assert result["mIoU"] == 100.0 and not any(np.isnan(result["IoU"]))


def test_split_images_keep_sub_folders_and_the_image_stems(tmp_path):
    image(tmp_path / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png")
    files = split_images("cityscapes", tmp_path, "test")
    assert [str(rel) for _, rel in files] == ["test/berlin/berlin_000000_000019_leftImg8bit"]
    for c in ("fog", "night", "rain", "snow"):
        image(tmp_path / "rgb_anon" / c / "test" / "GOPR0475" / f"GOPR0475_frame_{c}_rgb_anon.png")
    assert [str(r) for _, r in split_images("acdc-night", tmp_path, "test")] == [
        "night/test/GOPR0475/GOPR0475_frame_night_rgb_anon"]
    assert [str(r).split("/")[0] for _, r in split_images("acdc", tmp_path, "test")] == ["fog", "night", "rain", "snow"]
    with pytest.raises(FileNotFoundError, match="leftImg8bit/val"):
        split_images("cityscapes", tmp_path, "val")
    with pytest.raises(ValueError, match="submissions are written for cityscapes"):
        split_images("bdd100k", tmp_path, "test")


def test_cli_writes_label_id_pngs_of_a_test_split_and_zips_them(tmp_path, run, capsys):
    root, out = tmp_path / "cs", tmp_path / "sub"
    src = image(root / "leftImg8bit" / "test" / "bonn" / "bonn_000000_000019_leftImg8bit.png")
    assert main(["predict", "--checkpoint", str(run), "--format", "cityscapes-ids", "--dataset", "cityscapes",
                 "--root", str(root), "--split", "test", "--out", str(out), "--zip", "--no-progress"]) == 0
    written = out / "test" / "bonn" / "bonn_000000_000019_leftImg8bit.png"
    ids = np.array(Image.open(written))
    # the same prediction in train IDs, through the plain predict path, mapped with the table
    model, cfg = load_model(run)
    (plain,) = predict_files(model, cfg, [str(src)], tmp_path / "plain", progress=False)
    assert ids.shape == (40, 56) and (ids == to_label_ids(np.array(Image.open(plain)))).all()
    with zipfile.ZipFile(f"{out}.zip") as zf:
        assert zf.namelist() == ["test/bonn/bonn_000000_000019_leftImg8bit.png"]
        assert zf.read(zf.namelist()[0]) == written.read_bytes()


def test_cli_acdc_all_four_conditions_and_errors(tmp_path, run, capsys):
    root, out = tmp_path / "acdc", tmp_path / "sub"
    for c in ("fog", "night", "rain", "snow"):
        image(root / "rgb_anon" / c / "test" / "GP01" / f"GP01_frame_00000{len(c)}_rgb_anon.png", size=(36, 40))
    assert main(["predict", "--checkpoint", str(run), "--format", "cityscapes-ids", "--dataset", "acdc",
                 "--root", str(root), "--out", str(out), "--no-progress"]) == 0
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert got == [f"{c}/test/GP01/GP01_frame_00000{len(c)}_rgb_anon.png" for c in ("fog", "night", "rain", "snow")]
    assert set(np.unique(np.array(Image.open(out / got[0])))) <= {i for i, _ in OFFICIAL}
    assert main(["predict", "--checkpoint", str(run), "--out", str(out)]) == 2
    assert "IMAGE_OR_DIR arguments or --dataset" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(run), "--dataset", "acdc", "--out", str(out)]) == 2
    assert "--root" in capsys.readouterr().err


def test_label_ids_need_the_19_cityscapes_classes(tmp_path, run, capsys):
    src = image(tmp_path / "a.png")
    code = main(["predict", "--checkpoint", str(run), str(src), "--format", "cityscapes-ids", "--out",
                 str(tmp_path / "o"), "--set", "model.num_classes=7"])
    assert code == 2 and "num_classes" in capsys.readouterr().err


def test_a_symlink_at_an_output_name_is_replaced_never_written_through(tmp_path, run):
    from dgseg.engine.submission import write_predictions

    model, cfg = load_model(run)
    src = image(tmp_path / "in" / "x_leftImg8bit.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere.png").write_bytes(b"keep")
    (tmp_path / "out" / "x_leftImg8bit.png").symlink_to(tmp_path / "elsewhere.png")
    written = write_predictions(model, cfg, [(src, src.relative_to(tmp_path / "in").with_suffix(""))],
                                tmp_path / "out", "cityscapes-ids", progress=False)
    assert (tmp_path / "elsewhere.png").read_bytes() == b"keep"  # the link's target is untouched
    assert written and all(not p.is_symlink() for p in written)
    assert not (tmp_path / "out" / "x_leftImg8bit.png").is_symlink()


def digests(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_that_is_an_input_image_is_refused_before_anything_is_written(tmp_path, run, capsys):
    photos = tmp_path / "photos"
    holiday = image(photos / "holiday.png")
    before = digests(photos)
    # label IDs are named after the image: --out the input folder would put each prediction over its image
    assert main(["predict", "--checkpoint", str(run), str(photos), "--out", str(photos), "--format",
                 "cityscapes-ids", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{holiday}: an input image would be replaced by its own prediction, written to {holiday}" in err
    assert "give --out a folder that holds no input images" in err
    assert digests(photos) == before
    # the same for a dataset split predicted into its own image folder
    root = tmp_path / "cs"
    src = image(root / "leftImg8bit" / "test" / "bonn" / "bonn_000000_000019_leftImg8bit.png")
    before = digests(root)
    assert main(["predict", "--checkpoint", str(run), "--format", "cityscapes-ids", "--dataset", "cityscapes",
                 "--root", str(root), "--out", str(root / "leftImg8bit"), "--no-progress"]) == 2
    assert f"{src}: an input image would be replaced by its own prediction" in capsys.readouterr().err
    assert digests(root) == before


def test_a_train_id_output_named_like_another_input_is_refused_with_both_names(tmp_path, run, capsys):
    photos = tmp_path / "photos"
    image(photos / "x.png")
    color = image(photos / "x_color.png", seed=1)  # the user's own file, beside x.png
    before = digests(photos)
    for extra in ([], ["--zip", str(tmp_path / "p.zip")]):  # the plain writer and the submission writer
        assert main(["predict", "--checkpoint", str(run), str(photos), "--out", str(photos), "--no-progress",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert f"{color}: an input image would be replaced by the prediction of {photos / 'x.png'}" in err
        assert digests(photos) == before and not (tmp_path / "p.zip").exists()
    # into another folder nothing collides
    assert main(["predict", "--checkpoint", str(run), str(photos), "--out", str(tmp_path / "pred"),
                 "--no-progress"]) == 0
    assert (tmp_path / "pred" / "x_color_color.png").is_file() and digests(photos) == before


def test_an_existing_zip_is_refused_without_force_and_never_an_input_image(tmp_path, run, capsys):
    src, out = image(tmp_path / "in" / "a.png"), tmp_path / "sub"
    default = tmp_path / "sub.zip"
    default.write_bytes(b"the user's earlier submission")
    args = ["predict", "--checkpoint", str(run), str(src), "--out", str(out), "--no-progress", "--zip"]
    assert main(args) == 2
    assert f"{default}: already exists; pass --force to replace it, or choose another --zip FILE" in (
        capsys.readouterr().err)
    assert default.read_bytes() == b"the user's earlier submission" and not out.exists()  # checked first
    assert main([*args, "--force"]) == 0
    with zipfile.ZipFile(default) as zf:
        assert zf.namelist() == ["a_labelTrainIds.png"]
    before = src.read_bytes()
    assert main([*args, str(src), "--force"]) == 2  # --force replaces an old zip, never an input image
    err = capsys.readouterr().err
    assert f"{src}: an input image would be replaced by the --zip file" in err
    assert "give --zip a path that is no input image (nothing was written)" in err  # the option that named it
    assert src.read_bytes() == before


@pytest.mark.parametrize("extra", [[], ["--zip"], ["--format", "cityscapes-ids"]])
def test_every_predict_path_runs_on_the_gpu_when_present_in_the_evaluation_precision(tmp_path, run, monkeypatch,
                                                                                     extra):
    import torch

    from dgseg.engine import precision
    from dgseg.models.segmentor import Segmentor

    moved, resolved = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: record the move, stay on CPU
    monkeypatch.setattr(Segmentor, "to", lambda model, device: moved.append(str(device)) or model)
    resolve = precision.resolve_amp
    monkeypatch.setattr(precision, "resolve_amp", lambda amp, device, training=True:
                        resolved.append((amp, training)) or resolve(amp, device, training))
    src = image(tmp_path / "in" / "a.png")
    assert main(["predict", "--checkpoint", str(run), str(src), "--out", str(tmp_path / "p"), "--no-progress",
                 *extra]) == 0
    assert moved == ["cuda"]
    assert resolved == [(load_model(run)[1].train.amp, False)]  # train.amp as resolved for inference


def test_the_readmes_submission_examples_use_one_run_folder_for_one_model():
    """README, "Test-server submissions": the Cityscapes and ACDC uploads come from the same Cityscapes-trained
    model, so every example names one run folder, the one its comment says the config was trained into."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Test-server submissions (Cityscapes, ACDC)")[1].split("\n#")[0]
    used = set(re.findall(r"--checkpoint (\S+)", section))
    trained = re.findall(r"trained with --out (\S+?)\)", section)
    assert len(re.findall(r"--checkpoint ", section)) == 4 and len(used) == 1 and trained == sorted(used), (used, trained)


def test_resize_scales_each_image_first_and_writes_the_prediction_at_its_own_size(tmp_path, run, capsys,
                                                                                   monkeypatch):
    """As evaluation does with a data.val entry's resize: W,H as mmseg's Resize(keep_ratio=True) (the longer side
    at most the larger of W and H, the shorter at most the smaller: 30,100 scales 40 x 60 by 0.75), or a factor."""
    from dgseg.models.segmentor import Segmentor

    seen = []
    scores = Segmentor._scores
    monkeypatch.setattr(Segmentor, "_scores", lambda self, x: seen.append(tuple(x.shape[-2:])) or scores(self, x))
    image(tmp_path / "in" / "a.png", size=(40, 60))
    for resize, size in (("30,100", (30, 45)), ("0.5", (20, 30)), ("120, 80", (80, 120)), (None, (40, 60))):
        seen.clear()
        out = tmp_path / f"out_{resize}"
        assert main(["predict", "--checkpoint", str(run), str(tmp_path / "in"), "--out", str(out), "--mode", "whole",
                     "--no-progress", *(["--resize", resize] if resize else [])]) == 0
        assert seen == [size], resize  # what the model saw
        assert Image.open(out / "a_labelTrainIds.png").size == (60, 40)  # written at the image's own size
    assert main(["predict", "--checkpoint", str(run), str(tmp_path / "in"), "--out", str(tmp_path / "small"),
                 "--resize", "0.1", "--no-progress"]) == 2
    assert f"{tmp_path / 'in' / 'a.png'} (--resize: 6x4): " in capsys.readouterr().err
    for bad in ("0", "4.5", "a,b", "1,2,3", "0,10", "10,9000"):
        with pytest.raises(SystemExit) as exc:
            main(["predict", "--checkpoint", str(run), "x.png", "--out", str(tmp_path / "o"), "--resize", bad])
        assert exc.value.code == 2
        assert f"argument --resize: {bad!r}: expected W,H (e.g. 1024,512" in capsys.readouterr().err


def test_a_dataset_split_is_predicted_as_eval_runs_its_data_val_entry_unless_told_otherwise(tmp_path, capsys,
                                                                                           monkeypatch):
    """mmseg predicts a test split through the config's test pipeline: ``--dataset NAME`` takes the resize and
    mode of the checkpoint's data.val entries of NAME; --resize / --mode win; entries that disagree need them."""
    from dgseg.models.segmentor import Segmentor

    run = tiny_run(tmp_path / "run", data__val=[
        {"name": "cityscapes", "root": "nowhere", "split": "val", "resize": [28, 20], "mode": "whole"},
        {"name": "acdc-fog", "root": "nowhere", "split": "val", "resize": 0.5},
        {"name": "acdc-night", "root": "nowhere", "split": "val", "resize": 0.5},
        {"name": "acdc-rain", "root": "nowhere", "split": "val", "resize": 0.5},
        {"name": "acdc-snow", "root": "nowhere", "split": "val", "resize": 0.75}], data__source="cityscapes")
    seen = []
    scores = Segmentor._scores
    monkeypatch.setattr(Segmentor, "_scores", lambda self, x: seen.append(tuple(x.shape[-2:])) or scores(self, x))
    root = tmp_path / "data"
    image(root / "leftImg8bit" / "test" / "bonn" / "bonn_000000_000019_leftImg8bit.png", size=(40, 56))
    for c in ("fog", "night", "rain", "snow"):
        image(root / "rgb_anon" / c / "test" / "GP01" / f"GP01_frame_{c}_rgb_anon.png", size=(40, 56))

    def predict(dataset, *extra):
        seen.clear()
        code = main(["predict", "--checkpoint", str(run), "--dataset", dataset, "--root", str(root), "--split", "test",
                     "--out", str(tmp_path / f"out{len(list(tmp_path.glob('out*')))}"), "--no-progress", *extra])
        return code, list(seen), capsys.readouterr()

    code, sizes, said = predict("cityscapes")  # 56 x 40 into 28 x 20 keeping its ratio
    assert code == 0 and sizes == [(20, 28)]
    assert "--dataset cityscapes: resize (28, 20) and mode whole, as the checkpoint's data.val entry" in said.out
    code, sizes, said = predict("cityscapes", "--resize", "1.0")
    assert code == 0 and sizes == [(40, 56)] and "mode whole, as the checkpoint's data.val entry" in said.out
    code, sizes, said = predict("cityscapes", "--resize", "1.0", "--mode", "slide")
    assert code == 0 and "resize 1.0, mode slide as given (not its data.val entry's)" in said.out
    code, sizes, _ = predict("acdc-fog")  # its entry's factor, mode from eval.mode
    assert code == 0 and sizes == [(20, 28)]
    code, sizes, said = predict("acdc")  # snow's 0.75 disagrees with the other conditions
    assert code == 2 and sizes == [] and "acdc-fog: 0.5" in said.err and "acdc-snow: 0.75); pass --resize" in said.err
    code, sizes, _ = predict("acdc", "--resize", "0.5")
    assert code == 0 and sizes == [(20, 28)] * 4
    bare = tiny_run(tmp_path / "bare")  # no entry of the dataset: each image at its own size
    seen.clear()
    assert main(["predict", "--checkpoint", str(bare), "--dataset", "cityscapes", "--root", str(root), "--split",
                 "test", "--out", str(tmp_path / "bare_out"), "--no-progress"]) == 0
    assert seen == [(40, 56)] and "no data.val entry of it" in capsys.readouterr().out


def test_predict_dataset_refuses_disagreeing_data_val_entries_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """The entries come from the config stored in the checkpoint's header: a conflict costs no model build."""
    from dgseg.engine import inference

    run = tiny_run(tmp_path / "run", data__val=[
        {"name": "acdc-fog", "root": "nowhere", "split": "val", "resize": 0.5},
        {"name": "acdc-snow", "root": "nowhere", "split": "val", "resize": 0.75}], data__source="acdc-fog")
    for c in ("fog", "night", "rain", "snow"):
        image(tmp_path / "data" / "rgb_anon" / c / "test" / "GP01" / f"GP01_frame_{c}_rgb_anon.png")
    loaded, real = [], inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: loaded.append(a) or real(*a, **k))

    def predict(*extra):
        return main(["predict", "--checkpoint", str(run), "--dataset", "acdc", "--root", str(tmp_path / "data"),
                     "--split", "test", "--out", str(tmp_path / "out"), "--no-progress", *extra])

    assert predict() == 2 and loaded == []
    assert "acdc-fog: 0.5, acdc-snow: 0.75, acdc-night (no data.val entry): None" in capsys.readouterr().err
    assert predict("--set", "data.val=[]", "--set", "data.source=null") == 0 and len(loaded) == 1  # overrides apply
    assert "--dataset acdc: no data.val entry of it" in capsys.readouterr().out


def test_predict_dataset_says_its_settings_only_once_the_model_has_loaded(tmp_path, capsys, monkeypatch):
    """The line on the resize and mode it takes from the checkpoint's data.val describes a prediction: where the
    model then fails to load, the refusal is all that is said, not settings for a prediction that never runs."""
    from dgseg.engine import inference

    run = tiny_run(tmp_path / "run", data__val=[
        {"name": "cityscapes", "root": "nowhere", "split": "val", "resize": [28, 20]}], data__source="cityscapes")
    image(tmp_path / "data" / "leftImg8bit" / "test" / "bonn" / "bonn_000000_000019_leftImg8bit.png")

    def refuse(*a, **k):
        raise ValueError("model.backbone.weights: no such file")

    monkeypatch.setattr(inference, "load_model", refuse)
    code = main(["predict", "--checkpoint", str(run), "--dataset", "cityscapes", "--root", str(tmp_path / "data"),
                 "--split", "test", "--out", str(tmp_path / "out"), "--no-progress"])
    said = capsys.readouterr()
    assert code == 2 and "no such file" in said.err and "--dataset cityscapes" not in said.out


def test_two_data_val_entries_of_one_dataset_that_resize_differently_are_not_collapsed_to_the_last():
    """Entries are told apart by their row (``label``, or ``name:split``): two Cityscapes rows at different sizes
    are refused until --resize says which, never the last one's taken silently."""
    from tiny import tiny_config

    from dgseg.engine.submission import dataset_settings

    cfg = tiny_config(data__val=[
        {"name": "cityscapes", "root": "nowhere", "split": "val", "resize": [1024, 512], "label": "citys-half"},
        {"name": "cityscapes", "root": "nowhere", "split": "val", "label": "citys-full", "mode": "slide"}],
        data__source="citys-half")
    with pytest.raises(ValueError, match=r"resize differently \(citys-half: \(1024, 512\), citys-full: None\); "
                                         r"pass --resize"):
        dataset_settings(cfg, "cityscapes", None, None)
    with pytest.raises(ValueError, match=r"different modes \(citys-half: whole, citys-full: slide\); pass --mode"):
        dataset_settings(cfg, "cityscapes", 0.5, None)
    assert dataset_settings(cfg, "cityscapes", 0.5, "whole")[:2] == (0.5, "whole")


def test_an_acdc_condition_without_a_data_val_entry_keeps_its_own_size_not_another_conditions():
    """``--dataset acdc`` over a config that evaluates only acdc-night at half size: fog, rain and snow have no entry
    (their own size, eval.mode), so the conditions differ and --resize must say which; never night's for all."""
    from tiny import tiny_config

    from dgseg.engine.submission import dataset_settings

    cfg = tiny_config(data__val=[{"name": "acdc-night", "root": "nowhere", "split": "val", "resize": 0.5,
                                  "mode": "slide"}], data__source="acdc-night")
    with pytest.raises(ValueError, match=r"resize differently \(acdc-night: 0.5, acdc-fog \(no data.val entry\): "
                                         r"None, .*acdc-snow \(no data.val entry\): None\); pass --resize"):
        dataset_settings(cfg, "acdc", None, None)
    with pytest.raises(ValueError, match=r"different modes \(acdc-night: slide, acdc-fog \(no data.val entry\): "
                                         r"whole, .*\); pass --mode"):
        dataset_settings(cfg, "acdc", 0.5, None)
    assert dataset_settings(cfg, "acdc", 0.5, "slide")[:2] == (0.5, "slide")
    assert dataset_settings(cfg, "acdc-night", None, None)[:2] == (0.5, "slide")  # the condition alone: its entry's
    assert dataset_settings(cfg, "acdc-fog", None, None)[:2] == (None, None)  # no entry: own size, eval.mode


def test_a_prescaled_data_val_entry_is_named_with_its_value():
    from tiny import tiny_config

    from dgseg.engine.submission import dataset_settings

    cfg = tiny_config(data__val=[{"name": "cityscapes", "root": "nowhere", "split": "val", "prescale": 0.5}],
                      data__source="cityscapes")
    with pytest.raises(ValueError, match=r"--dataset cityscapes: the checkpoint's data.val entries set prescale "
                                         r"\(cityscapes: prescale 0.5\), which predict does not apply"):
        dataset_settings(cfg, "cityscapes", None, None)
    assert dataset_settings(cfg, "cityscapes", 0.5, None)[0] == 0.5
