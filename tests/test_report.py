"""`dgseg report`: the comparison page from run folders, and what evaluation stores for it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dgseg.cli import main
from dgseg.report import write_report
from dgseg.report.page import domain_table
from dgseg.report.runs import RunRecord, load_run


@pytest.fixture
def two_runs(tiny_report_runs):
    return tiny_report_runs


def test_evaluation_stores_confusion_matrices_examples_and_run_facts(two_runs):
    ev = json.loads((two_runs[0] / "eval.json").read_text())
    for domain in ("synthetic-game", "synthetic-night"):
        conf = ev["domains"][domain]["confusion"]
        assert len(conf) == len(conf[0]) == 19 and sum(map(sum, conf)) == 2 * 48 * 64  # 2 images of 48 x 64
        assert len(ev["examples"][domain]) == 2
        for paths in ev["examples"][domain]:
            assert all((two_runs[0] / p).is_file() for p in paths.values())
    facts = json.loads((two_runs[0] / "run.json").read_text())
    assert facts["precision"] == "float32" and facts["params"]["trainable"] > 0 and facts["train_time_s"] > 0
    assert {"dgseg", "torch", "timm", "python"} <= set(facts["versions"]) and "cores" in facts["machine"]


def test_the_page_compares_both_runs_in_every_section(two_runs, tmp_path):
    page = write_report(two_runs, tmp_path, baseline="frozen")
    text = page.read_text()
    for heading in ("mIoU per domain", "Per-class IoU", "Confusion matrix: synthetic-night", "Predictions",
                    "Training curves", "Run facts", "Config keys that differ"):
        assert heading in text, heading
    assert text.count('<tr data-run="') == 2 and 'class="best"' in text
    assert "<code>model.adapter.name</code>" in text and "<script" not in text
    for src in re.findall(r'src="([^"]+)"', text):
        assert (tmp_path / src).is_file() and (tmp_path / src).stat().st_size > 500, src
    assert len(re.findall(r'scene_\d+_\d+\.jpg', text)) == 2 * 2  # two domains x two stored scenes


def test_an_old_run_folder_gets_a_page_with_what_it_has(two_runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(two_runs[1], old)
    ev = json.loads((old / "eval.json").read_text())
    for result in ev["domains"].values():
        result.pop("confusion")
    ev.pop("examples")
    (old / "eval.json").write_text(json.dumps(ev))
    (old / "run.json").unlink()
    text = write_report([old], tmp_path / "page").read_text()
    assert "mIoU per domain" in text and "Confusion matrix" not in text and "Predictions" not in text


def test_the_best_value_per_column_is_marked():
    a = RunRecord("a", None, source="s", domains={"s": {"mIoU": 50.0}, "t": {"mIoU": 30.0}})
    b = RunRecord("b", None, source="s", domains={"s": {"mIoU": 40.0}, "t": {"mIoU": 35.0}})
    html = domain_table([a, b], ["s", "t"], "s")
    assert re.search(r'data-run="a"><td>a</td><td class="best">50.0</td><td>30.0</td>', html)
    assert re.search(r'data-run="b"><td>b</td><td>40.0</td><td class="best">35.0</td>', html)


def test_bad_inputs_name_the_folder_or_value(tmp_path, two_runs, capsys):
    with pytest.raises(ValueError, match="is not a run folder"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="--baseline 'nope' is none of the runs"):
        write_report(two_runs, tmp_path / "x", baseline="nope")
    with pytest.raises(ValueError, match="--domain 'nope' is not an evaluated domain"):
        write_report(two_runs, tmp_path / "z", confusion_domain="nope")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()  # refused before anything is made
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_the_baseline_may_be_given_as_the_run_folder_however_it_is_written(tmp_path, two_runs):
    for written in (f"{two_runs[1]}/", str(two_runs[1].resolve()), f"{two_runs[1].parent}/./{two_runs[1].name}"):
        page = write_report(two_runs, tmp_path / "out", baseline=written)
        assert f"difference to {two_runs[1].name}" in page.read_text()


def test_a_run_keeps_its_own_class_names_and_colours(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({
        "source": "a", "classes": ["crack", "rust", "paint"], "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
        "domains": {"a": {"mIoU": 50.0, "IoU": [40.0, 60.0, None]}}}))
    run = load_run(tmp_path)
    assert run.classes == ["crack", "rust", "paint"] and run.palette.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_two_domains_whose_names_sanitise_alike_keep_separate_example_folders(tmp_path):
    from dgseg.engine.examples import save_examples

    tile = {"image": np.zeros((4, 6, 3), np.uint8), "label": np.zeros((4, 6), np.uint8),
            "pred": np.ones((4, 6), np.uint8)}
    written = save_examples(tmp_path, {"folder:a b": [tile], "folder:a_b": [tile], "folder_a_b": [tile]})
    folders = [Path(v[0]["pred"]).parent.name for v in written.values()]
    assert folders == ["folder_a_b", "folder_a_b-2", "folder_a_b-3"]
    assert all((tmp_path / v[0]["pred"]).is_file() for v in written.values())


def test_the_per_class_heat_map_lines_up_runs_with_different_class_sets_by_name(tmp_path, monkeypatch):
    import matplotlib.axes

    from dgseg.report import figures

    def run(name, classes):  # every class's IoU is its position in the full list: equal classes, equal IoU
        return RunRecord(name, tmp_path / name, classes=classes, palette=np.zeros((len(classes), 3), np.uint8),
                         domains={"d": {"IoU": [float("abcd".index(c)) for c in classes]}})

    grids = []
    imshow = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, x, *a, **k: grids.append(x) or imshow(ax, x, *a, **k))
    big, small = run("big", ["a", "b", "c", "d"]), run("small", ["a", "c"])
    figures.heatmaps([big, small], ["d"], tmp_path / "h.png")
    np.testing.assert_array_equal(grids[1][:, 0], [0.0, np.nan, 2.0, np.nan])  # rows a, b, c, d
    grids.clear()
    figures.heatmaps([small, big], ["d"], tmp_path / "h.png", baseline=big)
    np.testing.assert_array_equal(grids[0][:, 0], [0.0, 0.0, np.nan, np.nan])  # rows a, c, b, d: no difference


LONG_CLASSES = ["background", "a class name far longer than its row is high", "c"]
LONG_DOMAINS = ["site-a", "a-domain-label-much-longer-than-its-column"]


def _drawn(monkeypatch, draw):
    """The figure ``draw()`` saves, drawn, and the texts of it that lie outside it (cut off in the picture)."""
    from dgseg.report import figures

    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    draw()
    (fig,) = saved
    fig.canvas.draw()
    renderer, inside = fig.canvas.get_renderer(), fig.bbox

    def whole(box) -> bool:
        return (box.x0 >= inside.x0 - 0.5 and box.y0 >= inside.y0 - 0.5 and box.x1 <= inside.x1 + 0.5
                and box.y1 <= inside.y1 + 0.5)

    texts = [t for ax in fig.axes if ax.images for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title)]
    cut = [t.get_text() for t in (*texts, *fig.texts) if t.get_visible() and not whole(t.get_window_extent(renderer))]
    cut += [f"axes {i}" for i, ax in enumerate(fig.axes) if not whole(ax.get_tightbbox(renderer))]  # colour bar too
    return fig, cut


@pytest.mark.parametrize("count, baseline", [(1, False), (3, True)], ids=["one-run", "three-runs-baseline"])
def test_every_class_name_domain_label_and_title_of_the_heat_map_is_whole(tmp_path, monkeypatch, count, baseline):
    """Each text of the heat maps lies inside the figure: no class name, domain label or title is cut off."""
    from dgseg.report import figures

    runs = [RunRecord(n, tmp_path / n, classes=LONG_CLASSES, palette=np.zeros((3, 3), np.uint8),
                      domains={d: {"IoU": [50.0, 40.0, 30.0]} for d in LONG_DOMAINS})
            for n in ("folder", "rein", "lora")]
    fig, cut = _drawn(monkeypatch, lambda: figures.heatmaps(runs[:count], LONG_DOMAINS, tmp_path / "h.png",
                                                            baseline=runs[0] if baseline else None))
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]  # the colour bar has no title
    assert len(panels) == (2 if baseline else 1)
    assert [t.get_text() for t in panels[0].get_yticklabels()] == LONG_CLASSES
    assert all([t.get_text() for t in ax.get_xticklabels()] == LONG_DOMAINS for ax in panels)
    assert not cut, f"cut off: {cut}"


def test_every_class_name_and_the_title_of_a_confusion_matrix_is_whole(tmp_path, monkeypatch):
    from dgseg.report import figures

    run = RunRecord("folder", tmp_path, classes=LONG_CLASSES, palette=np.zeros((3, 3), np.uint8),
                    domains={LONG_DOMAINS[1]: {"confusion": [[5, 1, 0], [1, 5, 0], [0, 0, 5]]}})
    fig, cut = _drawn(monkeypatch, lambda: figures.confusion(run, LONG_DOMAINS[1], tmp_path / "c.png"))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == LONG_CLASSES
    assert [t.get_text() for t in (*fig.texts, fig.axes[0].title) if t.get_text()] == [f"folder: {LONG_DOMAINS[1]}"]
    assert not cut, f"cut off: {cut}"


def test_a_rerun_leaves_only_the_pictures_its_page_shows_and_a_linked_report_assets_is_refused(two_runs, tmp_path):
    from dgseg.atomic import LinkError

    page = write_report(two_runs, tmp_path / "page", scenes=2)
    assets = tmp_path / "page" / "report_assets"
    for mine in ("notes.txt", "scene_old.jpg", "my_bars.png"):  # not names the report gives: kept
        (assets / mine).write_text("mine")
    assert {"scene_0_1.jpg", "confusion_1.png"} <= {f.name for f in assets.iterdir()}
    write_report(two_runs[:1], tmp_path / "page", scenes=1)
    shown = set(re.findall(r'src="report_assets/([^"]+)"', page.read_text()))
    assert "scene_0_0.jpg" in shown and {f.name for f in assets.iterdir()} == shown | {"notes.txt", "scene_old.jpg",
                                                                                       "my_bars.png"}
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "report_assets").symlink_to(victim)
    with pytest.raises(LinkError, match=r"report_assets: is a symbolic link; dgseg does not write through links"):
        write_report(two_runs, tmp_path / "linked")
    assert not any(victim.iterdir()) and not (tmp_path / "linked" / "report.html").exists()


@pytest.mark.parametrize("file, content, problem", [
    ("config.yaml", "data: [unclosed\n", r"not readable YAML \(line 2, column 1: expected ',' or ']'"),
    ("config.yaml", "- a\n- b\n", r"a YAML list; expected the run's config"),
    ("config.yaml", "data: [a, b]\n", r"'data' is a list \(\[\"a\", \"b\"\]\); expected a mapping"),
    ("eval.json", '{"domains": {"a": {"mIoU": 50.0}, "b": 42.0}}',
     r"domains\['b'\] is a number \(42.0\); expected an object with mIoU"),
    ("eval.json", '{"domains": [1]}', r"'domains' is a list \(\[1\]\); expected an object"),
    ("eval.json", '{"domains": {"a": {"mIoU": "high"}}}', r"domains\['a'\]\['mIoU'\] is a string \('high'\)"),
    ("eval.json", '{"domains": {}, "palette": [[1, 2]]}', r"'palette' is a list .*each 0-255"),
    ("eval.json", '{"domains": {}, "examples": {"a": ["x.jpg"]}}', r"examples\['a'\] is a list"),
    ("eval.json", "[]", r"a JSON list; expected an object, an evaluation"),
    ("eval.json", '{"results": {"a": {"mIoU": 50.0}}}', r"has no 'domains'; expected an evaluation as dgseg"),
    ("run.json", '{"params": [1]}', r"'params' is a list \(\[1\]\); expected an object"),
    ("eval.json", '{"domains": {}, "evaluated": [1]}', r"'evaluated' is a list \(\[1\]\); expected an object \(checkpoint"),
    ("eval.json", '{"domains": {}, "evaluated": {"final": "yes"}}', r"evaluated\['final'\] is a string \('yes'\); expected true"),
    ("eval.json", '{"domains": {}, "evaluated": {"iteration": 2.5}}', r"evaluated\['iteration'\] is a number \(2.5\)"),
])
def test_a_damaged_run_file_is_refused_naming_the_file_and_what_it_should_hold(tmp_path, capsys, file, content,
                                                                               problem):
    run = tmp_path / "run"
    run.mkdir()
    (run / file).write_text(content)
    with pytest.raises(ValueError, match=rf"report: .*run/{file}: {problem}"):
        load_run(run)
    assert main(["report", str(run), "--out", str(tmp_path / "page")]) == 2
    assert re.search(rf"dgseg report: error: report: .*run/{file}: {problem}", capsys.readouterr().err)
    assert not (tmp_path / "page" / "report.html").exists()


def test_a_prediction_stored_at_another_size_is_drawn_at_the_scenes_size_and_a_colour_image_is_refused(tmp_path):
    from PIL import Image

    from dgseg.report import figures

    scene = tmp_path / "scene"
    scene.mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(scene / "image.jpg")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(scene / "label.png")
    Image.fromarray(np.ones((2, 3), np.uint8)).save(scene / "half.png")  # evaluated with prescale 0.5
    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)

    def run(name, pred):
        return RunRecord(name, tmp_path, classes=["a", "b"], palette=palette, examples={"d": [
            {"image": scene / "image.jpg", "label": scene / "label.png", "pred": pred}]})

    row = figures.prediction_row([run("a", scene / "label.png"), run("b", scene / "half.png")], "d", 0,
                                 tmp_path / "row.jpg")
    pixels = np.asarray(Image.open(row))
    assert pixels.shape[:2] == (4, 4 * 6 + 3 * 4)  # image | label | a | b, 4-pixel gaps
    assert pixels[:, -6:, 0].min() > 200  # b's prediction (all class 1, red) fills its whole tile
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(scene / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png: a RGB image; expected a class-index PNG"):
        figures.prediction_row([run("c", scene / "rgb.png")], "d", 0, tmp_path / "row.jpg")


def _examples_on_disk(run_dir, domains) -> None:
    ev = json.loads((run_dir / "eval.json").read_text())
    assert set(ev["examples"]) == set(domains)
    for items in ev["examples"].values():
        assert len(items) == 2 and all((run_dir / p).is_file() for paths in items for p in paths.values())


def test_dgseg_train_keeps_the_examples_of_its_final_evaluation_in_eval_json(tmp_path, capsys):
    """`dgseg train` prints the final table without writing eval.json a second time (without its examples)."""
    import yaml
    from tiny import tiny_dict

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_dict(train__max_iters=2, eval__examples=2)))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    _examples_on_disk(tmp_path / "run", ["synthetic-game", "synthetic-night"])
    assert "synthetic-night" in capsys.readouterr().out


def test_dgseg_eval_stores_examples_and_its_json_gives_the_mean(tmp_path, capsys):
    from tiny_run import tiny_run

    run = tiny_run(tmp_path / "run", eval__examples=2, train__max_iters=1)  # its checkpoint: the final weights
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--json"]) == 0
    _examples_on_disk(run, ["synthetic-game", "synthetic-night"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stored = json.loads((run / "eval.json").read_text())
    assert printed["mean"] == stored["mean"] and printed["mean"]["over"] == ["synthetic-night"]
    assert printed["domains"].keys() == stored["domains"].keys()
    assert printed["evaluated"] == stored["evaluated"] and stored["evaluated"]["final"] is True


def test_trainings_final_evaluation_names_its_checkpoint_and_settings(two_runs):
    record = json.loads((two_runs[0] / "eval.json").read_text())["evaluated"]
    assert record["by"] == "dgseg train" and record["iteration"] == 2 and record["final"] is True
    assert Path(record["file"]) == (two_runs[0] / "checkpoints" / "iter_0000002.safetensors").resolve()
    assert record["overrides"] == [] and record["changed"] == {}
    assert record["settings"]["mode"] == "whole" and record["settings"]["precision"] == "float32"
    md = (two_runs[0] / "eval.md").read_text()
    assert "iter_0000002.safetensors`, iteration 2 (the run's final weights); eval.mode whole, crop 32" in md


def test_the_page_names_each_runs_evaluated_checkpoint_and_marks_one_not_of_the_final_weights(two_runs, tmp_path):
    earlier = tmp_path / "earlier"
    shutil.copytree(two_runs[0], earlier)
    ev = json.loads((earlier / "eval.json").read_text())
    ev["evaluated"].update(iteration=1, final=False, not_final="the run's train.max_iters is 2",
                           overrides=["eval.mode=slide"], changed={"eval.mode": ["whole", "slide"]},
                           file=str(earlier / "checkpoints" / "iter_0000001.safetensors"))
    (earlier / "eval.json").write_text(json.dumps(ev))
    text = write_report([earlier, two_runs[1]], tmp_path / "page").read_text()
    table = text.split('<table id="domains">')[1].split("</table>")[0]
    assert ('<td>earlier<br><span class="note">eval.json: iteration 1 (not the run&#x27;s final weights: the '
            "run&#x27;s train.max_iters is 2)</span></td>") in table
    assert "<td>frozen</td>" in table  # its eval.json: the final weights, unmarked
    facts = text.split("<h2>Run facts</h2>")[1]
    assert ("iter_0000001.safetensors, iteration 1 (not the run&#x27;s final weights: the run&#x27;s "
            "train.max_iters is 2); --set eval.mode=slide; differs from the run&#x27;s config in eval.mode") in facts
    assert "iter_0000002.safetensors, iteration 2 (the run&#x27;s final weights)" in facts


def test_a_run_resumed_for_longer_since_its_evaluation_is_marked_not_evaluated_on_its_final_weights(two_runs,
                                                                                                    tmp_path):
    """Its eval.json still says final: the report looks at the run's checkpoints (a resume stopped early too)."""
    resumed = tmp_path / "resumed"
    shutil.copytree(two_runs[0], resumed)
    assert load_run(resumed).evaluated["final"] is True
    ckpts = resumed / "checkpoints"
    shutil.copy(ckpts / "iter_0000002.safetensors", ckpts / "iter_0000003.safetensors")
    record = load_run(resumed).evaluated
    assert record["final"] is False and record["iteration"] == 2
    assert record["not_final"] == "a later checkpoint of the run follows: iter_0000003.safetensors"
    assert "eval.json: iteration 2 (not the run&#x27;s final weights: a later checkpoint" in \
        write_report([resumed], tmp_path / "page", scenes=0).read_text()


COMMITTED = sorted(p.parent for p in (Path(__file__).parent.parent / "benchmarks").glob("**/eval.json")
                   if "bench-48000" not in p.parts)


@pytest.mark.skipif(not COMMITTED, reason="no committed benchmark run folders in this checkout")
def test_committed_eval_json_files_from_before_the_record_still_load(tmp_path):
    runs = [load_run(p) for p in COMMITTED]
    assert all(r.domains and r.evaluated == {} for r in runs)  # history: no record, nothing marked
    text = write_report(COMMITTED[:2], tmp_path / "page", scenes=0).read_text()
    assert "<td>-</td></tr>" in text.split("<h2>Run facts</h2>")[1] and "eval.json:" not in text


def test_example_images_are_kept_at_most_512_px_on_the_longer_side_landscape_or_portrait():
    import torch

    from dgseg.engine.examples import example

    for h, w, want in ((100, 2048, (25, 512)), (2048, 100, (512, 25)), (60, 80, (60, 80))):
        kept = example(torch.zeros(3, h, w), torch.zeros(h, w, dtype=torch.long), torch.ones(h, w, dtype=torch.long))
        assert kept["image"].shape[:2] == kept["label"].shape == kept["pred"].shape == want
