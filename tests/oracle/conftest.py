"""Oracle tests: dgseg against mmdet / mmseg / mmcv themselves. Collected in every environment, run
only where the OpenMMLab packages are importable (`make oracle`, `.venv-oracle`); skipped elsewhere."""

from __future__ import annotations

import mmcv_shim
import pytest

if mmcv_shim.oracle_available():
    mmcv_shim.install_ext_stubs()


@pytest.fixture(scope="session", autouse=True)
def no_ext_stub_called():
    """After the last oracle test: no code path reached a compiled mmcv op (they are stubs here)."""
    yield
    assert mmcv_shim.STUB_CALLS == [], f"mmcv._ext stubs were called: {sorted(set(mmcv_shim.STUB_CALLS))}"
