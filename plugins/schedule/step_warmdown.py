"""A step-counted linear warmdown as a ``schedule`` component (name ``step_warmdown``).

The no-cap branch of the upstream ``train_gpt.py`` schedule (openai/parameter-golf;
docs/techniques.md §5.2): constant LR, then a linear decay over the last ``warmdown_iters`` of
``iterations`` steps, reaching 0 after step ``iterations``. Here it is used whatever the
wallclock cap, so the LR no longer depends on how fast the hardware is (reproducible
across machines); the harness formula ``harness.pipeline.trainer.lr_multiplier`` is called with the
cap switched off rather than copied. If the cap stops training first, the decay is cut
short (the LR never reaches 0). The optional linear warm-up is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry
from harness.api.warmdown import lr_multiplier


@dataclass(frozen=True, kw_only=True)
class StepWarmdownConfig:
    """Linear decay over the last ``warmdown_iters`` of ``train.iterations`` steps."""

    warmdown_iters: int = 1200
    """Steps of the final linear decay to 0; 0 = constant LR."""
    warmdown_frac: float = 0.0
    """If > 0, the decay spans this fraction of iterations instead of
    warmdown_iters steps (PR #1493 WARMDOWN_FRAC 0.72); 0 = warmdown_iters."""
    warmup_steps: int = 0
    """Steps of linear LR warm-up (the k-th step gets k/warmup_steps); 0 = none."""

    def __post_init__(self) -> None:
        for name in ("warmdown_iters", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"step_warmdown.{name}: expected an int >= 0, got {value!r}")
        f = self.warmdown_frac
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise ConfigError(f"step_warmdown.warmdown_frac: expected a number in [0, 1], got {f!r}")

    def build(self) -> StepWarmdown:
        """The schedule callable."""
        return StepWarmdown(self)


def _warmup(step: int, warmup_steps: int) -> float:
    """Linear ramp for the step after ``step`` completed steps: (step + 1) / warmup_steps, capped at 1."""
    return min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


class StepWarmdown:
    """``harness.api.protocols.Schedule``: min(warm-up ramp, step-based warmdown)."""

    def __init__(self, cfg: StepWarmdownConfig) -> None:
        self.cfg = cfg

    def __call__(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """LR multiplier for the next step, in [0, 1]; ``elapsed_ms`` and the cap are ignored."""
        decay = lr_multiplier(
            step,
            0.0,
            iterations=iterations,
            warmdown_iters=self.cfg.warmdown_iters,
            max_wallclock_ms=0.0,
            warmdown_frac=self.cfg.warmdown_frac,
        )
        warm = _warmup(step, self.cfg.warmup_steps)
        return min(warm, decay)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``StepWarmdownConfig`` as the ``schedule`` component ``step_warmdown``."""
    registry.register("schedule", "step_warmdown", StepWarmdownConfig)
