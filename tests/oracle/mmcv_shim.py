"""Test-only support of the oracle tests: the environment check and the `mmcv._ext` stand-in.

mmcv-lite is mmcv without its compiled extension `mmcv._ext`. Every `mmcv.ops` module loads it at
import time through `mmcv.utils.ext_loader.load_ext`, so `import mmcv.ops` (which mmdet and mmseg
need) fails. `install_ext_stubs` replaces that loader with one returning stubs that record the call
and raise: on CPU, mmcv's `MultiScaleDeformableAttention` and `point_sample` then run their own
pure-PyTorch code, and a stub that is ever called is a failure (`STUB_CALLS`, checked at the end of
the session by conftest.py and by test_oracle_env.py).
"""

from __future__ import annotations

import importlib.util
import os
import types

import pytest

# the versions the oracle tests are written against (`make oracle` installs them)
ORACLE_VERSIONS = {"mmengine": "0.10.7", "mmcv": "2.1.0", "mmdet": "3.3.0", "mmseg": "1.2.2"}
ORACLE_ENV_VAR = "DGSEG_ORACLE"  # set to 1 by `make oracle`: a missing oracle is then an error, not a skip

STUB_CALLS: list[str] = []


def oracle_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ORACLE_VERSIONS)


def require_oracle() -> None:
    """Skip the calling test module unless the OpenMMLab oracle is importable (`make oracle` builds
    `.venv-oracle`); under DGSEG_ORACLE=1 (`make oracle`, CI) a missing or mis-versioned oracle fails."""
    strict = os.environ.get(ORACLE_ENV_VAR) == "1"
    if not oracle_available():
        missing = [n for n in ORACLE_VERSIONS if importlib.util.find_spec(n) is None]
        reason = (f"oracle tests need {', '.join(missing)} (OpenMMLab): they run in .venv-oracle, "
                  "built and run by `make oracle`")
        if strict:
            raise RuntimeError(f"{ORACLE_ENV_VAR}=1 but {reason}")
        pytest.skip(reason, allow_module_level=True)
    wrong = {}
    for name, version in ORACLE_VERSIONS.items():
        found = importlib.import_module(name).__version__
        if found != version:
            wrong[name] = found
    if wrong:
        raise RuntimeError(f"oracle packages at versions {wrong}; the oracle tests pin {ORACLE_VERSIONS}")


def _stub(name: str):
    def stub(*args, **kwargs):
        STUB_CALLS.append(name)
        raise RuntimeError(f"mmcv._ext.{name} was called: mmcv-lite has no compiled ops (oracle shim stub)")

    stub.__name__ = name
    return stub


def install_ext_stubs() -> None:
    """Make `mmcv.ops` importable without `mmcv._ext`: every extension function is a raising stub.
    Idempotent; must run before anything imports `mmcv.ops`."""
    from mmcv.utils import ext_loader

    if getattr(ext_loader.load_ext, "_dgseg_oracle_stub", False):
        return
    if importlib.util.find_spec("mmcv._ext") is not None:
        return  # a full mmcv: nothing to stand in for

    def load_ext(name: str, funcs: list[str]) -> types.SimpleNamespace:
        return types.SimpleNamespace(**{f: _stub(f) for f in funcs})

    load_ext._dgseg_oracle_stub = True
    ext_loader.load_ext = load_ext
