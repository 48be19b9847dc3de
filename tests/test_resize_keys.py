"""A training-resize key that the resize then ignores is refused when a new run starts, naming the file or
override that wrote it: with ``data.short_edges`` (Rein's RandomChoiceResize) ``data.scale``,
``data.ratio_range`` and ``data.keep_ratio`` do nothing; without it ``data.max_long_edge`` does nothing. A run
trained before the check resumes as it was."""

from __future__ import annotations

import pytest
import yaml
from tiny import tiny_config, tiny_dict

import dgseg
from dgseg.cli import main
from dgseg.config import ConfigError
from dgseg.config.validate import refuse_unused_resize_keys
from dgseg.engine import train_setup
from dgseg.engine.train import train

SHORT = [24, 32, 40]  # every shipped config passes the check: tests/test_configs.py


def default_resize(**data_keys):
    """The tiny config with the training resize keys at their defaults (the tiny one sets scale and ratio), then
    ``data_keys``."""
    data = tiny_dict()
    for key in ("scale", "ratio_range"):
        data["data"].pop(key)
    data["data"].update(data_keys)
    return data


@pytest.mark.parametrize("key, value", [("scale", [2048, 1024]), ("ratio_range", [1.0, 1.0]), ("keep_ratio", False)])
def test_a_key_short_edges_overrides_is_refused(key, value):
    refuse_unused_resize_keys(dgseg.config.config_from_dict(default_resize(short_edges=SHORT)))
    cfg = dgseg.config.config_from_dict(default_resize(short_edges=SHORT, **{key: value}))
    with pytest.raises(ConfigError, match=rf"^data\.{key} \S.* does nothing in this config: data\.short_edges is set "
                                          r"\(\[24, 32, 40\]\).*Remove data\." + key):
        refuse_unused_resize_keys(cfg)


def test_a_long_edge_cap_without_short_edges_is_refused():
    refuse_unused_resize_keys(tiny_config())  # scale and ratio_range set, no short_edges: all used
    with pytest.raises(ConfigError, match=r"^data\.max_long_edge 1000 does nothing in this config: data\.short_edges "
                                          r"is null"):
        refuse_unused_resize_keys(tiny_config(data__max_long_edge=1000))
    refuse_unused_resize_keys(tiny_config(data__short_edges=SHORT, data__max_long_edge=1000, data__scale=[2048, 512],
                                          data__ratio_range=[0.5, 2.0]))  # the defaults, written out: allowed


def test_train_refuses_it_by_the_file_or_override_that_wrote_it_and_makes_no_folder(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_dict(data__short_edges=SHORT)))  # the tiny config's scale stays
    out = tmp_path / "runs" / "exp"
    assert main(["train", str(path), "--out", str(out), "--no-progress"]) == 2
    assert f"{path}: data.scale [128, 48] does nothing in this config" in capsys.readouterr().err
    over = "data.keep_ratio=false"
    argv = ["train", str(path), "--out", str(out), "--no-progress", "--set", "data.scale=[2048,512]", "--set",
            "data.ratio_range=[0.5,2.0]", "--set", over]
    assert main(argv) == 2
    assert f"override '{over}': data.keep_ratio False does nothing" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_run_trained_before_the_check_still_resumes(tmp_path, monkeypatch):
    cfg = tiny_config(data__short_edges=SHORT, train__max_iters=2, train__checkpoint_interval=2)
    with monkeypatch.context() as m:  # the dgseg that trained it did not check
        m.setattr(train_setup, "refuse_unused_resize_keys", lambda cfg: None)
        train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="data.scale"):
        train(cfg, tmp_path / "other", progress=False)
    cfg.train.max_iters = 4
    assert train(cfg, tmp_path / "run", resume=True, progress=False)["step"] == 4
