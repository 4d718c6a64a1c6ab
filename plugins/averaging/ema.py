"""Exponential moving average of the weights (kind ``averaging``, name ``ema``).

Polyak-style averaging as P1573 (12L RecycledCore record) runs it (spec: docs/techniques.md §6.2,
§13 row 3): a float32 shadow copy of every floating-point tensor, taken from the initial
weights and updated after every optimizer step as e <- decay·e + (1 - decay)·w
(``mul_`` then ``add_``, P1573's arithmetic, as two foreach kernels with no host sync).
When training stops the shadow replaces the weights, unless another averaging was applied.

Priority (P1573): LAWA (off) > SWA (more than one snapshot) > EMA. Here SWA marks
``ctx.averaging = "swa"`` when it swaps its mean in, and this plugin's
``pg_train_end`` is ``trylast``, so it always runs after SWA's whatever the registration
order, and then yields. In P1573 with its SWA on, the EMA is computed every step and thrown
away (its "post_ema" diagnostic is really post-SWA); ``apply=False`` reproduces that cost
without the swap.

Decay 0.997 is the P1573 code's hard-coded value (its README says 0.9965). The shadow is
taken in ``pg_train_start``, before compilation and the compile-priming steps (which are
undone), and holds the live tensor objects (``state_dict(keep_vars=True)``), so a late-QAT
parametrization attached before or after does not change what is tracked.

``checkpoint_state`` / ``load_checkpoint_state`` carry the shadow and the update count
through a training checkpoint (`harness.pipeline.checkpoint`), so a resumed run keeps the same average.

Deliberate difference: only floating-point tensors are averaged; integer buffers keep their
final values (the GPT has none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.api.context import TrainContext
from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import live_float_tensors
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class EMAConfig:
    """EMA settings (P1573's code defaults)."""

    decay: float = 0.997
    """Weight of the old average per step, in [0, 1) (P1573 hard-codes 0.997)."""
    apply: bool = True
    """Swap the average in at train end (if no other averaging was applied); False only tracks it."""
    enabled: bool = True
    """False makes the plugin an exact no-op (no shadow copy, no updates, no log lines)."""

    def __post_init__(self) -> None:
        d = self.decay
        if (
            isinstance(d, bool)
            or not isinstance(d, (int, float))
            or not math.isfinite(d)
            or not 0.0 <= d < 1.0
        ):
            raise ConfigError(f"ema.decay: expected a number in [0, 1), got {d!r}")
        for name in ("apply", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ema.{name}: expected true or false, got {getattr(self, name)!r}")

    def build(self) -> EMA:
        """The run plugin object (register it with the run's plugin manager)."""
        return EMA(self)


class EMA:
    """Observer plugin: a float32 shadow on the model's device, swapped in at train end."""

    def __init__(self, cfg: EMAConfig) -> None:
        self.cfg = cfg
        self.tensors: list[Tensor] = []
        self.shadow: list[Tensor] = []
        self.updates = 0
        self.applied = False

    @hookimpl
    def pg_train_start(self, ctx: TrainContext) -> None:
        """Copy the initial weights (fp32) into the shadow."""
        if not self.cfg.enabled:
            return
        self.tensors = live_float_tensors(ctx.model)
        with torch.no_grad():
            self.shadow = [t.detach().float().clone() for t in self.tensors]

    @hookimpl
    def pg_step_end(self, ctx: TrainContext) -> None:
        """e <- decay·e + (1 - decay)·w, device-side only."""
        if not self.cfg.enabled or not self.shadow:
            return
        decay = self.cfg.decay
        with torch.no_grad():
            torch._foreach_mul_(self.shadow, decay)
            torch._foreach_add_(self.shadow, [t.detach().float() for t in self.tensors], alpha=1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The float32 shadow and the update count (saved in a checkpoint)."""
        return {"updates": self.updates, "shadow": list(self.shadow), "applied": self.applied}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` output onto the live tensors taken in ``pg_train_start``."""
        shadow = list(state["shadow"])
        if len(shadow) != len(self.tensors):
            raise ConfigError(
                f"ema: checkpoint holds {len(shadow)} shadow tensors for {len(self.tensors)} model tensors"
            )
        self.shadow = [
            s.to(device=t.device, dtype=torch.float32) for s, t in zip(shadow, self.tensors, strict=True)
        ]
        self.updates, self.applied = int(state["updates"]), bool(state["applied"])

    @hookimpl(trylast=True)
    def pg_train_end(self, ctx: TrainContext) -> None:
        """Swap the shadow in unless ``apply`` is off or another averaging already was applied."""
        if not self.cfg.enabled or not self.shadow:
            return
        if not self.cfg.apply:
            ctx.log.log(f"ema:not applied (apply=False) decay:{self.cfg.decay:g}")
            return
        other = ctx.averaging
        if other is not None:
            ctx.log.log(f"ema:not applied ({other} took priority)")
            return
        ctx.log.log(
            f"ema:applying EMA weights decay:{self.cfg.decay:g}",
            event="ema_apply",
            decay=self.cfg.decay,
            updates=self.updates,
        )
        with torch.no_grad():
            for tensor, avg in zip(self.tensors, self.shadow, strict=True):
                tensor.copy_(avg)  # copy_ rounds to the tensor's own dtype
        self.applied = True
        ctx.averaging = "ema"

    @hookimpl
    def pg_report(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """``ema_decay``, ``ema_applied`` and ``averaging`` (the averaging applied, if any)."""
        if not self.cfg.enabled:
            return
        record["ema_decay"] = self.cfg.decay
        record["ema_applied"] = self.applied
        record["averaging"] = ctx.averaging


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``EMAConfig`` as the ``averaging`` component ``ema``."""
    registry.register("averaging", "ema", EMAConfig)
