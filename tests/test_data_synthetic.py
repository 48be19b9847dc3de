"""The built-in synthetic benchmark: deterministic scenes, one label map across styles, every class."""

import numpy as np
import pytest
import torch

from dgseg.data import STYLES, SyntheticDataset, build_dataset, make_scene, render
from dgseg.data.labels import CLASSES

SIZE = (96, 192)  # (H, W): small and fast; the layout does not depend on the size


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(seed=0, split="train", index=i, size=SIZE) for i in range(24)]


def test_a_scene_is_a_pure_function_of_seed_split_index():
    a, b = make_scene(4, "val", 7, SIZE), make_scene(4, "val", 7, SIZE)
    np.testing.assert_array_equal(a.label, b.label)
    for style in ("game", "night", "snow"):
        np.testing.assert_array_equal(render(a, style), render(b, style))
    assert not np.array_equal(make_scene(5, "val", 7, SIZE).label, a.label)


def test_every_style_renders_the_same_label_map():
    datasets = [SyntheticDataset(style, "val", length=2, size=SIZE, seed=1) for style in STYLES]
    items = [ds[1] for ds in datasets]
    for item in items[1:]:
        torch.testing.assert_close(item["label"], items[0]["label"])
    images = [item["image"] for item in items]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not torch.equal(images[i], images[j]), (STYLES[i], STYLES[j])


def test_train_and_val_scenes_are_disjoint():
    train = [make_scene(0, "train", i, SIZE).label for i in range(4)]
    val = [make_scene(0, "val", i, SIZE).label for i in range(4)]
    assert all(not np.array_equal(t, v) for t in train for v in val)


def test_layout_does_not_depend_on_the_resolution():
    small = make_scene(0, "train", 2, (64, 128)).label
    big = make_scene(0, "train", 2, (128, 256)).label
    assert (big[::2, ::2] == small).mean() > 0.9


def test_every_class_occurs_over_a_modest_number_of_scenes(scenes):
    present = np.zeros(256, bool)
    for s in scenes:
        present[np.unique(s.label)] = True
    missing = [c for i, c in enumerate(CLASSES) if not present[i]]
    assert not missing
    assert not present[19:].any()  # only the 19 train IDs, no ignore


def test_objects_occlude_in_depth_order(scenes):
    for s in scenes:
        depth, label = s.gb.depth, s.label
        assert np.isinf(depth[label == 10]).all()  # sky is infinitely far
        assert np.isfinite(depth[label != 10]).all()
        # a column of ground gets nearer towards the bottom of the image
        ground = s.gb.face == 1
        col = ground[:, SIZE[1] // 2]
        d = depth[col, SIZE[1] // 2]
        assert (np.diff(d) <= 1e-3).all()


def test_game_style_colours_follow_the_classes(scenes):
    for s in scenes[:8]:
        img = render(s, "game").astype(int)
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        sky, veg, road = s.label == 10, s.label == 8, s.label == 0
        assert (b[sky] > r[sky]).mean() > 0.95  # blue sky
        assert (g[veg] > b[veg]).mean() > 0.95 and (g[veg] >= r[veg]).mean() > 0.9  # green plants
        grey = img[road].max(-1) - img[road].min(-1)
        assert np.median(grey) < 25  # grey asphalt (white paint too)


def test_label_edges_are_colour_edges_in_the_game_style(scenes):
    """Where the label changes between two neighbours, the flat-shaded colour changes too."""
    hits = total = 0
    for s in scenes[:8]:
        img = render(s, "game").astype(int)
        lab = s.label
        for axis in (0, 1):
            edge = np.diff(lab.astype(int), axis=axis) != 0
            colour_step = np.abs(np.diff(img, axis=axis)).sum(-1) > 12
            hits += (edge & colour_step).sum()
            total += edge.sum()
    assert hits / total > 0.9


def test_target_styles_shift_the_appearance(scenes):
    s = scenes[0]
    game, photo, night, fog = (render(s, st).astype(float) for st in ("game", "photo", "night", "fog"))
    road = (s.label[:, 1:] == 0) & (s.label[:, :-1] == 0)

    def roughness(img):  # mean step between horizontal neighbours on the road
        return np.abs(np.diff(img, axis=1)).sum(-1)[road].mean()

    assert roughness(photo) > 2 * roughness(game)  # photo textures
    assert night.mean() < 0.5 * photo.mean()  # dark
    far = s.gb.depth > 60
    assert fog[far].std() < photo[far].std()  # fog hides distant contrast
    palette = render(s, "palette").astype(float)
    sky = s.label == 10
    assert palette[sky][:, 0].mean() > palette[sky][:, 2].mean()  # the blue sky is no longer blue


def test_dataset_items_and_arguments():
    ds = build_dataset("synthetic-photo", root=None, split="val", length=3, size=(32, 64), seed=2)
    item = ds[2]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 32, 64)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (32, 64)
    assert item["path"] == "synthetic://photo/val/000002"
    assert len(ds) == 3 and len(SyntheticDataset("game")) == 1000
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="style 'sepia'"):
        SyntheticDataset("sepia")
    with pytest.raises(ValueError, match="split"):
        SyntheticDataset("game", split="holdout")


