"""Put on PYTHONPATH to run a process whose clock is ``FT_CLOCK_SKEW`` seconds off."""

from __future__ import annotations

import os
import time

_SKEW = float(os.environ.get("FT_CLOCK_SKEW", "0") or 0)
if _SKEW:
    _real_time = time.time
    time.time = lambda: _real_time() + _SKEW  # type: ignore[assignment]
