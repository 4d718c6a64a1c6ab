"""The upstream wallclock warmdown as a ``schedule`` component (name ``wallclock_warmdown``).

Upstream ``train_gpt.py`` of openai/parameter-golf (all three seed scripts; docs/techniques.md §5.1):
no LR warm-up, then a linear decay that reaches 0 exactly at the wallclock cap, its start
re-estimated every step as WARMDOWN_ITERS times the mean step time so far; without a cap it
decays over the last WARMDOWN_ITERS of ITERATIONS steps. The formula is the harness's own
``harness.pipeline.trainer.lr_multiplier`` (called, not copied), so with ``warmup_steps=0`` this is
exactly the schedule a run gets when ``RunConfig.schedule`` is None. The optional linear
warm-up is ours (no seed record uses one).

Unlike ``RunConfig.schedule=None``, this Config carries its own ``warmdown_iters``: the
WARMDOWN_ITERS variable and the CPU profile set ``train.warmdown_iters``, not this field
(override it with ``--set schedule.warmdown_iters=N``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry
from harness.api.warmdown import lr_multiplier


@dataclass(frozen=True, kw_only=True)
class WallclockWarmdownConfig:
    """Upstream warmdown (docs/techniques.md §5.1) plus an optional linear warm-up."""

    warmdown_iters: int = 1200
    """Warmdown length in steps, turned into time with the mean step time (WARMDOWN_ITERS;
    B 1200, T1 3000, P1573 3500); 0 = constant LR."""
    warmdown_frac: float = 0.0
    """If > 0, the decay spans this fraction of the cap (of iterations without a cap) instead of
    warmdown_iters steps (PR #1493 WARMDOWN_FRAC 0.72); 0 = warmdown_iters."""
    warmup_steps: int = 0
    """Steps of linear LR warm-up (the k-th step gets k/warmup_steps); 0 = none, as upstream."""

    def __post_init__(self) -> None:
        for name in ("warmdown_iters", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"wallclock_warmdown.{name}: expected an int >= 0, got {value!r}")
        f = self.warmdown_frac
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise ConfigError(f"wallclock_warmdown.warmdown_frac: expected a number in [0, 1], got {f!r}")

    def build(self) -> WallclockWarmdown:
        """The schedule callable."""
        return WallclockWarmdown(self)


def _warmup(step: int, warmup_steps: int) -> float:
    """Linear ramp for the step after ``step`` completed steps: (step + 1) / warmup_steps, capped at 1."""
    return min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


class WallclockWarmdown:
    """``harness.api.protocols.Schedule``: min(warm-up ramp, upstream warmdown multiplier)."""

    def __init__(self, cfg: WallclockWarmdownConfig) -> None:
        self.cfg = cfg

    def __call__(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """LR multiplier for the next step, in [0, 1]; pure host arithmetic, no device sync."""
        decay = lr_multiplier(
            step,
            elapsed_ms,
            iterations=iterations,
            warmdown_iters=self.cfg.warmdown_iters,
            max_wallclock_ms=max_wallclock_ms,
            warmdown_frac=self.cfg.warmdown_frac,
        )
        return min(_warmup(step, self.cfg.warmup_steps), decay)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``WallclockWarmdownConfig`` as the ``schedule`` component ``wallclock_warmdown``."""
    registry.register("schedule", "wallclock_warmdown", WallclockWarmdownConfig)
