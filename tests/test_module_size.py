"""House rule: no Python module in the package or the benchmark harness is over 400 lines, so each one
stays one readable idea (issue 19). A module that grows past it is split, not exempted."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400


def test_no_module_is_over_400_lines():
    too_long = {
        str(path.relative_to(ROOT)): n
        for folder in ("src", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them by role): {too_long}"
