"""Config: YAML with ``_base_`` includes, ``--set`` overrides, and validation errors that name the key."""

from __future__ import annotations

import textwrap

import pytest

from dgseg.config import BackboneConfig, Config, ConfigError, config_to_dict, domain_name, load_config


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def base_and_child(tmp_path):
    write(tmp_path / "base.yaml", """
        model:
          backbone: {name: vit_large_patch14_dinov2, img_size: 512}
          adapter: {name: rein, tokens: 50}
        train: {lr: 0.0001, batch_size: 4, max_iters: 1000}
    """)
    (tmp_path / "exp").mkdir()
    return write(tmp_path / "exp" / "child.yaml", """
        _base_: ../base.yaml
        model:
          adapter: {rank: 8}
        train: {batch_size: 2}
        name: child
    """)


def test_defaults_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.backbone.name == "vit_small_patch14_dinov2"
    assert cfg.train.lr == 1e-4


def test_base_include_is_merged_and_overridden_by_the_including_file(base_and_child):
    cfg = load_config(base_and_child)
    assert cfg.name == "child"
    assert cfg.model.backbone.name == "vit_large_patch14_dinov2"  # from the base
    assert cfg.model.adapter.tokens == 50  # from the base, sibling key of an overridden one
    assert cfg.model.adapter.rank == 8  # from the child
    assert cfg.train.batch_size == 2  # child overrides base
    assert cfg.train.max_iters == 1000


def test_list_of_bases_later_ones_win(tmp_path):
    write(tmp_path / "a.yaml", "train: {lr: 0.1, seed: 1}\n")
    write(tmp_path / "b.yaml", "train: {lr: 0.2}\n")
    cfg = load_config(write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\n"))
    assert cfg.train.lr == 0.2 and cfg.train.seed == 1


def test_circular_base_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_overrides_apply_after_the_file(base_and_child):
    cfg = load_config(base_and_child, overrides=["train.lr=2e-4", "model.adapter.name=lora", "train.batch_size=8"])
    assert cfg.train.lr == pytest.approx(2e-4)
    assert isinstance(cfg.train.lr, float)
    assert cfg.model.adapter.name == "lora"
    assert cfg.train.batch_size == 8
    assert cfg.model.adapter.tokens == 50  # untouched keys keep the file's values


def test_override_null_and_list_values():
    cfg = load_config(overrides=["model.backbone.patch_size=null", "model.backbone.out_indices=[1, 3, 5, 7]"])
    assert cfg.model.backbone.patch_size is None
    assert cfg.model.backbone.out_indices == [1, 3, 5, 7]


def test_scientific_notation_without_dot_is_a_number_in_files_and_overrides(tmp_path):
    # PyYAML (YAML 1.1) reads "1e-4" as a string; numeric keys must still accept it
    cfg = load_config(write(tmp_path / "x.yaml", "train: {lr: 1e-4, max_iters: 2e3}\n"))
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.max_iters == 2000
    assert load_config(overrides=["train.weight_decay=5E-2"]).train.weight_decay == pytest.approx(0.05)


def test_number_like_strings_stay_strings_in_string_keys():
    assert load_config(overrides=["name=1e5"]).name == "1e5"


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["train.lr"])


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path / "x.yaml", "train: {lrr: 0.1}\n"))
    msg = str(exc.value)
    assert "train.lrr" in msg and "train.lr" in msg.split("Did you mean")[1]
    assert str(tmp_path / "x.yaml") in msg


