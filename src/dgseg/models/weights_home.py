"""What every weights module shares: the cache folder (``$DGSEG_HOME``) and :class:`WeightsError`.

The base of the weights modules' one-way imports: ``pretrained`` (embedded weights, cached here) and
``weights_io`` (reading files, resolving a ``weights:`` entry, which may name an embedded weight) both
import this module; ``weights_io`` imports ``pretrained``, never the reverse.
"""

from __future__ import annotations

import os
from pathlib import Path


class WeightsError(ValueError):
    """A weights file is missing, unreadable or of the wrong kind; the message names the file."""


def dgseg_home() -> Path:
    """The cache folder: ``$DGSEG_HOME`` or ``~/.cache/dgseg``."""
    return Path(os.environ.get("DGSEG_HOME", Path.home() / ".cache" / "dgseg"))
