"""Label tables: the 19 train IDs, the Cityscapes palette and every dataset's raw-ID -> train-ID map."""

import json

import numpy as np
import pytest

from dgseg.data.labels import (
    CITYSCAPES_IDS,
    CLASSES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    SYNTHIA_IDS,
    TRAIN_IDS,
    URBANSYN_IDS,
    colorize,
    make_id_map,
    mapillary_id_map,
    mapillary_train_id,
    rein_readable_train_id,
)

# cityscapesscripts/helpers/labels.py: name and color of the 19 classes with a train ID, in train-ID order
# (REFERENCE.md section 4 lists the same class order).
OFFICIAL_TRAIN_CLASSES = [
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32)),
]  # fmt: skip


def test_nineteen_classes_in_cityscapes_train_id_order():
    assert NUM_CLASSES == 19 and IGNORE_INDEX == 255
    assert CLASSES[:3] == ("road", "sidewalk", "building")
    assert CLASSES[10] == "sky" and CLASSES[13] == "car" and CLASSES[18] == "bicycle"
    assert len(CLASSES) == len(set(CLASSES)) == 19
    assert CLASSES == tuple(name for name, _ in OFFICIAL_TRAIN_CLASSES)


def test_palette_is_the_official_cityscapes_colours():
    assert PALETTE.shape == (19, 3) and PALETTE.dtype == np.uint8
    assert tuple(PALETTE[0]) == (128, 64, 128)  # road
    assert tuple(PALETTE[10]) == (70, 130, 180)  # sky
    assert tuple(PALETTE[13]) == (0, 0, 142)  # car
    assert len({tuple(c) for c in PALETTE}) == 19
    assert [tuple(int(v) for v in c) for c in PALETTE] == [color for _, color in OFFICIAL_TRAIN_CLASSES]


def test_cityscapes_label_ids_map_to_train_ids():
    raw = np.array(
        [[7, 8, 11, 12, 13, 17, 19, 20, 21, 22], [23, 24, 25, 26, 27, 28, 31, 32, 33, 0]], np.uint8
    )
    expected = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17, 18, 255]], np.uint8)
    np.testing.assert_array_equal(CITYSCAPES_IDS(raw), expected)
    assert CITYSCAPES_IDS.lut.shape == (256,)
    # void / unlabeled classes are known but ignored
    for void in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30):
        assert CITYSCAPES_IDS.lut[void] == 255 and CITYSCAPES_IDS.known[void]


def test_values_outside_a_table_are_reported_and_ignored():
    raw = np.array([[7, 34], [200, 26]], np.uint8)
    mapped, unknown = CITYSCAPES_IDS.map_checked(raw)
    assert unknown == [34, 200]
    np.testing.assert_array_equal(mapped, [[0, 255], [255, 13]])
    assert TRAIN_IDS.unknown_values(np.array([0, 18, 255], np.uint8)) == []
    assert TRAIN_IDS.unknown_values(np.array([19, 254], np.uint8)) == [19, 254]


def test_train_id_files_keep_every_train_id_and_ignore():
    """BDD100K masks and *_labelTrainIds.png are already train IDs (REFERENCE.md section 4): 0..18 and 255 map
    to themselves."""
    raw = np.array([*range(19), 255], np.uint8)
    np.testing.assert_array_equal(TRAIN_IDS(raw), raw)


def test_synthia_table_is_16_bit():
    assert SYNTHIA_IDS.lut.shape == (65536,)
    raw = np.array([3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11, 0, 13, 22], np.uint16)
    expected = list(range(19)) + [255, 255, 255]
    np.testing.assert_array_equal(SYNTHIA_IDS(raw), expected)
    assert SYNTHIA_IDS.unknown_values(np.array([23, 1000], np.uint16)) == [23, 1000]


def test_urbansyn_void_19_is_ignored():
    np.testing.assert_array_equal(URBANSYN_IDS(np.array([0, 18, 19], np.uint8)), [0, 18, 255])
    assert URBANSYN_IDS.unknown_values(np.array([19, 255], np.uint8)) == []
    # REFERENCE.md section 4: UrbanSyn's ss/*.png hold train IDs 0..18 and 19 = void; any other value is reported
    assert URBANSYN_IDS.unknown_values(np.arange(256, dtype=np.uint8)) == list(range(20, 255))


