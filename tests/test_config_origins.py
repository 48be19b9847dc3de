"""A config error names where the key it is about was written: the ``--set`` override, or the YAML file that set it
(the ``_base_`` file for a base's key, the including file when it overrides that key)."""

from __future__ import annotations

import pytest
from test_config import write

from dgseg.cli import main
from dgseg.config import ConfigError, load_config


@pytest.fixture
def cfgs(tmp_path):
    """cfgs/child.yaml includes cfgs/base.yaml, which includes ../root.yaml; each sets keys of its own."""
    write(tmp_path / "root.yaml", """
        name: root
        train: {max_iters: 10, batch_size: 2}
    """)
    (tmp_path / "cfgs").mkdir()
    write(tmp_path / "cfgs" / "base.yaml", """
        _base_: ../root.yaml
        train: {lr: 0.001}
        data:
          train: [{name: synthetic-game, length: 4}]
    """)
    return tmp_path / "cfgs"


def error_of(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, list(overrides))
    return str(exc.value)


def test_a_typo_in_set_names_the_override_not_the_file(cfgs):
    msg = error_of(cfgs / "base.yaml", ["train.max_iter=3"])
    assert msg.startswith("override 'train.max_iter=3': unknown config key 'train.max_iter'. Did you mean: "
                          "train.max_iters"), msg
    msg = error_of(cfgs / "base.yaml", ["modle.x=1"])  # a section the override creates
    assert msg.startswith("override 'modle.x=1': unknown config key 'modle'. Did you mean: model"), msg


def test_a_typo_in_a_base_names_the_base_not_the_including_file(cfgs):
    write(cfgs / "typo.yaml", "_base_: base.yaml\ntrain: {max_iter: 3}\n")
    child = write(cfgs / "child.yaml", "_base_: typo.yaml\nname: child\n")
    msg = error_of(child)
    assert msg.startswith(f"{cfgs / 'typo.yaml'}: unknown config key 'train.max_iter'. Did you mean: train.max_iters")
    # two levels down: the root's typo, named as the chain of includes reaches it
    write(cfgs.parent / "root.yaml", "name: root\ntrain: {max_iters: 10, batch_sise: 2}\n")
    msg = error_of(cfgs / "base.yaml")
    assert msg.startswith(f"{cfgs / '../root.yaml'}: unknown config key 'train.batch_sise'. Did you mean: "
                          "train.batch_size"), msg


def test_a_config_reached_through_a_link_names_its_base_where_it_lies(cfgs, tmp_path):
    write(cfgs / "typo.yaml", "_base_: base.yaml\ntrain: {max_iter: 3}\n")
    write(cfgs / "exp.yaml", "_base_: typo.yaml\n")
    (tmp_path / "mine").mkdir()
    write(tmp_path / "mine" / "typo.yaml", "train: {lr: 0.1}\n")  # not the file the link's target includes
    (tmp_path / "mine" / "exp.yaml").symlink_to(cfgs / "exp.yaml")
    msg = error_of(tmp_path / "mine" / "exp.yaml")
    assert msg.startswith(f"{cfgs / 'typo.yaml'}: unknown config key 'train.max_iter'"), msg


def test_a_typo_in_the_child_names_the_child(cfgs):
    child = write(cfgs / "child.yaml", "_base_: base.yaml\ntrain: {lrr: 0.1}\n")
    assert error_of(child).startswith(f"{child}: unknown config key 'train.lrr'. Did you mean: train.lr")


def test_a_typo_in_a_list_entry_names_the_file_that_wrote_the_list(cfgs):
    child = write(cfgs / "child.yaml", "_base_: base.yaml\ndata:\n  train: [{name: folder, root: x, lable_map: {}}]\n")
    assert error_of(child).startswith(f"{child}: unknown config key 'data.train[0].lable_map'. Did you mean: "
                                      "data.train[0].label_map")
    write(cfgs / "base.yaml", "data:\n  train: [{name: synthetic-game, lenght: 4}]\n")
    child = write(cfgs / "child.yaml", "_base_: base.yaml\ndata: {crop_size: [32, 32]}\n")  # merges beside it
    assert error_of(child).startswith(f"{cfgs / 'base.yaml'}: unknown config key 'data.train[0].lenght'")


def test_a_wrong_value_in_a_base_is_named_with_the_base(cfgs):
    write(cfgs / "base.yaml", "train: {lr: fast, batch_size: 2}\n")
    child = write(cfgs / "child.yaml", "_base_: base.yaml\ntrain: {batch_size: 4}\n")
    assert error_of(child) == f"{cfgs / 'base.yaml'}: train.lr: expected a number, got 'fast'"
    write(cfgs / "base.yaml", "train: {lr: -1}\n")  # a check after the types: the base's key too
    assert error_of(child) == f"{cfgs / 'base.yaml'}: train.lr: must be > 0, got -1.0"


