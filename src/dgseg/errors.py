"""How a command reports a user's mistake: one line naming the file, key or value, exit code 2, no traceback
(``DGSEG_DEBUG=1`` shows the traceback instead, for a bug report). Shared by ``dgseg`` and the scripts in
``benchmarks/``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

USER_ERRORS = (OSError, ValueError, RuntimeError)
"""What a user's input can cause: ConfigError and WeightsError are ValueErrors, CheckpointError and TrainingError
RuntimeErrors, RunFolderError and a missing or full-disk file OSErrors; a damaged JSON file a ValueError."""


def report_error(prog: str, exc: BaseException) -> int:
    """Prints ``prog: error: exc`` to stderr and returns 2; re-raises ``exc`` under ``DGSEG_DEBUG``."""
    if os.environ.get("DGSEG_DEBUG", "") not in ("", "0"):
        raise exc
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def run_main(prog: str, main: Callable[[], object], errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """``main()``'s exit code (0 when it returns anything but a whole number: None, a dict of results), or
    :func:`report_error`'s for a user's mistake (``errors``)."""
    try:
        code = main()
    except errors as exc:
        return report_error(prog, exc)
    return code if isinstance(code, int) else 0