def test_unknown_override_section_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"'modle'.*Did you mean: model\b"):
        load_config(overrides=["modle.backbone.name=x"])
    with pytest.raises(ConfigError, match=r"model\.backbone\.img_szie.*model\.backbone\.img_size"):
        load_config(overrides=["model.backbone.img_szie=64"])


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.lr=fast", "train.lr", "number"),
        ("train.batch_size=2.5", "train.batch_size", "integer"),
        ("train.batch_size=four", "train.batch_size", "integer"),
        ("model.adapter.shared=3", "model.adapter.shared", "true or false"),
        ("model.backbone.name=[1, 2]", "model.backbone.name", "string"),
        ("data.crop_size=512", "data.crop_size", "list"),
        ("data.crop_size=[512, x]", "data.crop_size[1]", "integer"),
        ("model.backbone.patch_size=big", "model.backbone.patch_size", "an integer or null"),
        ("model.backbone.out_indices=[7, x]", "model.backbone.out_indices[1]", "integer"),
        ("model.backbone.model_kwargs=[depth, 2]", "model.backbone.model_kwargs", "a mapping or null"),
        ("model.backbone=vit", "model.backbone", "mapping"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(override, key, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[override])
    msg = str(exc.value)
    assert msg.startswith(f"override '{override}': {key}:"), msg  # the override that wrote it, then the key
    assert expected in msg


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=-1e-4", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.seed=-1", "train.seed"),
        ("train.seed=4294967296", "train.seed"),  # 2**32: numpy's seeds end below it
        ("train.max_iters=0", "train.max_iters"),
        ("model.backbone.img_size=0", "model.backbone.img_size"),
        ("model.backbone.patch_size=-16", "model.backbone.patch_size"),
        ("model.adapter.rank=-1", "model.adapter.rank"),
        ("data.crop_size=[2048, 2048]", "data.crop_size"),  # scale [2048, 512] x ratio 2.0: short edge <= 1024
        ("data.ratio_range=[2.0, 0.5]", "data.ratio_range"),
        ("eval.stride=1024", "eval.stride"),
        ("train.warmup_iters=40000", "train.warmup_iters"),
        ("model.adapter.name=prompt", "model.adapter.name"),
        ("train.lr=.nan", "train.lr"),  # YAML's .nan / .inf are numbers; no key of the schema takes them
        ("train.weight_decay=.inf", "train.weight_decay"),
        ("data.flip_prob=5", "data.flip_prob"),
        ("model.head.importance_sample_ratio=1.5", "model.head.importance_sample_ratio"),
        ("model.head.num_queries=0", "model.head.num_queries"),
        ("model.head.dec_layers=0", "model.head.dec_layers"),
        ("model.head.oversample_ratio=0.5", "model.head.oversample_ratio"),
        ("model.head.no_object_weight=-0.1", "model.head.no_object_weight"),
        ("model.text.temperature=0", "model.text.temperature"),
        ("model.backbone.drop_path=-3", "model.backbone.drop_path"),
        ("model.backbone.drop_path=1", "model.backbone.drop_path"),
        ("model.adapter.lr_mult=-0.1", "model.adapter.lr_mult"),
        ("train.power=-1", "train.power"),
        ("data.scale=[2048, 0]", "data.scale"),
        ("train.no_decay_keys=[norm, '']", "train.no_decay_keys"),
        ("eval.crop=[512, 0]", "eval.crop"),
        ("eval.crop=[512, 512, 3]", "eval.crop"),
        ("eval.stride=[341, 600]", "eval.stride"),  # the window is 512 wide
        ("data.val=[{name: synthetic-game, length: 0}]", "data.val[0].length"),
        ("data.val=[{name: synthetic-game, size: [64]}]", "data.val[0].size"),
        ("data.val=[{name: synthetic-game, resize: 0}]", "data.val[0].resize"),
        ("data.val=[{name: synthetic-game, resize: [512, 0]}]", "data.val[0].resize"),
    ],
)
def test_impossible_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[override])
    assert str(exc.value).startswith(f"override '{override}': {key}"), str(exc.value)


def test_a_bad_data_scale_is_described_as_the_resize_reads_it():
    with pytest.raises(ConfigError, match=r"data.scale: expected \[long edge, short edge\] > 0"):
        load_config(overrides=["data.scale=[2048, 0]"])
    with pytest.raises(ConfigError, match=r"data.scale: expected \[W, H\] \(data.keep_ratio: false\) > 0"):
        load_config(overrides=["data.scale=[1280, 0]", "data.keep_ratio=false"])


def test_eval_windows_are_one_size_or_h_w():
    cfg = load_config(overrides=["eval.crop=[512, 1024]", "eval.stride=[341, 683]"])
    assert (cfg.eval.crop, cfg.eval.stride) == ([512, 1024], [341, 683])
    assert load_config().eval.crop == 512


def test_the_edges_of_the_ranges_are_allowed():
    cfg = load_config(overrides=["data.flip_prob=0", "model.head.oversample_ratio=1", "model.head.no_object_weight=0",
                                 "model.backbone.drop_path=0", "data.val=[{name: synthetic-game, resize: 0.5}]",
                                 "train.seed=4294967295"])
    assert (cfg.data.flip_prob, cfg.model.head.oversample_ratio, cfg.data.val[0].resize) == (0.0, 1.0, 0.5)
    assert cfg.train.seed == 2**32 - 1


@pytest.mark.parametrize("bases", ["3", "[null]", "[base.yaml, 2]", "{a: base.yaml}", "''"])
def test_a_base_that_is_not_file_names_is_an_error_naming_the_file(tmp_path, bases):
    write(tmp_path / "base.yaml", "name: base\n")
    child = write(tmp_path / "child.yaml", f"_base_: {bases}\nname: child\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: _base_: expected a file name or a list of file names"):
        load_config(child)


