"""`dgseg eval` records which checkpoint and settings its eval.json / eval.md come from, and writes into the run
folder only the run's own evaluation (its final weights with the settings it was trained with)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny import tiny_config, tiny_dict

import dgseg
from dgseg.cli import main
from dgseg.engine.checkpoint import save_checkpoint
from dgseg.engine.train import checkpoint_meta

SECTIONS = {"eval__examples": 1, "data__val": [{"name": n, "split": "val", "length": 1, "size": [48, 64]}
                                               for n in ("synthetic-game", "synthetic-night")]}


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> Path:
    """A run folder with the checkpoints of iterations 2 and 4 of train.max_iters 4 (untrained weights) and the
    evaluation of its final weights, as `dgseg train` leaves it."""
    out = tmp_path_factory.mktemp("evaluated") / "run"
    cfg = tiny_config(**SECTIONS)
    model = dgseg.build_model(cfg)
    for step in (2, 4):
        save_checkpoint(out, step, model.trainable_state_dict(), checkpoint_meta(cfg, step))
    assert main(["eval", "--checkpoint", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture
def run(evaluated_run, tmp_path) -> Path:
    """A copy of ``evaluated_run`` of the test's own."""
    shutil.copytree(evaluated_run, tmp_path / "run")
    return tmp_path / "run"


def _evaluation(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text())


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and "checkpoints" not in p.parts}


def test_eval_json_and_eval_md_name_the_checkpoint_iteration_and_settings(evaluated_run):
    run = evaluated_run.resolve()
    record = _evaluation(run)["evaluated"]
    assert record["by"] == "dgseg eval" and record["checkpoint"] == str(run)
    assert record["file"] == str(run / "checkpoints" / "iter_0000004.safetensors")
    assert record["iteration"] == 4 and record["max_iters"] == 4 and record["final"] is True
    assert record["overrides"] == [] and record["config"] is None and record["changed"] == {}
    assert record["settings"] == {"mode": "whole", "crop": 32, "stride": 24, "precision": "float32",
                                  "tta": {"enabled": False, "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75],
                                          "flip": True}}
    header = (run / "eval.md").read_text().splitlines()[2]
    assert header.startswith(f"Checkpoint `{run}` (iter_0000004.safetensors), iteration 4 (the run's final weights); "
                             "eval.mode whole, crop 32, stride 24, no TTA, float32 (dgseg eval, ")


