"""docs/ARCHITECTURE.md stays true: the files it names exist, and each registry agrees with the names the
config accepts (a new adapter/head/neck needs its registry line and its config.CHOICES entry)."""

from __future__ import annotations

import re
from pathlib import Path

from dgseg.config import CHOICES
from dgseg.models.adapters import ADAPTERS
from dgseg.models.heads import HEADS
from dgseg.models.neck import NECKS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def test_registries_and_config_choices_agree():
    assert sorted(ADAPTERS) == sorted(CHOICES["model.adapter.name"])
    assert sorted(HEADS) == sorted(CHOICES["model.head.name"])
    assert sorted(NECKS) == sorted(CHOICES["model.neck.name"])


def test_every_file_the_architecture_page_names_exists():
    """Names are paths inside the repository, or inside the package they are listed under
    (``check.py`` under ``data/``): each must be the end of some file's path."""
    text = DOC.read_text(encoding="utf-8")
    names = {m.split("::")[0] for m in re.findall(r"`([\w./-]+\.(?:py|yaml|md)(?:::\w+)?)`", text)}
    names -= {"eval.md"}  # written by a run, not part of the repository
    assert len(names) > 20
    files = [p.relative_to(ROOT).as_posix() for folder in ("src", "configs", "benchmarks", "tests", "docs")
             for p in (ROOT / folder).rglob("*") if p.is_file()]
    missing = sorted(n for n in names if not any(f == n or f.endswith("/" + n) for f in files))
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_the_readme_links_the_architecture_page():
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
