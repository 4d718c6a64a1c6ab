"""Cosine LR decay as a ``schedule`` component (name ``cosine``).

Half-cosine annealing from SGDR (Loshchilov & Hutter, 2017, arXiv:1608.03983) without
restarts: s = min_scale + (1 - min_scale) * (1 + cos(pi * progress)) / 2. None of the seed
records uses it (they all use the linear wallclock warmdown, docs/techniques.md §5.1); it is here
for comparison. Under a wallclock cap, progress is the fraction of the cap used so far,
elapsed_ms / max_wallclock_ms, so the LR reaches min_scale when the cap stops training,
whatever the step time; without a cap (or with ``use_wallclock=False``) it is
step / iterations. An optional linear warm-up caps the start (min of the two).

``peak_scale`` and ``decay_after_warmup`` express the byte-GPT reference schedule (dancinlab
Lane-G ref trainers, docs/techniques.md §11.1): lr·(step+1)/warmup for the first ``warmup`` steps,
then lr·(0.45·(1 + cos πp) + 0.05) with p = (step - warmup)/(iterations - warmup), i.e.
``CosineConfig(warmup_steps=W, peak_scale=0.95, min_scale=0.05, decay_after_warmup=True)``:
a step down from 1 to 0.95 right after warm-up, then a cosine to a floor of 0.05. On the
wallclock the warm-up's share of the cap is estimated from the mean step time so far
(W·elapsed/step, as the harness's warmdown estimates its length), so p = 0 exactly when
warm-up ends and p = 1 at the cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class CosineConfig:
    """Cosine from ``peak_scale`` to ``min_scale`` over the run, in wallclock or step progress."""

    warmup_steps: int = 0
    """Steps of linear LR warm-up (the k-th step gets k/warmup_steps); 0 = none."""
    min_scale: float = 0.0
    """Multiplier reached at the end of the run, in [0, peak_scale]."""
    peak_scale: float = 1.0
    """Multiplier where the cosine starts (progress 0), in [min_scale, 1]; the byte-GPT reference uses
    0.95."""
    decay_after_warmup: bool = False
    """False: the cosine spans the whole run and the warm-up ramp caps it (min of the two).
    True (byte-GPT reference): the ramp alone sets the first warmup_steps steps and the
    cosine's progress runs over the rest of the run only."""
    use_wallclock: bool = True
    """Measure progress as elapsed_ms / max_wallclock_ms when a cap is set; False (or no
    cap) uses step / iterations."""

    def __post_init__(self) -> None:
        value = self.warmup_steps
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"cosine.warmup_steps: expected an int >= 0, got {value!r}")
        if not 0.0 <= self.min_scale <= 1.0:
            raise ConfigError(f"cosine.min_scale: expected a value in [0, 1], got {self.min_scale!r}")
        if not self.min_scale <= self.peak_scale <= 1.0:
            raise ConfigError(
                f"cosine.peak_scale: expected a value in [min_scale={self.min_scale!r}, 1], "
                f"got {self.peak_scale!r}"
            )
        if not isinstance(self.decay_after_warmup, bool):
            raise ConfigError(f"cosine.decay_after_warmup: expected a bool, got {self.decay_after_warmup!r}")

    def build(self) -> Cosine:
        """The schedule callable."""
        return Cosine(self)


def _warmup(step: int, warmup_steps: int) -> float:
    """Linear ramp for the step after ``step`` completed steps: (step + 1) / warmup_steps, capped at 1."""
    return min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


class Cosine:
    """``harness.api.protocols.Schedule``: min(warm-up ramp, cosine of the run's progress), or
    the ramp then the cosine when ``decay_after_warmup``."""

    def __init__(self, cfg: CosineConfig) -> None:
        self.cfg = cfg

    def progress(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """Fraction of the cosine done, clipped to [0, 1] (counted from the end of warm-up
        when ``decay_after_warmup``)."""
        skip = self.cfg.warmup_steps if self.cfg.decay_after_warmup else 0
        if self.cfg.use_wallclock and max_wallclock_ms > 0:
            # Warm-up time estimated from the mean step time so far (0 when skip is 0).
            skip_ms = skip * elapsed_ms / step if skip and step > 0 else 0.0
            span = max_wallclock_ms - skip_ms
            frac = (elapsed_ms - skip_ms) / span if span > 0 else 1.0
        else:
            frac = (step - skip) / max(iterations - skip, 1)
        return min(max(frac, 0.0), 1.0)

    def __call__(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """LR multiplier for the next step, in [min_scale, peak_scale] after warm-up."""
        warm = _warmup(step, self.cfg.warmup_steps)
        if self.cfg.decay_after_warmup and step < self.cfg.warmup_steps:
            return warm
        p = self.progress(step, elapsed_ms, iterations=iterations, max_wallclock_ms=max_wallclock_ms)
        lo, hi = self.cfg.min_scale, self.cfg.peak_scale
        decay = lo + (hi - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
        # lo + (1 - lo) * 1 can round one ulp above 1; the contract is [0, 1].
        return min(max(min(warm, decay), 0.0), 1.0)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``CosineConfig`` as the ``schedule`` component ``cosine``."""
    registry.register("schedule", "cosine", CosineConfig)
