"""The report page in a real browser (headless Chromium): it loads, every picture shows, no errors."""

from __future__ import annotations

import pytest
from browser import check_page, find_chromium, screenshot

from dgseg.report import write_report

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium: apt-get install chromium (CI's .ci/run installs it; see README, Development)")


def test_the_comparison_page_loads_with_every_image_and_both_runs(tmp_path, tiny_report_runs):
    page = write_report(tiny_report_runs, tmp_path / "page")
    seen = check_page(page, tmp_path)
    assert seen["runs"] == ["rein", "frozen"]
    assert seen["images"] >= 8 and seen["broken"] == []
    assert seen["errors"] == [] and seen["uncaught"] == []
    shot = screenshot(page, tmp_path / "page.png", tmp_path)
    assert shot.stat().st_size > 20_000


def test_a_missing_picture_is_caught(tmp_path, tiny_report_runs):
    page = write_report(tiny_report_runs, tmp_path / "page")
    (tmp_path / "page" / "report_assets" / "bars.png").unlink()
    seen = check_page(page, tmp_path)
    assert seen["broken"] == ["report_assets/bars.png"] and seen["errors"]