# tools/convert_datasets/mapillary2cityscape.py (Rein), get_trans_idx: after the exact class names, substring
# tests on the `readable` name (lower case, spaces and "-" removed), the first that holds wins, in this order.
REIN_SUBSTRING_TESTS = [
    (("trafficsign", "front", "back"), "traffic sign"),
    (("onrail",), "train"),
    (("cyclist", "rider"), "rider"),
    (("pole", "streetlight"), "pole"),
    (("curb", "pedestrianarea"), "sidewalk"),
    (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), "road"),
]


@pytest.mark.parametrize(("parts", "expected"), REIN_SUBSTRING_TESTS)
def test_reins_readable_name_substrings_beyond_the_v12_classes(parts, expected):
    # every substring counts on its own, also in names the 66 classes of config_v1.2.json do not have
    for part in parts:
        assert rein_readable_train_id(f"Old {part} X") == CLASSES.index(expected), part


def test_reins_substring_tests_run_in_its_order():
    assert rein_readable_train_id("Back Rider") == CLASSES.index("traffic sign")  # before "rider"
    assert rein_readable_train_id("On Rails Cyclist") == CLASSES.index("train")  # before "cyclist"
    assert rein_readable_train_id("Pole Curb") == CLASSES.index("pole")  # before "curb"
    assert rein_readable_train_id("Curb Parking") == CLASSES.index("sidewalk")  # before "parking"
    assert rein_readable_train_id("Traffic Light") == CLASSES.index("traffic light")  # exact names first
    assert rein_readable_train_id("Guard Rail") == IGNORE_INDEX


def test_make_id_map_rejects_train_ids_out_of_range():
    with pytest.raises(ValueError, match="train ID 19"):
        make_id_map("bad", {1: 19}, known=[1])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("construction--flat--road", "road"),
        ("construction--flat--crosswalk-plain", "road"),
        ("construction--flat--service-lane", "road"),
        ("marking--crosswalk-zebra", "road"),
        ("marking--general", "road"),
        ("construction--barrier--curb", "sidewalk"),
        ("construction--flat--pedestrian-area", "sidewalk"),
        ("object--street-light", "pole"),
        ("object--support--pole", "pole"),
        ("object--traffic-sign--back", "traffic sign"),
        ("object--traffic-sign--front", "traffic sign"),
        ("human--rider--motorcyclist", "rider"),
        ("human--rider--other-rider", "rider"),
        ("object--vehicle--on-rails", "train"),
        ("object--vehicle--bicycle", "bicycle"),
        ("nature--terrain", "terrain"),
    ],
)
def test_mapillary_names_follow_the_dg_rules(name, expected):
    assert mapillary_train_id(name) == CLASSES.index(expected)


@pytest.mark.parametrize(
    "name",
    [
        "object--vehicle--caravan",
        "void--unlabeled",
        "nature--water",
        "animal--bird",
    ],
)
def test_other_mapillary_classes_are_ignored(name):
    assert mapillary_train_id(name) == IGNORE_INDEX


def test_mapillary_map_follows_the_config_order_not_fixed_numbers(tmp_path):
    names = [
        "nature--sky",
        "void--unlabeled",
        "object--vehicle--car",
        "construction--flat--road",
        "human--rider--bicyclist",
        "construction--barrier--curb",
    ]
    config = {"labels": [{"name": n, "readable": n.split("--")[-1].title()} for n in names]}
    path = tmp_path / "config_v1.2.json"
    path.write_text(json.dumps(config))
    id_map = mapillary_id_map(path)
    np.testing.assert_array_equal(id_map(np.arange(6, dtype=np.uint8)), [10, 255, 13, 0, 12, 1])
    assert id_map.unknown_values(np.array([5, 6], np.uint8)) == [6]


def test_mapillary_config_without_labels_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "config_v1.2.json"
    path.write_text(json.dumps({"classes": []}))
    with pytest.raises(ValueError, match="config_v1.2.json"):
        mapillary_id_map(path)


def test_colorize_uses_the_palette_and_black_for_ignore():
    rgb = colorize(np.array([[0, 255]], np.uint8))
    assert rgb.shape == (1, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)