@pytest.mark.parametrize("argv, why", [
    (["--checkpoint", "RUN/checkpoints/iter_0000002.safetensors"],
     "iter_0000002.safetensors is iteration 2 (not the run's final weights: the run's train.max_iters is 4)"),
    (["--checkpoint", "RUN", "--set", "eval.mode=slide"], "eval.mode is 'slide', the run's config has 'whole'"),
    (["--checkpoint", "RUN", "--tta"], "eval.tta.enabled is True, the run's config has False"),
    (["--checkpoint", "RUN", "--set", "data.val=[{name: synthetic-night, split: val, length: 1, size: [48, 64]}]",
      "--set", "data.source=null"], "data.source is None, the run's config has 'synthetic-game'"),
])
def test_another_evaluation_is_refused_in_the_run_folder_before_it_runs_and_nothing_there_changes(run, capsys, argv,
                                                                                                  why):
    before = _snapshot(run)
    argv = [str(run) + a[3:] if a.startswith("RUN") else a for a in argv]
    assert main(["eval", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run}: dgseg eval writes into the run folder only the run's own evaluation" in err and why in err
    assert f"Give --out a folder of its own (e.g. --out {run}/evals/iter_000000" in err and "or --force" in err
    assert _snapshot(run) == before


def test_another_evaluation_goes_to_out_or_with_force_replaces_the_runs_and_says_so(run, tmp_path):
    before = _snapshot(run)
    earlier = ["--checkpoint", str(run / "checkpoints" / "iter_0000002.safetensors"), "--set", "eval.mode=slide"]
    assert main(["eval", *earlier, "--out", str(tmp_path / "other"), "--no-progress"]) == 0
    assert _snapshot(run) == before
    record = _evaluation(tmp_path / "other")["evaluated"]
    assert record["iteration"] == 2 and record["final"] is False
    assert record["not_final"] == "the run's train.max_iters is 4"
    assert record["overrides"] == ["eval.mode=slide"] and record["changed"] == {"eval.mode": ["whole", "slide"]}
    assert record["settings"]["mode"] == "slide"
    assert "iteration 2 (not the run's final weights: the run's train.max_iters is 4)" in \
        (tmp_path / "other" / "eval.md").read_text()

    assert main(["eval", *earlier[:2], "--force", "--no-progress"]) == 0
    assert _evaluation(run)["evaluated"]["final"] is False and _evaluation(run)["evaluated"]["iteration"] == 2


def test_the_final_weights_with_the_runs_settings_replace_the_runs_evaluation_as_before(run, tmp_path):
    """Re-evaluating: the run folder, its checkpoints folder or final file, its own config file given, or keys
    that leave the numbers as they are (how windows are batched, the examples kept)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_dict(**SECTIONS)))
    for argv in (["--checkpoint", str(run / "checkpoints")],
                 ["--checkpoint", str(run / "checkpoints" / "iter_0000004.safetensors")],
                 [str(config), "--checkpoint", str(run)],
                 ["--checkpoint", str(run), "--set", "eval.batch_size=2", "--set", "eval.examples=2"]):
        (run / "eval.json").unlink()
        assert main(["eval", *argv, "--no-progress"]) == 0, argv
        record = _evaluation(run)["evaluated"]
        assert record["final"] is True and record["changed"] == {}, argv
    assert record["overrides"] == ["eval.batch_size=2", "eval.examples=2"]


def test_a_checkpoint_followed_by_a_later_one_is_not_the_final_weights(run, tmp_path):
    """A run resumed with a longer train.max_iters: its checkpoint at the old end is no longer the final one."""
    cfg = tiny_config(**SECTIONS, train__max_iters=6)
    save_checkpoint(run, 6, dgseg.build_model(cfg).trainable_state_dict(), checkpoint_meta(cfg, 6))
    earlier = str(run / "checkpoints" / "iter_0000004.safetensors")
    assert main(["eval", "--checkpoint", earlier, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    record = _evaluation(tmp_path / "o")["evaluated"]
    assert record["final"] is False and record["iteration"] == 4
    assert record["not_final"] == "a later checkpoint of the run follows: iter_0000006.safetensors"


def test_force_with_corruptions_is_refused(run, capsys):
    assert main(["eval", "--checkpoint", str(run), "--corruptions", "fog", "--force", "--no-progress"]) == 2
    assert "--force: applies to eval.json only; --corruptions writes corruptions.json" in capsys.readouterr().err


def test_the_runs_own_evaluation_does_not_replace_an_eval_json_holding_domains_it_leaves_out(run, capsys, tmp_path):
    """`dgseg bench` trains with the source alone and evaluates every domain into the run folder: evaluating the
    run's final weights with its own config again would drop the targets."""
    record = _evaluation(run)
    record["domains"]["synthetic-fog"] = record["domains"]["synthetic-night"]
    record["evaluated"]["by"] = "dgseg bench"
    (run / "eval.json").write_text(json.dumps(record))
    before = _snapshot(run)
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run}: its eval.json holds results (dgseg bench) for domains this evaluation leaves out: " \
           "synthetic-fog; this evaluation (the run's final weights with its own settings) would replace it" in err
    assert f"--out {run}/evals/iter_0000004" in err and "or --force to replace it" in err
    assert _snapshot(run) == before
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--force", "--no-progress"]) == 0
    assert sorted(_evaluation(run)["domains"]) == ["synthetic-game", "synthetic-night"]


def test_a_link_or_export_of_a_superseded_checkpoint_is_not_the_final_weights(run, capsys, tmp_path):
    """run/best.safetensors -> checkpoints/iter_0000004.safetensors after the run was resumed to 6: the link's own
    name is no iteration's, and the checkpoint it names is followed by a later one."""
    cfg = tiny_config(**SECTIONS, train__max_iters=6)
    save_checkpoint(run, 6, dgseg.build_model(cfg).trainable_state_dict(), checkpoint_meta(cfg, 6))
    (run / "best.safetensors").symlink_to(Path("checkpoints") / "iter_0000004.safetensors")
    before = _snapshot(run)
    assert main(["eval", "--checkpoint", str(run / "best.safetensors"), "--no-progress"]) == 2
    assert "not the run's final weights: a later checkpoint of the run follows: iter_0000006.safetensors" in \
        capsys.readouterr().err
    assert _snapshot(run) == before
    shutil.copy(run / "checkpoints" / "iter_0000004.safetensors", run / "export.safetensors")  # a copy, not a link
    assert main(["eval", "--checkpoint", str(run / "export.safetensors"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert _evaluation(tmp_path / "o")["evaluated"]["final"] is False


def test_a_damaged_latest_pointer_does_not_stop_the_evaluation_of_a_checkpoint_file(run, tmp_path):
    """The file given is read without the pointer; whether a later checkpoint follows: the highest-step file."""
    (run / "checkpoints" / "latest").write_text("garbage")
    for step, final in ((4, True), (2, False)):
        given = run / "checkpoints" / f"iter_{step:07d}.safetensors"
        assert main(["eval", "--checkpoint", str(given), "--out", str(tmp_path / str(step)), "--no-progress"]) == 0
        assert _evaluation(tmp_path / str(step))["evaluated"]["final"] is final


def test_a_stored_config_of_another_dgseg_lacking_keys_added_since_is_not_a_difference(tmp_path):
    """A config this dgseg does not read (a key dropped since) is compared as stored: the keys it lacks (added
    since) are not "the run's config has None" differences that keep its own evaluation out of its run folder."""
    from dgseg.engine.eval_record import evaluation_record

    cfg = tiny_config(**SECTIONS)
    meta = checkpoint_meta(cfg, 4)
    meta["config"]["train"]["removed_key"] = 1
    del meta["config"]["eval"]["tta"], meta["config"]["data"]["unknown_labels"]
    save_checkpoint(tmp_path / "old", 4, dgseg.build_model(cfg).trainable_state_dict(), meta)
    record = evaluation_record(tmp_path / "old", cfg, torch.device("cpu"), "dgseg eval", config="tiny.yaml")
    assert record["final"] is True and record["changed"] == {}
    cfg.eval.mode = "slide"  # a key it holds, set otherwise: still a difference
    record = evaluation_record(tmp_path / "old", cfg, torch.device("cpu"), "dgseg eval", config="tiny.yaml")
    assert record["changed"] == {"eval.mode": ["whole", "slide"]}


def test_a_data_val_root_moved_with_set_is_a_changed_key_since_the_images_are_not_checked_by_content():
    """Unlike the backbone and text tower files (checked by content digest), a data.val root says nothing of the
    images under it: the same data elsewhere and other data look alike, so a moved root counts as a change."""
    from dgseg.engine.eval_record import changed_keys

    run = {"data": {"val": [{"name": "cityscapes", "root": "/cluster/cityscapes", "split": "val"}]}}
    here = {"data": {"val": [{"name": "cityscapes", "root": "/laptop/cityscapes", "split": "val"}]}}
    assert changed_keys(run, here) == {"data.val": [run["data"]["val"], here["data"]["val"]]}