def test_a_wrong_value_in_a_base_that_the_child_overrides_is_no_error(cfgs):
    write(cfgs / "base.yaml", "train: {lr: fast, batch_size: 0}\ndata:\n  train: [{name: synthetic-game, lenght: 4}]\n")
    child = write(cfgs / "child.yaml", """
        _base_: base.yaml
        train: {lr: 0.01, batch_size: 2}
        data:
          train: [{name: synthetic-game, length: 4}]
    """)
    cfg = load_config(child)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.data.train[0].length) == (0.01, 2, 4)
    # the child's own wrong value is the child's
    write(child, child.read_text().replace("batch_size: 2", "batch_size: -2"))
    assert error_of(child) == f"{child}: train.batch_size: must be > 0, got -2"


def test_a_wrong_value_from_set_names_the_override(cfgs):
    assert error_of(cfgs / "base.yaml", ["train.lr=fast"]) == \
        "override 'train.lr=fast': train.lr: expected a number, got 'fast'"
    assert error_of(cfgs / "base.yaml", ["data.train=[{name: synthetic-game, length: 0}]"]) == \
        "override 'data.train=[{name: synthetic-game, length: 0}]': data.train[0].length: must be > 0, got 0"
    # an override replacing a whole section: its keys are the override's, none is the file's any more
    msg = error_of(cfgs / "base.yaml", ["train={lr: 0.1, max_iter: 2}"])
    assert msg.startswith("override 'train={lr: 0.1, max_iter: 2}': unknown config key 'train.max_iter'"), msg
    # a later file value overridden by --set, then a typo in the file beside it: the file's
    msg = error_of(write(cfgs / "child.yaml", "_base_: base.yaml\ntrain: {lrr: 1}\n"), ["train.lr=0.1"])
    assert msg.startswith(f"{cfgs / 'child.yaml'}: unknown config key 'train.lrr'"), msg


def test_a_check_of_a_default_names_the_other_key_it_names(cfgs):
    """eval.stride is left at its default; the eval.crop the override wrote is what it is checked against."""
    msg = error_of(cfgs / "base.yaml", ["eval.crop=256"])
    assert msg.startswith("override 'eval.crop=256': eval.stride (341) must not exceed eval.crop (256)"), msg
    write(cfgs / "base.yaml", "eval: {mode: slide}\n")  # a key beside it set by a file: the default is no one's
    msg = error_of(cfgs / "base.yaml", ["eval.crop=256"])
    assert msg.startswith("override 'eval.crop=256': eval.stride (341)"), msg
    write(cfgs / "base.yaml", "eval: {crop: 256}\n")
    assert error_of(cfgs / "base.yaml").startswith(f"{cfgs / 'base.yaml'}: eval.stride (341)")