def test_transform_is_applied():
    def half(image, label):
        return image[:, ::2, ::2].float(), label[::2, ::2]

    item = SyntheticDataset("rain", "train", length=1, size=(32, 64), transform=half)[0]
    assert item["image"].shape == (3, 16, 32) and item["image"].dtype == torch.float32


def test_rendered_scenes_are_cached_once_and_reads_are_fresh_copies(monkeypatch):
    from dgseg.data.synthetic import dataset as synthetic_dataset

    synthetic_dataset.clear_scene_cache()
    calls = []
    real_render = synthetic_dataset.render
    monkeypatch.setattr(synthetic_dataset, "render", lambda scene, style: calls.append(style) or real_render(scene, style))
    ds = SyntheticDataset("night", "val", length=2, size=(32, 64), seed=5)
    first, label, _ = ds.read(1)
    first[:] = 0  # the caller owns what it gets
    label[:] = 0
    again, label_again, _ = SyntheticDataset("night", "val", length=2, size=(32, 64), seed=5).read(1)
    assert calls == ["night"]  # a second dataset of the same scenes renders nothing
    scene = make_scene(5, "val", 1, (32, 64))
    assert np.array_equal(again, real_render(scene, "night")) and np.array_equal(label_again, scene.label)
    SyntheticDataset("night", "val", length=2, size=(32, 64), seed=6).read(1)  # another seed: another scene
    assert calls == ["night", "night"]


def test_the_scene_cache_keeps_to_its_budget(monkeypatch):
    from dgseg.data.synthetic import dataset as synthetic_dataset

    synthetic_dataset.clear_scene_cache()
    monkeypatch.setattr(synthetic_dataset, "CACHE_MB", 32 * 64 * 4 * 1.5 / 2**20)  # room for one 32 x 64 scene
    ds = SyntheticDataset("game", "train", length=3, size=(32, 64))
    for i in range(3):
        ds.read(i)
    assert len(synthetic_dataset._CACHE) == 1 and synthetic_dataset._CACHED_BYTES == 32 * 64 * 4
    synthetic_dataset.clear_scene_cache()


def test_a_synthetic_entry_is_read_whatever_the_case_of_its_name():
    """build_dataset reads 'Synthetic-Night' as the generated night style; its entry's length, size and seed
    reach it too (they were dropped: 1000 scenes instead of 3)."""
    from tiny import tiny_config

    from dgseg.config import DatasetSpec
    from dgseg.engine.data import build_eval_set

    cfg = tiny_config(data__val=[{"name": "Synthetic-Night", "length": 3, "size": [40, 56], "seed": 2}],
                      data__source=None)
    data = build_eval_set(cfg.data.val[0], cfg=cfg)
    assert len(data) == 3 and tuple(data[0]["label"].shape) == (40, 56)
    assert cfg.data.val[0].generated and not DatasetSpec(name="gtav", root="data/gta").generated
