"""Make ``streams_testkit`` importable from the tests beside it.

The project runs pytest with ``--import-mode=importlib``, which (by design)
does not put test folders on ``sys.path``; the shared builders of these tests
live in ``streams_testkit.py`` next to this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