def test_the_command_line_names_the_override_or_the_base(cfgs, capsys):
    assert main(["info", str(cfgs / "base.yaml"), "--set", "train.max_iter=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dgseg info: error: override 'train.max_iter=3': unknown config key 'train.max_iter'"), err
    child = write(cfgs / "child.yaml", "_base_: base.yaml\nname: child\n")
    write(cfgs / "base.yaml", "train: {max_iter: 3}\n")
    assert main(["info", str(child)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"dgseg info: error: {cfgs / 'base.yaml'}: unknown config key 'train.max_iter'"), err


def test_a_set_on_a_checkpoints_config_names_the_override():
    """``dgseg eval/predict --checkpoint C --set ...`` builds on the config the checkpoint stores."""
    from dgseg.config import config_to_dict
    from dgseg.engine.inference import config_of_checkpoint

    meta = {"config": config_to_dict(load_config())}
    with pytest.raises(ConfigError) as exc:
        config_of_checkpoint(meta, ["eval.crop=256", "train.max_iter=3"])
    assert str(exc.value).startswith("override 'train.max_iter=3': unknown config key 'train.max_iter'")
    with pytest.raises(ConfigError) as exc:
        config_of_checkpoint(meta, ["eval.crop=256"])  # the stored stride, checked against the override's crop
    assert str(exc.value).startswith("override 'eval.crop=256': eval.stride (341) must not exceed eval.crop (256)")


# ------------------------------------------------------------------ errors while the model is built


@pytest.fixture
def tiny_yaml(tmp_path):
    """tiny.yaml: the tiny experiment of tests/tiny.py as a file (a Rein adapter whose queries feed the head)."""
    import yaml
    from tiny import tiny_dict

    return write(tmp_path / "tiny.yaml", yaml.safe_dump(tiny_dict()))


def build_error(path, overrides=()) -> str:
    import dgseg

    cfg = load_config(path, list(overrides))
    with pytest.raises(ValueError) as exc:
        dgseg.build_model(cfg)
    return str(exc.value)


def test_a_model_build_error_names_the_file_or_override_that_wrote_its_key(tiny_yaml):
    """An impossible model (Rein queries for a linear head) is found while the model is built, not when the config
    is read: the error names the writer of the key it names, as a config error does."""
    child = write(tiny_yaml.parent / "child.yaml", "_base_: tiny.yaml\nmodel: {head: {name: linear}, "
                                                   "adapter: {link: true}}\n")
    link = "model.adapter.link: true feeds Rein queries to a mask2former head, but model.head.name is 'linear'"
    assert build_error(child) == f"{child}: {link}; set model.adapter.link=false"
    # link: true is a default there, no one's: the override of the other key named is
    assert build_error(tiny_yaml, ["model.head.name=linear"]).startswith(f"override 'model.head.name=linear': {link}")
    assert build_error(tiny_yaml, ["model.adapter.query_dim=16"]).startswith(
        "override 'model.adapter.query_dim=16': model.adapter.query_dim (16) must equal model.head.hidden_dim (32)")


def test_a_model_build_error_from_a_checkpoints_config_names_the_checkpoint(tiny_yaml):
    import dgseg
    from dgseg.config import config_to_dict
    from dgseg.engine.inference import config_of_checkpoint

    stored = config_to_dict(load_config(tiny_yaml))
    stored["model"]["adapter"]["query_dim"] = 16  # a stored config this dgseg cannot build
    with pytest.raises(ValueError) as exc:
        dgseg.build_model(config_of_checkpoint({"config": stored}, checkpoint="runs/a/checkpoints"))
    assert str(exc.value).startswith("the config stored in runs/a/checkpoints: model.adapter.query_dim (16) must "
                                     "equal model.head.hidden_dim (32)"), str(exc.value)
    with pytest.raises(ValueError) as exc:
        dgseg.build_model(config_of_checkpoint({"config": config_to_dict(load_config(tiny_yaml))},
                                               ["model.head.name=linear"], checkpoint="runs/a/checkpoints"))
    assert str(exc.value).startswith("override 'model.head.name=linear': model.adapter.link: true"), str(exc.value)


def test_the_command_line_names_the_file_of_a_model_build_error(tiny_yaml, capsys):
    child = write(tiny_yaml.parent / "child.yaml", "_base_: tiny.yaml\nmodel: {adapter: {query_dim: 16}}\n")
    assert main(["info", str(child)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"dgseg info: error: {child}: model.adapter.query_dim (16) must equal"), err


def test_a_weights_file_error_names_the_writer_of_the_key_holding_that_file(tiny_yaml, tmp_path):
    """A WeightsError names the file, not the key: the override, base or command-line option that set the key
    whose value is that file is named, not the config file that did not."""
    from dgseg.config.origins import wrote

    junk = tmp_path / "junk weights.pth"  # a space in the name: still a file
    junk.write_bytes(b"not a weights file")
    message = f"{junk}: could not be read as plain tensors with torch.load(weights_only=True)"
    override = f"model.backbone.weights={junk}"
    assert build_error(tiny_yaml, [override]).startswith(f"override '{override}': {message}")
    base = write(tiny_yaml.parent / "weights.yaml", f"_base_: tiny.yaml\nmodel: {{backbone: {{weights: '{junk}'}}}}\n")
    child = write(tiny_yaml.parent / "child.yaml", "_base_: weights.yaml\ntrain: {lr: 0.5}\n")
    assert build_error(child).startswith(f"{base}: {message}")

    import dgseg

    cfg = load_config(tiny_yaml)
    cfg.model.backbone.weights = str(junk)
    wrote(cfg, "model.backbone.weights", "--backbone")
    with pytest.raises(ValueError) as exc:
        dgseg.build_model(cfg)
    assert str(exc.value).startswith(f"--backbone: {message}"), str(exc.value)


def test_a_weights_file_error_is_named_by_its_own_key_not_a_name_it_quotes_or_a_shorter_file_inside_it(tiny_yaml,
                                                                                                        tmp_path,
                                                                                                        monkeypatch):
    """A timm name with its pretrained tag reads as a file name (``.lvd142m``) and is quoted in the message
    ("does not fit the architecture '...'"); a short file value (``w.pt``) is a substring of another file's path:
    neither names the writer of the file the message is about."""
    import torch

    import dgseg
    from dgseg.config.origins import wrote

    other = tmp_path / "raw.pt"
    torch.save({"foo": torch.zeros(3)}, other)
    cfg = load_config(tiny_yaml, ["model.backbone.name=vit_small_patch14_dinov2.lvd142m"])
    monkeypatch.chdir(tmp_path)
    cfg.model.backbone.weights = "raw.pt"  # shorter than the quoted name
    wrote(cfg, "model.backbone.weights", "--backbone")
    with pytest.raises(ValueError) as exc:
        dgseg.build_model(cfg)
    assert str(exc.value).startswith("--backbone: raw.pt does not fit the architecture"), str(exc.value)

    from dgseg.config.origins import file_origin

    origins = {("model", "text", "weights"): ("override 'model.text.weights=w.pt'", True)}
    assert file_origin(f"{other}: could not be read", origins, {"model": {"text": {"weights": "w.pt"}}}) is None
