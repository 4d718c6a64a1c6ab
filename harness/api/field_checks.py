"""Checks of single Config fields that several plugins share; each refuses with a ConfigError
that names the field and the value, as every Config check in the harness does."""

from __future__ import annotations

import math
from typing import Any

from harness.api.errors import ConfigError


def require_finite(value: Any, field: str) -> float:
    """``value`` as a float, or a ConfigError naming ``field`` unless it is a finite int or
    float (a bool is refused: ``True`` is an int to Python, never a meant initial value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}: expected a finite number, got {value!r}")
    return float(value)
