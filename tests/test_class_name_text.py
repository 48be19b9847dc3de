"""Class names and domain labels are the user's text: they reach the report's figures, eval.md's tables and the
config checks as written, whatever characters they hold (``$`` is no matplotlib math, ``|`` no table column),
and a name with a line break is refused with the file and index."""

from __future__ import annotations

import json

import pytest

from dgseg.config.schema import ConfigError
from dgseg.data.classes import ClassSetError, class_set_from_dict
from dgseg.metrics import format_table, per_class_table

NAMES = ["road|street", r"$\foo$", "a $x^$ b", "cost $5"]
DOMAINS = [r"site $\bar$", "b|c"]


def test_report_draws_names_with_dollar_signs_literally(tmp_path):
    """matplotlib reads text between two ``$`` as math: ``$\\foo$`` made ``dgseg report`` fail (ParseFatalException:
    Unknown symbol) while saving the per-class, confusion and legend pictures."""
    from dgseg.report.page import write_report

    run = tmp_path / "run$1$"
    run.mkdir()
    k = len(NAMES)
    domain = {"mIoU": 40.0, "aAcc": 60.0, "IoU": [10.0, 20.0, 30.0, 100.0],
              "confusion": [[5 if i == j else 1 for j in range(k)] for i in range(k)]}
    (run / "eval.json").write_text(json.dumps({
        "source": DOMAINS[0], "classes": NAMES, "palette": [[10 * i, 20, 30] for i in range(k)],
        "domains": {d: domain for d in DOMAINS}, "mean": {"over": DOMAINS[1:], "mIoU": 40.0}}))
    (run / "log.jsonl").write_text(json.dumps({"iter": 1, "loss": 1.0, "eval": {DOMAINS[0]: {"mIoU": 40.0}}}) + "\n")
    page = write_report([run], tmp_path / "report")
    assets = {p.name for p in (tmp_path / "report" / "report_assets").iterdir()}
    assert {"classes.png", "confusion_0.png", "bars.png", "curves.png"} <= assets, assets
    assert "b|c" in page.read_text()  # the domain table, in HTML
    import numpy as np

    from dgseg.report.figures import legend  # drawn beside the scenes, which this run has none of

    assert legend(NAMES, np.zeros((k, 3), np.uint8), tmp_path / "legend.png").stat().st_size > 0


def test_training_curves_draw_a_domain_label_with_dollar_signs(tmp_path):
    from dgseg.viz import plain_text, plot_curves

    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"iter": 1, "loss": 1.0}) + "\n"
                   + json.dumps({"iter": 1, "eval": {DOMAINS[0]: {"mIoU": 40.0}}}) + "\n")
    assert plot_curves(log, tmp_path / "curves.png").stat().st_size > 0
    assert plain_text("cost $5 $x$") == r"cost \$5 \$x\$"


def test_eval_tables_keep_a_pipe_in_its_cell():
    results = {d: {"mIoU": 40.0, "aAcc": 60.0, "IoU": [10.0, 20.0, 30.0, 100.0]} for d in DOMAINS}
    for table in (per_class_table(results, NAMES), format_table(results, source=DOMAINS[0])):
        lines = table.splitlines()
        columns = {line.replace("\\|", "").count("|") for line in lines}
        assert len(columns) == 1, table  # every row has as many cells as the header
    assert "road\\|street" in per_class_table(results, NAMES)


@pytest.mark.parametrize("name", ["new\nline", "tab\there", "cr\r"])
def test_a_class_name_with_a_control_character_is_refused(name):
    with pytest.raises(ClassSetError, match=r"my\.yaml: names\[1\] is .*line break"):
        class_set_from_dict({"names": ["ok", name]}, "my.yaml")


def test_a_domain_label_with_a_line_break_is_refused():
    from tiny import tiny_dict

    from dgseg.config import config_from_dict

    data = tiny_dict()
    data["data"]["val"][1]["label"] = "night\nrain"
    with pytest.raises(ConfigError, match=r"data\.val\[1\]\.label: expected a non-empty name on one line"):
        config_from_dict(data)
