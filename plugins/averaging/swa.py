"""Stochastic weight averaging over the warmdown (kind ``averaging``, name ``swa``).

SWA (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima") as the Parameter Golf
records use it (spec: docs/techniques.md §6.1, §13 row 12): once the LR multiplier ``s`` drops
below ``start_frac``, every ``every``-th step adds a snapshot of the weights (the first
snapshot counts); when training stops, the uniform mean of the snapshots replaces the
weights, so it is what gets validated, quantized and exported.

* T1 (10L Int5-MLP record, ``SWA_START_FRAC`` 0.4, ``SWA_EVERY`` 50; seed 1337 took 24
  snapshots, steps 5550-6700) and P1573 (start 0.2, every 50) are the two presets;
  ``SWAConfig(start_frac=0.2)`` is P1573's.
* Both upstream scripts load the mean only with more than one snapshot (``swa_count > 1``;
  T1 too, whatever a summary of it says: its code does not apply a single one), hence
  ``min_snapshots=2``. Set it to 1 to also apply a single snapshot.
* Log lines are T1's: ``swa:start step:N`` and ``swa:applying averaged K checkpoints``.

Deliberate differences from upstream:
* Sums are float32 for every tensor and live on the model's device. T1 copies the state
  dict to the CPU and sums in each tensor's own dtype, so its bf16 embedding tables were
  summed in bf16 (docs/techniques.md §13 row 12), losing low bits over 24 snapshots; device
  sums also keep ``pg_step_end`` free of host syncs and device-to-host copies.
* Only floating-point tensors are averaged; integer buffers keep their final values (the
  GPT has none; upstream would integer-divide them).

Snapshots are taken from the live tensor objects (``state_dict(keep_vars=True)``), not by
name, so a parametrization attached by another plugin (late QAT) does not change what is
averaged: its ``original`` Parameter is the same object as before.

``checkpoint_state`` / ``load_checkpoint_state`` carry the sums and the count through a
training checkpoint (`harness.pipeline.checkpoint`), so a resumed run averages the same snapshots.
"""

from __future__ import annotations

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
class SWAConfig:
    """When to snapshot and when to apply (T1 defaults; P1573 uses ``start_frac=0.2``)."""

    start_frac: float = 0.4
    """Snapshot only after steps whose LR multiplier is below this (T1 SWA_START_FRAC)."""
    every: int = 50
    """Snapshot after steps that are a multiple of this (T1 SWA_EVERY)."""
    min_snapshots: int = 2
    """Apply the mean only with at least this many snapshots (T1 and P1573 code: > 1)."""
    enabled: bool = True
    """False makes the plugin an exact no-op (no snapshots, no swap, no log lines)."""

    def __post_init__(self) -> None:
        _validate(self)

    def build(self) -> SWA:
        """The run plugin object (register it with the run's plugin manager)."""
        return SWA(self)


def _validate(cfg: SWAConfig) -> None:
    frac = cfg.start_frac
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not frac > 0:
        raise ConfigError(f"swa.start_frac: expected a number > 0 (an LR multiplier), got {frac!r}")
    for name in ("every", "min_snapshots"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"swa.{name}: expected an integer >= 1, got {value!r}")
    if not isinstance(cfg.enabled, bool):
        raise ConfigError(f"swa.enabled: expected true or false, got {cfg.enabled!r}")


class SWA:
    """Observer plugin: float32 running sums of the snapshots, swapped in at train end."""

    def __init__(self, cfg: SWAConfig) -> None:
        self.cfg = cfg
        self.tensors: list[Tensor] = []
        self.sums: list[Tensor] = []
        self.count = 0
        self.applied = False
        self.model: torch.nn.Module | None = None

    @hookimpl
    def pg_train_start(self, ctx: TrainContext) -> None:
        """Remember the live model: snapshots (and a resumed state) track its tensors."""
        self.model = ctx.model

    def due(self, step: int, lr_scale: float) -> bool:
        """Whether the step just finished (1-based ``step``, multiplier ``lr_scale``) is snapshotted."""
        return self.cfg.enabled and lr_scale < self.cfg.start_frac and step % self.cfg.every == 0

    @hookimpl
    def pg_step_end(self, ctx: TrainContext) -> None:
        """Add a snapshot when due; device-side only (``lr_scale`` is a Python float)."""
        if not self.due(ctx.step, ctx.lr_scale):
            return
        with torch.no_grad():
            if self.count == 0:
                self.tensors = live_float_tensors(ctx.model)
                # clone: .float() of an fp32 tensor is the tensor itself.
                self.sums = [t.detach().float().clone() for t in self.tensors]
                ctx.log.log(f"swa:start step:{ctx.step}", event="swa_start", step=ctx.step)
            else:
                torch._foreach_add_(self.sums, [t.detach().float() for t in self.tensors])
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        """The running sums and snapshot count (saved in a checkpoint)."""
        return {"count": self.count, "sums": list(self.sums), "applied": self.applied}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` output (after ``pg_train_start``); the tracked tensors are the
        live model's."""
        self.count, self.applied = int(state["count"]), bool(state["applied"])
        if self.count and self.model is None:
            raise ConfigError("swa: a checkpointed state can only be loaded after pg_train_start")
        self.tensors = live_float_tensors(self.model) if self.count else []
        sums = list(state["sums"])
        if len(sums) != len(self.tensors):
            raise ConfigError(f"swa: checkpoint holds {len(sums)} sums for {len(self.tensors)} model tensors")
        self.sums = [
            s.to(device=t.device, dtype=torch.float32) for s, t in zip(sums, self.tensors, strict=True)
        ]

    @hookimpl
    def pg_train_end(self, ctx: TrainContext) -> None:
        """Load the uniform mean into the model (each tensor keeps its dtype) when enough snapshots."""
        if not self.cfg.enabled:
            return
        if self.count < self.cfg.min_snapshots:
            ctx.log.log(f"swa:not applied snapshots:{self.count} min_snapshots:{self.cfg.min_snapshots}")
            return
        ctx.log.log(
            f"swa:applying averaged {self.count} checkpoints", event="swa_apply", snapshots=self.count
        )
        with torch.no_grad():
            torch._foreach_div_(self.sums, float(self.count))
            for tensor, mean in zip(self.tensors, self.sums, strict=True):
                tensor.copy_(mean)  # copy_ rounds to the tensor's own dtype
        self.sums = []  # the mean now lives in the model; free the device memory
        self.applied = True
        ctx.averaging = "swa"
        ctx.notes["swa_snapshots"] = self.count

    @hookimpl
    def pg_report(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """``swa_snapshots`` and ``averaging`` (the averaging applied, if any: same value from every
        averager)."""
        if not self.cfg.enabled:
            return
        record["swa_snapshots"] = self.count
        record["averaging"] = ctx.averaging


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``SWAConfig`` as the ``averaging`` component ``swa``."""
    registry.register("averaging", "swa", SWAConfig)
