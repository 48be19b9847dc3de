"""Oracle tests: dgseg against mmdet / mmseg / mmcv themselves. Collected in every environment, run
only where the OpenMMLab packages are importable (`make oracle`, `.venv-oracle`); skipped elsewhere."""

from __future__ import annotations

import mmcv_shim
import pytest

if mmcv_shim.oracle_available():
    mmcv_shim.install_ext_stubs()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if mmcv_shim.STUB_CALLS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\noracle: mmcv._ext stubs were called: {sorted(set(mmcv_shim.STUB_CALLS))}")
