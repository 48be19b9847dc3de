"""Source curves of ``dgseg bench`` against a reference method, quarter by quarter of the schedule.

A final score is one checkpoint; the periodic source validations say whether a method runs above or under
another all along or only ends there. For every method this compares its seed-mean source curve with the
reference's (the frozen head by default: the baseline the paper's methods must beat) at the validation
iterations both have, per quarter of the schedule, and per seed against the reference's seed mean.
"""

from __future__ import annotations

import math
import statistics

REFERENCE = "frozen"
QUARTERS = 4


def mean_curve(curves: dict[int, dict[int, float]]) -> dict[int, float]:
    """iteration -> mean over seeds, at the iterations every seed validated."""
    curves = [c for c in curves.values() if c]
    if not curves:
        return {}
    shared = set.intersection(*(set(c) for c in curves))
    return {i: statistics.fmean(c[i] for c in curves) for i in sorted(shared)}


def quarter_gaps(curve: dict[int, float], reference: dict[int, float], iters: int) -> list[float]:
    """Mean of ``curve - reference`` over the shared validations in each quarter of ``iters`` iterations,
    ((q - 1) T / 4, q T / 4]; NaN for a quarter without one."""
    gaps = []
    for q in range(1, QUARTERS + 1):
        lo, hi = (q - 1) * iters / QUARTERS, q * iters / QUARTERS
        diffs = [d for i in curve if i in reference and lo < i <= hi
                 if not math.isnan(d := curve[i] - reference[i])]  # a NaN validation compares nothing
        gaps.append(statistics.fmean(diffs) if diffs else math.nan)
    return gaps


def curve_gaps(table: dict, reference: str = REFERENCE) -> dict:
    """method -> {'quarters': the seed means' gaps per quarter, 'per_seed': seed -> gaps of that seed's
    curve against the reference's seed mean, 'above': validations where the seed means are above the
    reference's, 'shared': validations compared}; empty without the reference. A method trained for another
    number of iterations than the reference is left out (its quarters are other iterations)."""
    if reference not in table:
        return {}
    ref = mean_curve(table[reference]["source_curves"])
    iters = table[reference]["iters"]
    gaps = {}
    for method, row in table.items():
        if method == reference or row["iters"] != iters:
            continue
        mine = mean_curve(row["source_curves"])
        shared = [i for i in mine if i in ref and not math.isnan(mine[i] - ref[i])]
        if not shared:
            continue
        gaps[method] = {
            "quarters": quarter_gaps(mine, ref, iters),
            "per_seed": {s: quarter_gaps(c, ref, iters) for s, c in row["source_curves"].items() if c},
            "above": sum(mine[i] > ref[i] for i in shared), "shared": len(shared)}
    return gaps


def gaps_markdown(gaps: dict, reference: str = REFERENCE) -> str:
    if not gaps:
        return ""
    head = ["method", *[f"quarter {q}" for q in range(1, QUARTERS + 1)], "validations above"]
    lines = [f"## Source curves against {reference}, per quarter of the schedule", "",
             f"Mean source validation mIoU minus {reference}'s, both averaged over seeds at each validation, then over "
             f"the validations of each quarter that every seed of both has; in brackets the range of the same gap for "
             f"each seed of the method (at all of its validations) against {reference}'s seed mean. Last column: validations at which the method's seed mean is above "
             f"{reference}'s.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, g in gaps.items():
        cells = [method]
        for q, gap in enumerate(g["quarters"]):
            seeds = [v[q] for v in g["per_seed"].values() if not math.isnan(v[q])]
            spread = f" ({min(seeds):+.1f} to {max(seeds):+.1f})" if len(seeds) > 1 else ""
            cells.append("-" if math.isnan(gap) else f"{gap:+.1f}{spread}")
        cells.append(f"{g['above']} of {g['shared']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"
