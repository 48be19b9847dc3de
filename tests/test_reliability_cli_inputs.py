"""Bad command-line inputs of every subcommand: each is refused with a message naming the file, option or value
and what is expected (exit code 2, no traceback), or, where dgseg leaves something out, it says so."""

from __future__ import annotations

import pytest
import yaml
from PIL import Image
from tiny import tiny_dict

from dgseg.bench import parse_list
from dgseg.cli import main
from dgseg.config import ConfigError


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_dict()))
    return path


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (90, 120, 30)).save(path)
    return path


def refused(capsys, argv: list[str]) -> str:
    """Runs ``dgseg argv``; asserts exit code 2 and no traceback; returns the error line."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------ CONFIG files and --set


def test_a_config_that_is_a_folder_is_refused_naming_the_folder(tmp_path, capsys):
    err = refused(capsys, ["info", tmp_path])
    assert f"{tmp_path}: is a folder; expected a YAML config file" in err


def test_a_config_that_is_not_text_is_refused_naming_the_file(tmp_path, capsys):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    err = refused(capsys, ["info", path])
    assert f"{path}: not a text file" in err and "expected a YAML config" in err


@pytest.mark.parametrize("override", ["=3", "train..lr=3", ".lr=3"])
def test_an_override_whose_key_has_an_empty_part_is_refused_naming_the_override(config_file, capsys, override):
    err = refused(capsys, ["info", config_file, "--set", override])
    assert f"override '{override}': the key" in err and "has an empty part; expected a dotted config key" in err


# ------------------------------------------------------------------ --out: a file where a folder goes


@pytest.mark.parametrize("command", ["train", "eval", "predict", "demo", "import-rein"])
@pytest.mark.parametrize("inside", [False, True])
def test_an_out_folder_that_is_a_file_is_refused_naming_it_before_any_work(tmp_path, run, config_file, image,
                                                                          capsys, command, inside):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    out = taken / "sub" if inside else taken
    argv = {"train": ["train", config_file], "eval": ["eval", "--checkpoint", run, "--no-progress"],
            "predict": ["predict", "--checkpoint", run, image, "--no-progress"], "demo": ["demo", "--quick"],
            "import-rein": ["import-rein", tmp_path / "rein.pth", "--backbone", tmp_path / "dinov2.pth"]}[command]
    err = refused(capsys, [*argv, "--out", out])
    what = f"is inside {taken}, which is a file" if inside else "is a file"
    assert f"{out}: {what}; --out takes a folder" in err
    assert taken.read_text() == "mine"


def test_report_and_bench_refuse_a_file_as_out(tmp_path, capsys, config_file):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(config_file.read_text())
    err = refused(capsys, ["report", tmp_path / "run", "--out", taken])
    assert f"--out {taken}: is a file; expected a folder for report.html" in err
    for extra in (["--status"], ["--methods", "rein", "--seeds", "0", "--iters", "1"]):
        err = refused(capsys, ["bench", "--out", taken, *extra])
        assert f"--out {taken}: is a file; expected the bench folder" in err
    assert taken.read_text() == "mine"


def test_an_output_file_inside_a_file_is_refused_naming_both_before_any_work(tmp_path, run, image, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    err = refused(capsys, ["export", "--checkpoint", run, "--format", "full", "--out", taken / "m.safetensors"])
    assert f"{taken / 'm.safetensors'}: is inside {taken}, which is a file, not a folder; choose another --out" in err
    err = refused(capsys, ["predict", "--checkpoint", run, image, "--out", tmp_path / "p", "--zip", taken / "p.zip",
                           "--no-progress"])
    assert f"is inside {taken}, which is a file, not a folder; choose another --zip FILE" in err
    assert not (tmp_path / "p").exists() and taken.read_text() == "mine"


# ------------------------------------------------------------------ export --size


@pytest.mark.parametrize("size", [("0", "0"), ("-8", "32")])
def test_an_export_size_below_one_pixel_is_refused_naming_size(tmp_path, run, capsys, size):
    err = refused(capsys, ["export", "--checkpoint", run, "--format", "onnx", "--out", tmp_path / "m.onnx",
                           "--size", *size])
    assert f"--size {size[0]} {size[1]}: expected the ONNX input's height and width in pixels, each 1 or more" in err


@pytest.mark.parametrize(("size", "why"), [(("9", "200000"), "a side over 8192 px"),
                                         (("4096", "4097"), "16,781,312 px, more than 4096 x 4096")])
def test_an_absurd_export_size_is_refused_naming_size_before_the_model_loads(tmp_path, capsys, size, why):
    """9 x 200000 ran out of memory in the onnxruntime check; Mapillary-size 2048 x 4096 stays allowed."""
    pytest.importorskip("onnx")
    argv = ["export", "--checkpoint", tmp_path / "none", "--format", "onnx", "--out", tmp_path / "m.onnx", "--size"]
    err = refused(capsys, [*argv, *size])  # no checkpoint there: refused before it is read
    assert err.endswith(f"--size {size[0]} {size[1]}: {why}; expected the ONNX input's height and width in pixels, "
                        "each at most 8192 and at most 4096 x 4096 = 16,777,216 px in all (e.g. --size 1024 2048 or "
                        "2048 4096); the export runs the model at that size twice, its onnxruntime check with every "
                        "attention map whole"), err
    assert "--size" not in refused(capsys, [*argv, "2048", "4096"])  # the missing checkpoint's error instead
    assert not list(tmp_path.iterdir())


def test_an_export_size_smaller_than_the_model_takes_names_size_and_the_minimum(tmp_path, run, capsys):
    pytest.importorskip("onnx")
    err = refused(capsys, ["export", "--checkpoint", run, "--format", "onnx", "--out", tmp_path / "m.onnx",
                           "--size", "8", "8"])
    assert "ONNX input size 8 8 (--size H W): image is 8x8 px" in err and "needs at least 9 px" in err
    assert not list(tmp_path.iterdir())


def test_an_export_size_with_format_full_is_refused_not_ignored(tmp_path, run, capsys):
    err = refused(capsys, ["export", "--checkpoint", run, "--format", "full", "--out", tmp_path / "m.safetensors",
                           "--size", "32", "32"])
    assert "--size 32 32: only --format onnx has an input size" in err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ data check, bench, report options


@pytest.mark.parametrize("patch", ["0", "-3"])
def test_a_data_check_patch_size_below_one_is_refused_naming_the_option(capsys, patch):
    err = refused(capsys, ["data", "check", "synthetic-game", "--patch-size", patch])
    assert f"--patch-size {patch}: expected the model's patch size in pixels, 1 or more" in err


def test_a_bench_method_or_seed_named_twice_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"--methods 'rein,lora,rein': 'rein' named twice; expected each method once"):
        parse_list("rein,lora,rein")
    with pytest.raises(ValueError, match=r"--seeds '0,1,0': '0' named twice; expected each seed once"):
        parse_list("0,1,0", int, "--seeds")


def test_an_empty_bench_methods_list_is_refused_not_read_as_the_default(tmp_path, capsys):
    err = refused(capsys, ["bench", "--methods", "", "--status", "--out", tmp_path / "b"])
    assert "--methods '': an empty value; expected a non-empty one" in err


@pytest.mark.parametrize("option, value, message", [
    ("--threads", "0", "--threads 0: expected 1 or more torch threads per run"),
    ("--threads", "-1", "--threads -1: expected 1 or more torch threads per run"),
    ("--iters", "0", "--iters 0: expected 1 or more iterations per run"),
])
def test_bench_threads_or_iters_below_one_are_refused_naming_the_option(tmp_path, capsys, monkeypatch, option,
                                                                         value, message):
    monkeypatch.setattr("dgseg.bench.run_order", lambda *a: pytest.fail("the bench went on to train"))
    err = refused(capsys, ["bench", "--methods", "rein", "--seeds", "0", option, value, "--out", tmp_path / "b"])
    assert message in err


def test_report_refuses_a_run_folder_given_twice_and_negative_scenes(tmp_path, capsys, config_file):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(config_file.read_text())
    err = refused(capsys, ["report", tmp_path / "run", f"{tmp_path}/../{tmp_path.name}/run/", "--out", tmp_path / "r"])
    assert "the same run folder given twice; expected each run once" in err
    err = refused(capsys, ["report", tmp_path / "run", "--out", tmp_path / "r", "--scenes", "-1"])
    assert "--scenes -1: expected the prediction scenes per domain, 0 or more" in err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ predict inputs


def test_predict_names_the_files_of_a_folder_it_leaves_out(tmp_path, run, image, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict", "--checkpoint", str(run), str(tmp_path), "--out", str(tmp_path / "p"),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"predict: {tmp_path}: left out 1 file(s) without an image suffix" in err and "notes.txt" in err


def test_predict_refuses_an_image_given_twice_naming_it(tmp_path, run, image, capsys):
    err = refused(capsys, ["predict", "--checkpoint", run, image, image, "--out", tmp_path / "p", "--no-progress"])
    assert f"{image}: the same image given twice; expected each image once" in err
    err = refused(capsys, ["predict", "--checkpoint", run, tmp_path, image, "--out", tmp_path / "p", "--no-progress"])
    assert "the same image given twice" in err
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------ weights, Rein checkpoints, text-embed


def test_a_folder_given_as_weights_or_rein_checkpoint_is_named_as_a_folder(tmp_path, config_file, capsys):
    err = refused(capsys, ["train", config_file, "--set", f"model.backbone.weights={tmp_path}",
                           "--out", tmp_path / "t"])
    assert f"model.backbone.weights: {tmp_path} is a folder; expected the weights file itself" in err
    err = refused(capsys, ["import-rein", tmp_path, "--backbone", tmp_path, "--out", tmp_path / "i"])
    assert f"{tmp_path}: is a folder; expected the official Rein checkpoint file" in err
    from dgseg.models.weights_io import WeightsError, read_state_dict

    with pytest.raises(WeightsError, match="is a folder; expected a weights file"):
        read_state_dict(tmp_path)


def test_text_embed_without_a_text_tower_names_model_text_weights(tmp_path, config_file, capsys):
    err = refused(capsys, ["text-embed", config_file, "--out", tmp_path / "e.safetensors"])
    assert f"{config_file}: model.text.weights is not set; text-embed encodes the class names" in err
    err = refused(capsys, ["text-embed", config_file, "--out", tmp_path / "e.safetensors",  # an arch alone: a
                           "--set", "model.text.arch=ViT-B-16"])  # randomly initialised tower, meaningless output
    assert f"{config_file}: model.text.weights is not set" in err and not (tmp_path / "e.safetensors").exists()
    assert "model.text.name=none for plain fine-tuning" not in err
    err = refused(capsys, ["text-embed", config_file, "--out", tmp_path / "e.safetensors",
                           "--set", f"model.text.embeddings={tmp_path / 'old.safetensors'}"])
    assert "model.text.embeddings is set" in err


def test_text_embed_with_a_missing_text_tower_file_names_the_key_and_the_file_to_fetch(tmp_path, config_file, capsys):
    missing = tmp_path / "weights" / "EVA02_CLIP_L_psz14_s4B.pt"
    out = ["text-embed", config_file, "--out", tmp_path / "e.safetensors", "--set", f"model.text.weights={missing}"]
    err = refused(capsys, [*out, "--set", "model.text.arch=EVA02-L-14"])
    assert f"model.text.weights: file not found: {missing}. dgseg never downloads weights: download" in err
    assert "Hugging Face repo timm/eva02_large_patch14_clip_224" in err  # open_clip's pretrained config, offline
    assert f"put it at {missing} (or set model.text.weights to its path)" in err
    err = refused(capsys, out)  # no model.text.arch: which kind of file, not which one
    assert f"model.text.weights: file not found: {missing}" in err and "a CLIP checkpoint with its text tower" in err
    err = refused(capsys, ["text-embed", config_file, "--out", tmp_path / "e.safetensors",
                           "--set", f"model.text.weights={tmp_path}"])
    assert f"model.text.weights: {tmp_path} is a folder; expected the weights file itself" in err
    err = refused(capsys, [*out, "--set", "model.text.arch=ViT-L-14"])  # OpenAI's: the HF copy lacks the activation
    assert "set model.text.activation: quick_gelu for it" in err


def test_one_missing_clip_file_for_both_towers_is_named_as_a_clip_release_not_an_image_only_file(tmp_path, capsys):
    from pathlib import Path

    import dgseg

    config = Path(dgseg.__file__).parent / "configs" / "vltseg_eva02_clip_l_gta.yaml"  # the same file for both
    missing = tmp_path / "EVA02_CLIP_L_psz14_s4B.pt"
    err = refused(capsys, ["train", config, "--out", tmp_path / "run", "--set", f"model.backbone.weights={missing}",
                           "--set", f"model.text.weights={missing}"])
    assert f"model.backbone.weights and model.text.weights: file not found: {missing}" in err
    assert "download EVA02_CLIP_L_psz14_s4B.pt, the CLIP release holding both the image and the text tower" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ keys written twice, options that would be ignored


def test_a_config_key_written_twice_is_refused_naming_the_file_line_and_key(tmp_path, config_file, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(config_file.read_text() + "train:\n  lr: 0.1\n")  # a second top-level 'train'
    err = refused(capsys, ["info", path])
    assert f"{path}: line " in err and "key 'train' is written twice in one mapping (first on line" in err
    err = refused(capsys, ["info", config_file, "--set", "train={lr: 1, lr: 2}"])
    assert "override 'train={lr: 1, lr: 2}': the value's line 1: key 'lr' is written twice" in err


def test_a_yaml_merge_key_may_still_be_overridden():
    from dgseg.strict_yaml import load_yaml_text

    text = "base: &b {lr: 0.1, max_iters: 3}\ntrain:\n  <<: *b\n  lr: 0.2\n"
    assert load_yaml_text(text)["train"] == {"lr": 0.2, "max_iters": 3}


@pytest.mark.parametrize("extra, named", [(["--root", "data/cityscapes"], "--root data/cityscapes"),
                                          (["--split", "val"], "--split val")])
def test_predict_root_or_split_without_dataset_is_refused_not_ignored(tmp_path, run, image, capsys, extra, named):
    err = refused(capsys, ["predict", "--checkpoint", run, image, *extra, "--out", tmp_path / "p", "--no-progress"])
    assert f"predict: {named} applies to --dataset only" in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["eval", "demo"])
def test_severities_or_a_corruption_seed_without_corruptions_are_refused_not_ignored(tmp_path, run, capsys, command,
                                                                                    monkeypatch):
    monkeypatch.setattr("dgseg.demo.run_demo", lambda **kw: pytest.fail("the demo went on to train"))
    argv = ["eval", "--checkpoint", run, "--no-progress"] if command == "eval" else ["demo", "--quick"]
    err = refused(capsys, [*argv, "--severities", "2", "--out", tmp_path / "o"])
    assert "--severities 2: applies only with --corruptions" in err
    if command == "eval":
        err = refused(capsys, [*argv, "--corruption-seed", "3", "--out", tmp_path / "o"])
        assert "--corruption-seed 3: applies only with --corruptions" in err
    err = refused(capsys, ["demo", "--quick", "--corruptions", "", "--out", tmp_path / "o"])
    assert "--corruptions '': an empty value; expected a non-empty one" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("taken", ["rein", "rein/seed0"])
def test_a_file_where_a_bench_run_folder_goes_is_named_by_status_and_refused_by_a_run(tmp_path, config_file, capsys,
                                                                                     taken):
    out = tmp_path / "bench"
    (out / taken).parent.mkdir(parents=True, exist_ok=True)
    (out / taken).write_text("mine")
    argv = ["bench", "--methods", "rein", "--seeds", "0", "--iters", "1", "--config", config_file, "--out", out]
    assert main([str(a) for a in argv + ["--status"]]) == 0
    assert f"bench: {out / taken} is a file; the bench keeps each run in a folder" in capsys.readouterr().out
    err = refused(capsys, argv)
    assert f"bench: {out / taken} is a file; the bench keeps each run in a folder --out/<method>/seed<k>" in err
    assert (out / taken).read_text() == "mine"


def test_an_unknown_backbone_name_lists_close_names_or_says_what_is_expected_never_an_empty_list(config_file, capsys):
    err = refused(capsys, ["info", config_file, "--set", "model.backbone.name=vit_large_patch14_dinov3"])
    assert "timm has no model 'vit_large_patch14_dinov3'; similar: " in err and "vit_large_patch14_dinov2" in err
    err = refused(capsys, ["info", config_file, "--set", "model.backbone.name=nonexistent_model_xyz"])
    assert "[]" not in err and "expected a timm ViT name such as vit_large_patch14_dinov2" in err


def test_an_unknown_open_clip_text_arch_lists_close_names_or_says_what_is_expected():
    from dgseg.models.text_tower import CLIPTextTower

    with pytest.raises(ValueError, match="open_clip has no CLIP text tower config 'EVA02-L-41'; similar: ") as e:
        CLIPTextTower.from_arch("EVA02-L-41")
    assert "EVA02-L-14" in str(e.value)
    with pytest.raises(ValueError, match="'zzqq'; expected an open_clip model name such as EVA02-L-14"):
        CLIPTextTower.from_arch("zzqq")


def test_an_empty_config_is_refused_by_info_which_counts_the_defaults_only_without_one(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    for text in ("", "# nothing yet\n"):
        path.write_text(text)
        err = refused(capsys, ["info", path])
        assert f"{path}: sets no key (empty, or comments only); expected an experiment config" in err
    assert main(["info"]) == 0  # no CONFIG: the defaults, as documented
    assert main(["info", str(path), "--set", "model.adapter.rank=8"]) == 0  # the --set is a key


def test_train_with_resume_and_force_together_is_refused_naming_both(tmp_path, run, config_file, capsys):
    err = refused(capsys, ["train", config_file, "--out", run, "--resume", "--force", "--no-progress"])
    assert f"{run}: --resume and --force: --resume continues the run in the folder, --force moves it" in err
    assert not list(run.glob("previous-*")) and not (run / "log.jsonl").exists()


def test_an_override_reaching_into_a_list_says_to_set_the_whole_list(config_file, capsys):
    err = refused(capsys, ["info", config_file, "--set", "data.val.0.length=1"])
    assert ("override 'data.val.0.length=1': 'data.val' is a list, not a section: --set cannot reach into it; "
            "set the whole list, e.g. data.val=[...]") in err


def test_a_classes_file_with_a_key_written_twice_is_refused_naming_the_file_and_line(tmp_path):
    from dgseg.data.classes import ClassSetError, load_class_set

    path = tmp_path / "classes.yaml"
    path.write_text("names: [road, car]\npalette: [[0, 0, 0], [9, 9, 9]]\nnames: [road, car, sky]\n")
    with pytest.raises(ClassSetError, match=r"classes.yaml: not a readable YAML classes file \(line 3: key 'names' "
                                            r"is written twice in one mapping \(first on line 1\)"):
        load_class_set(str(path))


def test_dgseg_debug_shows_the_traceback_of_an_error_the_cli_otherwise_prints_in_one_line(tmp_path, monkeypatch,
                                                                                        capsys):
    missing = tmp_path / "none.yaml"
    monkeypatch.delenv("DGSEG_DEBUG", raising=False)
    assert main(["info", str(missing)]) == 2
    assert f"dgseg info: error: config file not found: {missing}" in capsys.readouterr().err
    monkeypatch.setenv("DGSEG_DEBUG", "1")
    with pytest.raises(ConfigError, match="config file not found"):
        main(["info", str(missing)])


def test_eval_on_a_run_whose_checkpoints_is_a_file_names_that_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("not a folder")
    err = refused(capsys, ["eval", "--checkpoint", str(run_dir), "--no-progress"])
    assert f"{run_dir / 'checkpoints'}: is not a folder (a file or a broken link); dgseg keeps a run's checkpoints" in err
    assert (run_dir / "checkpoints").read_text() == "not a folder"


@pytest.mark.parametrize("argv, name", [
    (["train", "CONFIG", "--out", ""], "--out"),  # was: the default runs/<name>
    (["eval", "--checkpoint", "RUN", "--out", ""], "--out"),  # was: the run folder
    (["predict", "--checkpoint", "RUN", "", "--out", "OUT"], "IMAGE_OR_DIR"),  # was: the current folder
    (["predict", "--checkpoint", "RUN", "IMAGE", "--out", ""], "--out"),  # was: the current folder
    (["predict", "--checkpoint", "RUN", "--dataset", "", "--root", "OUT", "--out", "OUT"], "--dataset"),
    (["eval", "--checkpoint", "RUN", "--corruptions", "fog", "--severities", ""], "--severities"),  # was: all five
    (["bench", "--config", "", "--status", "--out", "OUT"], "--config"),  # was: the shipped bench.yaml
    (["data", "check", "folder", "OUT", "--split", ""], "--split"),
    (["report", "RUN", "--out", ""], "--out"),
])
def test_an_empty_value_is_refused_naming_the_option_not_read_as_a_default_or_the_current_folder(
        tmp_path, run, config_file, image, capsys, monkeypatch, argv, name):
    monkeypatch.chdir(tmp_path)
    fill = {"CONFIG": config_file, "RUN": run, "IMAGE": image, "OUT": tmp_path / "out"}
    err = refused(capsys, [fill.get(a, a) for a in argv])
    assert err.startswith(f"dgseg {' '.join(argv[:2]) if argv[0] == 'data' else argv[0]}: error: {name} '': an "
                          "empty value; expected a non-empty one"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.yaml", "scene.png"])  # nothing written


def test_data_check_without_a_root_is_still_the_synthetic_benchmark(capsys):
    assert main(["data", "check", "synthetic-fog", "", "--split", "val", "--patch-size", "2"]) == 0
