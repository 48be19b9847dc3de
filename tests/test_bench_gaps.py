"""dgseg.bench_gaps: each method's source curve against the frozen head's, quarter by quarter."""

import math

from dgseg.bench_gaps import curve_gaps, gaps_markdown, mean_curve, quarter_gaps

ITERS = [100, 200, 300, 400, 500, 600, 700, 800]


def _row(curves: dict[int, dict[int, float]], iters: int = 800) -> dict:
    return {"source_curves": curves, "iters": iters}


def test_each_quarter_averages_the_gap_over_its_own_validations():
    ref = {i: 50.0 for i in ITERS}
    curve = {i: 50.0 + (i // 200.01 + 1) for i in ITERS}  # +1 in the first quarter ... +4 in the last
    assert quarter_gaps(curve, ref, 800) == [1.0, 2.0, 3.0, 4.0]
    gaps = quarter_gaps({200: 51.0, 600: 53.0}, {200: 50.0, 600: 50.0}, 800)
    assert gaps[0] == 1.0 and gaps[2] == 3.0  # (q-1)T/4 < i <= qT/4: 200 is in the first quarter, 600 in the third
    assert math.isnan(gaps[1]) and math.isnan(gaps[3])  # no validation there


def test_the_seed_mean_uses_only_validations_every_seed_has():
    assert mean_curve({0: {100: 10.0, 200: 20.0}, 1: {100: 30.0}}) == {100: 20.0}
    assert mean_curve({}) == {}


def test_methods_are_compared_with_the_frozen_heads_seed_mean():
    frozen = _row({0: {i: 50.0 for i in ITERS}, 1: {i: 52.0 for i in ITERS}})  # seed mean 51
    rein = _row({0: {i: 47.0 for i in ITERS}, 1: {i: 49.0 for i in ITERS}})  # seed mean 48
    full = _row({0: {i: 51.0 + i / 100 for i in ITERS}})
    gaps = curve_gaps({"frozen": frozen, "rein": rein, "full": full})
    assert set(gaps) == {"rein", "full"}
    assert gaps["rein"]["quarters"] == [-3.0] * 4
    assert gaps["rein"]["per_seed"] == {0: [-4.0] * 4, 1: [-2.0] * 4}
    assert (gaps["rein"]["above"], gaps["rein"]["shared"]) == (0, 8)
    assert (gaps["full"]["above"], gaps["full"]["shared"]) == (8, 8)
    text = gaps_markdown(gaps)
    assert "| rein | -3.0 (-4.0 to -2.0) | -3.0 (-4.0 to -2.0) |" in text and "| 0 of 8 |" in text
    assert "| full | +1.5 |" in text  # one seed: no range


def test_the_seed_mean_is_a_mean_and_the_quarters_compare_seed_means_at_shared_validations():
    frozen = _row({s: {i: 50.0 for i in ITERS} for s in range(3)})
    uneven = _row({0: {i: 40.0 for i in ITERS}, 1: {i: 41.0 for i in ITERS}, 2: {i: 51.0 for i in ITERS if i != 100}})
    gaps = curve_gaps({"frozen": frozen, "vpt": uneven})["vpt"]
    assert gaps["quarters"] == [-6.0] * 4  # mean 44, not the median 41; iteration 100 (one seed lacks it) left out
    assert gaps["shared"] == 7 and gaps["per_seed"][2] == [1.0] * 4


def test_no_comparison_without_the_frozen_head_nor_for_another_schedule_length():
    row = _row({0: {i: 50.0 for i in ITERS}})
    assert curve_gaps({"rein": row}) == {}
    assert set(curve_gaps({"frozen": row, "rein": _row({0: {100: 1.0}}, iters=400), "lora": row})) == {"lora"}
    assert gaps_markdown({}) == ""
