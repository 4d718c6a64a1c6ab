"""Cosine LR decay as a ``schedule`` component (name ``cosine``).

Half-cosine annealing from SGDR (Loshchilov & Hutter, 2017, arXiv:1608.03983) without
restarts: s = min_scale + (1 - min_scale) * (1 + cos(pi * progress)) / 2. None of the seed
records uses it (they all use the linear wallclock warmdown, TECHNIQUES.md §5); it is here
for comparison. Under a wallclock cap, progress is the fraction of the cap used so far,
elapsed_ms / max_wallclock_ms, so the LR reaches min_scale when the cap stops training,
whatever the step time; without a cap (or with ``use_wallclock=False``) it is
step / iterations. An optional linear warm-up caps the start (min of the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.hookspecs import hookimpl
from harness.registry import Registry


@dataclass(frozen=True, kw_only=True)
class CosineConfig:
    """Cosine from 1 to ``min_scale`` over the run, in wallclock or step progress."""

    warmup_steps: int = 0
    """Steps of linear LR warm-up (the k-th step gets k/warmup_steps); 0 = none."""
    min_scale: float = 0.0
    """Multiplier reached at the end of the run, in [0, 1]."""
    use_wallclock: bool = True
    """Measure progress as elapsed_ms / max_wallclock_ms when a cap is set; False (or no
    cap) uses step / iterations."""

    def __post_init__(self) -> None:
        value = self.warmup_steps
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"cosine.warmup_steps: expected an int >= 0, got {value!r}")
        if not 0.0 <= self.min_scale <= 1.0:
            raise ConfigError(f"cosine.min_scale: expected a value in [0, 1], got {self.min_scale!r}")

    def build(self) -> Cosine:
        """The schedule callable."""
        return Cosine(self)


def _warmup(step: int, warmup_steps: int) -> float:
    """Linear ramp for the step after ``step`` completed steps: (step + 1) / warmup_steps, capped at 1."""
    return min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


class Cosine:
    """``harness.components.Schedule``: min(warm-up ramp, cosine of the run's progress)."""

    def __init__(self, cfg: CosineConfig) -> None:
        self.cfg = cfg

    def progress(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """Fraction of the run done, clipped to [0, 1]."""
        if self.cfg.use_wallclock and max_wallclock_ms > 0:
            frac = elapsed_ms / max_wallclock_ms
        else:
            frac = step / max(iterations, 1)
        return min(max(frac, 0.0), 1.0)

    def __call__(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """LR multiplier for the next step, in [min_scale, 1] after warm-up."""
        p = self.progress(step, elapsed_ms, iterations=iterations, max_wallclock_ms=max_wallclock_ms)
        lo = self.cfg.min_scale
        decay = lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
        warm = _warmup(step, self.cfg.warmup_steps)
        # lo + (1 - lo) * 1 can round one ulp above 1; the contract is [0, 1].
        return min(max(min(warm, decay), 0.0), 1.0)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``CosineConfig`` as the ``schedule`` component ``cosine``."""
    registry.register("schedule", "cosine", CosineConfig)
