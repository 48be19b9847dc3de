import math

import numpy as np
import pytest
import torch

from dgseg.metrics import SegMetric, format_table, per_class_table

# A 2x4 image with 3 classes; one ignored pixel.
TARGET = np.array([[0, 0, 1, 1], [2, 2, 255, 0]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 0]])
# Labelled pixels (gt -> pred): 0->0, 0->1, 1->1, 1->1, 2->2, 2->0, 0->0  (the 255 pixel is skipped)
CONFUSION = [[2, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_confusion_matrix_is_counted_by_ground_truth_row_and_prediction_column():
    m = SegMetric(num_classes=3)
    m.update(PRED, TARGET)
    assert m.confusion.dtype == torch.int64
    assert m.confusion.tolist() == CONFUSION


def test_compute_gives_hand_computed_percentages():
    m = SegMetric(num_classes=3)
    m.update(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    r = m.compute()
    # IoU = tp / (gt + pred - tp): class 0: 2/(3+3-2), class 1: 2/(2+3-2), class 2: 1/(2+1-1)
    assert r["IoU"] == pytest.approx([50.0, 200 / 3, 50.0])
    assert r["mIoU"] == pytest.approx((50 + 200 / 3 + 50) / 3)
    assert r["aAcc"] == pytest.approx(100 * 5 / 7)
    assert r["mAcc"] == pytest.approx((200 / 3 + 100 + 50) / 3)


def test_class_never_seen_is_nan_and_left_out_of_the_mean():
    m = SegMetric(num_classes=4)
    m.update(PRED, TARGET)
    r = m.compute()
    assert math.isnan(r["IoU"][3])
    assert r["mIoU"] == pytest.approx((50 + 200 / 3 + 50) / 3)
    assert r["mAcc"] == pytest.approx((200 / 3 + 100 + 50) / 3)


def test_false_positive_only_class_has_zero_iou_and_counts_in_the_mean():
    m = SegMetric(num_classes=2)
    m.update(np.array([[0, 1]]), np.array([[0, 0]]))
    r = m.compute()
    assert r["IoU"] == [50.0, 0.0]
    assert r["mIoU"] == 25.0
    assert r["mAcc"] == 50.0  # class 1 has no ground truth: its accuracy is NaN and skipped


def test_ignored_pixels_are_skipped_whatever_the_prediction():
    m = SegMetric(num_classes=3, ignore_index=255)
    m.update(np.array([[0, 2, 1]]), np.array([[255, 255, 1]]))
    assert m.confusion.sum() == 1
    assert m.compute()["aAcc"] == 100.0


def test_batch_update_equals_per_image_updates():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (3, 6, 7), generator=g)
    target = torch.randint(0, 6, (3, 6, 7), generator=g)
    target[target == 5] = 255
    batched, single = SegMetric(5), SegMetric(5)
    batched.update(pred, target)
    for p, t in zip(pred, target):
        single.update(p.numpy().astype(np.uint8), t.numpy().astype(np.uint8))
    assert torch.equal(batched.confusion, single.confusion)
    assert batched.compute()["IoU"] == single.compute()["IoU"]


def test_merge_sums_and_reset_clears():
    a, b = SegMetric(3), SegMetric(3)
    a.update(PRED[:1], TARGET[:1])
    b.update(PRED[1:], TARGET[1:])
    assert a.merge(b).confusion.tolist() == CONFUSION
    assert a.all_reduce() is a  # no process group: a no-op
    a.reset()
    assert a.confusion.sum() == 0
    assert math.isnan(a.compute()["mIoU"])
    with pytest.raises(ValueError, match="num_classes=4"):
        a.merge(SegMetric(4))


def test_all_reduce_sums_over_a_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        m = SegMetric(3)
        m.update(PRED, TARGET)
        assert m.all_reduce().confusion.tolist() == CONFUSION  # one rank: the sum is itself
    finally:
        dist.destroy_process_group()


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"pred \(2, 3\).*target \(2, 4\)"):
        SegMetric(3).update(np.zeros((2, 3), np.int64), np.zeros((2, 4), np.int64))


def test_wrong_rank_and_float_logits_are_refused():
    with pytest.raises(ValueError, match="shape"):
        SegMetric(3).update(np.zeros(4, np.int64), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="argmax"):
        SegMetric(3).update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2, dtype=torch.long))


def test_out_of_range_target_value_is_named():
    with pytest.raises(ValueError, match="target value 7"):
        SegMetric(3).update(np.zeros((1, 2), np.int64), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="target value -1"):
        SegMetric(3).update(np.zeros((1, 2), np.int64), np.array([[0, -1]]))


def test_out_of_range_prediction_is_refused():
    with pytest.raises(ValueError, match="pred value 3"):
        SegMetric(3).update(np.array([[3, 0]]), np.array([[0, 0]]))


def _result(miou, aacc=90.0):
    return {"mIoU": miou, "IoU": [miou, miou], "aAcc": aacc, "mAcc": miou}


def cells(line):
    return [c.strip() for c in line.split("|")[1:-1]]


def test_format_table_puts_the_source_first_and_reports_rpd():
    results = {"cityscapes": _result(40.0), "gtav": _result(80.0), "bdd100k": _result(20.0)}
    lines = format_table(results, ["a", "b"], source="gtav").splitlines()
    assert cells(lines[0]) == ["domain", "mIoU", "aAcc", "rPD"]
    assert cells(lines[2]) == ["gtav (source)", "80.00", "90.00", "-"]
    assert cells(lines[3]) == ["cityscapes", "40.00", "90.00", "50.00"]
    assert cells(lines[4]) == ["bdd100k", "20.00", "90.00", "25.00"]
    assert cells(lines[5]) == ["mean (targets)", "30.00", "90.00", "37.50"]
    assert len({len(line) for line in lines}) == 1  # columns padded to one width


def test_format_table_without_source_has_no_rpd_and_rejects_an_unknown_source():
    lines = format_table({"a": _result(10.0), "b": _result(math.nan)}).splitlines()
    assert cells(lines[0]) == ["domain", "mIoU", "aAcc"]
    assert cells(lines[3]) == ["b", "-", "90.00"]  # NaN prints as '-'
    assert cells(lines[4]) == ["mean (targets)", "10.00", "90.00"]
    with pytest.raises(ValueError, match="'gtav'"):
        format_table({"a": _result(10.0)}, source="gtav")
    with pytest.raises(ValueError, match="2 per-class IoUs but 3 class names"):
        format_table({"a": _result(10.0)}, ["x", "y", "z"])


def test_per_class_table_has_a_row_per_class_and_the_miou():
    results = {
        "target": {"mIoU": 25.0, "IoU": [50.0, math.nan, 0.0]},
        "src": {"mIoU": 60.0, "IoU": [60.0] * 3},
    }
    lines = per_class_table(results, ["road", "sky", "car"], source="src").splitlines()
    assert "src (source)" in lines[0] and lines[0].index("src") < lines[0].index("target")
    assert [cells(ln)[0] for ln in lines[2:]] == ["road", "sky", "car", "mIoU"]
    assert cells(lines[3]) == ["sky", "60.00", "-"]  # NaN IoU
    assert cells(lines[5]) == ["mIoU", "60.00", "25.00"]
