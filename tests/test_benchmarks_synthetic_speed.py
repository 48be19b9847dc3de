"""benchmarks/synthetic_speed.py: the synthetic benchmark's generation speed, old code against new."""

import sys
from pathlib import Path

import pytest

import dgseg.data.synthetic as synthetic

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))
from benchmarks import synthetic_speed  # noqa: E402


def test_times_every_style_against_an_earlier_copy(capsys):
    package = Path(synthetic.__file__).parent  # the current code stands in for an earlier copy
    synthetic_speed.main(["--before", str(package), "--n", "1", "--repeats", "1", "--size", "32", "48"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "images/s, 48x32, best of 1 x 1 scenes, CPU time"
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out[2:]}
    assert list(rows) == [*synthetic.STYLES, "all"]
    assert all(len(v) == 3 and min(v) > 0 for v in rows.values())  # before, current, current/before


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synthetic_speed.main(["--before", str(tmp_path / "missing.py")])
    assert "missing.py: no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic_speed.main(["--n", "0"])
    assert "--n and --repeats must be >= 1" in capsys.readouterr().err
