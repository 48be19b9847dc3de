"""``dgseg report``: one self-contained HTML page that compares run folders (tables, per-class heat maps,
confusion matrices, predictions, curves, run facts). :func:`write_report` is the entry point."""

from dgseg.report.page import write_report

__all__ = ["write_report"]