def test_two_val_entries_with_one_table_label_are_an_error():
    # the same name and split (here two synthetic-night sets that differ only in seed) would share one
    # result key: the second domain's numbers would silently replace the first's
    night = "{name: synthetic-night, split: val, length: 2, seed: %d}"
    with pytest.raises(ConfigError, match=r"data\.val\[1\] and data\.val\[2\] are both 'synthetic-night:val'"):
        load_config(overrides=[f"data.val=[{{name: synthetic-game}}, {night % 0}, {night % 7}]"])
    with pytest.raises(ConfigError, match=r"are both 'synthetic-night:val'"):  # not "data.source ... not one of"
        load_config(overrides=[f"data.val=[{night % 0}, {night % 7}]", "data.source=synthetic-night"])
    # another split, or a label, makes them two rows
    ok = load_config(overrides=[f"data.val=[{night % 0}, {{name: synthetic-night, split: test, seed: 7}}]"])
    assert len(ok.data.val) == 2
    folder = "{name: folder, root: data/%s, split: val%s}"
    cfg = load_config(overrides=[f"data.val=[{folder % ('a', '')}, {folder % ('b', ', label: site-b')}]",
                                 "data.source=site-b", "data.mean_over=[folder]"])
    assert [domain_name(s, cfg.data.val) for s in cfg.data.val] == ["folder", "site-b"]
    with pytest.raises(ConfigError, match=r"data\.val\[1\]\.label: expected a non-empty name"):
        load_config(overrides=[f"data.val=[{folder % ('a', '')}, {folder % ('b', ', label: ' + chr(34) * 2)}]"])


def test_a_data_source_missing_from_a_replaced_data_val_says_how_to_fix_it():
    # the demo config trains on synthetic-game; a --set data.val without it leaves data.source pointing nowhere
    cs = "data.val=[{name: cityscapes, root: data/cityscapes, split: val}]"
    with pytest.raises(ConfigError, match=r"data\.source: 'synthetic-game' is not one of the data\.val names or "
                                          r"labels \['cityscapes'\]; set data\.source to the one that is the training "
                                          r"domain, or to null \(--set data\.source=null\) when no data\.val entry"):
        load_config(overrides=[cs, "data.source=synthetic-game"])
    assert load_config(overrides=[cs, "data.source=null"]).data.source is None


def test_crop_larger_than_the_resize_explains_why():
    with pytest.raises(ConfigError, match=r"data\.crop_size .*larger than the largest resize"):
        load_config(overrides=["data.scale=[1024, 256]", "data.ratio_range=[0.5, 1.0]", "data.crop_size=[512, 512]"])
    # the same crop fits once the resize can reach it
    assert load_config(overrides=["data.scale=[1024, 256]", "data.crop_size=[512, 512]"]).data.crop_size == [512, 512]


def test_model_kwargs_mapping_round_trips(tmp_path):
    path = write(tmp_path / "tiny.yaml", """
        model:
          backbone:
            model_kwargs: {depth: 2, embed_dim: 64, num_heads: 2}
    """)
    cfg = load_config(path, overrides=["model.backbone.model_kwargs.depth=3"])
    assert cfg.model.backbone.model_kwargs == {"depth": 3, "embed_dim": 64, "num_heads": 2}
    assert config_to_dict(cfg)["model"]["backbone"]["model_kwargs"] == {"depth": 3, "embed_dim": 64, "num_heads": 2}
    assert BackboneConfig().model_kwargs is None


def test_data_source_and_mean_over_name_results_rows_not_entry_names():
    # an entry with a label writes its results under the label; a name that repeats writes name:split. Naming the
    # entry's name passed the config check and failed only after training, when the table looked the row up
    night = "{name: synthetic-night, split: val, label: night}"
    with pytest.raises(ConfigError, match=r"data\.source: 'synthetic-night' is not one of .*\(data\.val\[1\] writes "
                                          r"row 'night'\)"):
        load_config(overrides=[f"data.val=[{{name: synthetic-game}}, {night}]", "data.source=synthetic-night"])
    with pytest.raises(ConfigError, match=r"data\.mean_over: \['synthetic-night'\] must name data\.val entries"):
        load_config(overrides=[f"data.val=[{{name: synthetic-game}}, {night}]", "data.mean_over=[synthetic-night]"])
    both = "data.val=[{name: synthetic-game, split: val}, {name: synthetic-game, split: test}]"
    with pytest.raises(ConfigError, match=r"data\.source: 'synthetic-game' .*row 'synthetic-game:val'"):
        load_config(overrides=[both, "data.source=synthetic-game"])
    cfg = load_config(overrides=[both, "data.source=synthetic-game:val", "data.mean_over=[synthetic-game:test]"])
    assert (cfg.data.source, cfg.data.mean_over) == ("synthetic-game:val", ["synthetic-game:test"])


def test_a_domain_named_twice_in_mean_over_is_an_error():
    val = "data.val=[{name: synthetic-game}, {name: synthetic-night}, {name: synthetic-fog}]"
    with pytest.raises(ConfigError, match=r"data\.mean_over: \['synthetic-night'\] named more than once"):
        load_config(overrides=[val, "data.mean_over=[synthetic-night, synthetic-night, synthetic-fog]"])


@pytest.mark.parametrize("entry, key", [
    ("data.train=[{name: synthetic-game, resize: [512, 256]}]", "data.train[0].resize: applies to evaluation entries"),
    ("data.train=[{name: synthetic-game, prescale: 0.5}]", "data.train[0].prescale: applies to evaluation entries"),
    ("data.train=[{name: synthetic-game}, {name: synthetic-fog, mode: slide}]", "data.train[1].mode: applies to eval"),
    ("data.train=[{name: synthetic-game, label: game}]", "data.train[0].label: applies to evaluation entries"),
    ("data.train=[{name: gtav, root: data/gta, length: 100}]", "data.train[0].length: applies to the generated"),
    ("data.val=[{name: cityscapes, root: data/cs, split: val, size: [512, 1024]}]", "data.val[0].size: applies to"),
    ("data.val=[{name: folder, root: data/x, split: val, seed: 3}]", "data.val[0].seed: applies to the generated"),
    ("data.val=[{name: synthetic-fog, seed: -1}]", "data.val[0].seed: must be >= 0"),
])
def test_a_data_entry_key_the_entry_never_reads_is_an_error(entry, key):
    # these keys were silently dropped: a training entry is never resized by `resize`, a gtav entry never
    # shortened by `length`; a negative synthetic seed failed at the first sample
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[entry])
    assert str(exc.value).startswith(f"override '{entry}': {key}"), str(exc.value)


@pytest.mark.parametrize("overrides, message", [
    (["model.adapter.tokens=0"], r"model\.adapter\.tokens: must be >= 1 for rein"),  # was a matmul shape error
    (["model.adapter.name=vpt", "model.adapter.link=false", "model.adapter.tokens=0"], r"tokens: must be >= 1 for vpt"),
    (["model.adapter.name=lora", "model.adapter.link=false", "model.adapter.rank=0"],  # was a ZeroDivisionError
     r"model\.adapter\.rank: must be >= 1 for lora"),
    (["model.backbone.out_indices=[]"], r"model\.backbone\.out_indices: expected 4 block indices"),  # timm's max()
    (["model.backbone.out_indices=[1, 3, 5]"], r"model\.backbone\.out_indices: expected 4 block indices"),
    (["model.head.hidden_dim=48", "model.adapter.query_dim=48"], r"model\.head\.hidden_dim: must be a multiple of 32"),
    (["model.head.num_heads=7"], r"model\.head\.hidden_dim \(256\) must be divisible by model\.head\.num_heads \(7\)"),
])
def test_model_sizes_that_cannot_build_a_model_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)
    # rank 0 is Rein's full rank; the linear head has no hidden_dim to divide
    assert load_config(overrides=["model.adapter.rank=0"]).model.adapter.rank == 0
    assert load_config(overrides=["model.head.name=linear", "model.adapter.link=false",
                                  "model.head.num_heads=7"]).model.head.num_heads == 7


def test_a_missing_base_is_named_with_the_file_that_includes_it(tmp_path):
    (tmp_path / "exp").mkdir()
    child = write(tmp_path / "exp" / "child.yaml", "_base_: [../base.yaml]\nname: child\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: _base_ '\.\./base\.yaml': config file not found: .*base\.yaml"):
        load_config(child)


@pytest.mark.parametrize("override, key", [
    ("model.backbone.weights=''", "model.backbone.weights"),  # was 'model.backbone.weights:  is a folder'
    ("model.text.embeddings=' '", "model.text.embeddings"),
    ("data.train=[{name: gtav, root: ''}]", "data.train[0].root"),  # was read as the current folder
    ("data.val=[{name: folder, root: data/x, split_file: ''}]", "data.val[0].split_file"),
])
def test_an_empty_path_is_an_error_naming_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[override])
    assert str(exc.value).startswith(f"override '{override}': {key}: expected a path or null, got "), str(exc.value)
    assert load_config(overrides=["data.train=[{name: synthetic-game, root: ''}]"]).data.train[0].root == ""
