"""Recycled core / depth recurrence (kind ``arch_component``, name ``recycled_core``): run some
blocks again, with their own weights, so the model is deeper than its parameters.

Two layouts, chosen by ``mode``:

* ``"core"`` (the P1573 "12L RecycledCore" record of openai/parameter-golf: RECYCLE_LAYERS
  "3,4", RECYCLE_REPEATS 1 → 12 physical / 14 virtual layers; docs/techniques.md §3.7):
  encoder blocks 0..enc-1 (each pushing a U-Net skip), then for each repeat and each listed
  layer k in order: x ← x⊙a_k + b_k (a = ones, b = zeros, one pair per application), then
  block k again with the same weights, its resid_mix with x0, its LN scale and value-residual
  λ, v0 as value residual, no value embedding; then decoder blocks enc..L-1 popping skips.
  Recycled passes neither push nor pop skips. Active from step 0 (P1573's README says
  "delayed at 35%"; its code is not).
* ``"loop"`` (PR #1394, 3 layers in PR #1437, as run by the PR #1493 record
  2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT: NUM_LOOPS=2, LOOP_START=3,
  LOOP_END=5): the contiguous segment ``layers`` runs ``repeats`` more times right after its
  first pass, so 11 layers become 0,1,2,(3,4,5)×3,6,...,10: 17 virtual layers; the U-Net is cut
  over that virtual order, its first half (8 passes) pushing skips and the rest (9) popping
  them, so the recycled passes carry skips too: encoder [0,1,2,3,4,5,3,4], decoder
  [5,3,4,5,6,7,8,9,10], as the record logs. No modulation there (``modulation=False``).

Late switch (P1493: ENABLE_LOOPING_AT=0.35): with ``start_frac`` > 0 the model trains on the
plain route 0..L-1 (physical U-Net halves) until the training fraction reaches
``start_frac``, then on the planned route. The record measures the fraction as
elapsed / wallclock cap (its cap being 600 s less a 12 s GPTQ reserve), or step / iterations
without a cap, and decides before each step: seed 42 switched at step 2018, frac 0.350. The
GPT host calls ``on_train_progress`` with the LR schedule's arguments (the harness's
rank-agreed clock), so every rank switches on the same step. A freshly built model has the
switch on: what it was trained towards, and what the record evaluates (it sets
``looping_active`` on the model it loads from the artifact). ``clock="steps"`` counts steps
even under a cap (CPU smoke runs, whose cap is only a safety net).

Both layouts are this module's ``layer_route``: the passes in order, with which ones push or pop
a U-Net skip and which are recycled. The GPT host only runs the route it is given, so a model
without a planner does not ship them (pgolf issue 13).

Gradients from every pass of a block add up. Names: ``recycle.{k}.a`` / ``recycle.{k}.b`` (d
each; k = position in the application list; upstream P1573 ``recycle_mods.{k}.scale`` /
``.bias``); none with ``modulation=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry

MODES = ("core", "loop")
CLOCKS = ("auto", "steps")


@dataclass(frozen=True, kw_only=True)
class RecycledCoreConfig:
    """Which blocks are re-applied, how often, where and from when (P1573 defaults)."""

    layers: tuple[int, ...] = (3, 4)
    """Physical blocks re-applied, in this order; in ``"loop"`` mode a contiguous run (P1493: 3, 4, 5)."""
    repeats: int = 1
    """How many times the whole list is re-applied (P1573 1; P1493 NUM_LOOPS 2)."""
    mode: str = "core"
    """``"core"``: passes after the encoder, U-Net over the physical halves (P1573);
    ``"loop"``: passes in place after the segment, U-Net over the virtual order (P1394/P1493)."""
    modulation: bool = True
    """A learned x⊙a + b before every recycled pass (P1573); False for P1493, which has none."""
    start_frac: float = 0.0
    """Fraction of training after which the recycled passes run (P1493 0.35); 0 = from the start."""
    clock: str = "auto"
    """How the fraction is measured: ``"auto"`` elapsed / cap under a wallclock cap, else
    step / iterations (P1493); ``"steps"`` always step / iterations."""

    def check(self, model_cfg: Any) -> None:
        """Refuse layers outside the model, repeats < 1, unknown modes and clocks, a
        non-contiguous loop segment and fractions outside [0, 1)."""
        L, layers = model_cfg.num_layers, self.layers
        if not isinstance(layers, tuple) or not layers:
            raise ConfigError(f"recycled_core.layers: expected a non-empty tuple of ints, got {layers!r}")
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < L for i in layers):
            raise ConfigError(f"recycled_core.layers: expected layer indices in 0..{L - 1}, got {layers!r}")
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise ConfigError(f"recycled_core.repeats: expected an int >= 1, got {self.repeats!r}")
        if self.mode not in MODES:
            raise ConfigError(f"recycled_core.mode: expected one of {MODES}, got {self.mode!r}")
        if self.mode == "loop" and layers != tuple(range(layers[0], layers[0] + len(layers))):
            raise ConfigError(
                "recycled_core.layers: mode 'loop' repeats a contiguous segment such as (3, 4, 5), "
                f"got {layers!r}"
            )
        if self.clock not in CLOCKS:
            raise ConfigError(f"recycled_core.clock: expected one of {CLOCKS}, got {self.clock!r}")
        if not isinstance(self.modulation, bool):
            raise ConfigError(f"recycled_core.modulation: expected true or false, got {self.modulation!r}")
        f = self.start_frac
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and 0 <= f < 1):
            raise ConfigError(f"recycled_core.start_frac: expected a number in [0, 1), got {f!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> RecycledCore:
        """The plan and, with ``modulation``, one modulation per application, for a GPT of
        width ``model_cfg.model_dim``."""
        self.check(model_cfg)
        return RecycledCore(self, model_cfg.model_dim)


class RecycleModulation(nn.Module):
    """x ⊙ a + b, identity at init."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.b = nn.Parameter(torch.zeros(dim, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.a.to(x.dtype) + self.b.to(x.dtype)


class RecycledCore(nn.ModuleList):
    """The modulations (children ``0``, ``1``, ...), the virtual layer plan and the late switch."""

    slot = "recycle"

    def __init__(self, cfg: RecycledCoreConfig, dim: int) -> None:
        count = len(cfg.layers) * cfg.repeats if cfg.modulation else 0
        super().__init__(RecycleModulation(dim) for _ in range(count))
        self.cfg = cfg
        self.layers = cfg.layers
        self.repeats = cfg.repeats
        # The host builds both routes and reads this flag each forward: True = the planned one.
        self.active = True

    def layer_plan(self, num_layers: int) -> tuple[int, ...]:
        """Virtual order. core: encoder, the recycled passes, decoder; loop: the segment
        repeated in place."""
        if self.cfg.mode == "core":
            enc = num_layers // 2
            return tuple(range(enc)) + self.layers * self.repeats + tuple(range(enc, num_layers))
        last = self.layers[-1]
        return tuple(range(last + 1)) + self.layers * self.repeats + tuple(range(last + 1, num_layers))

    def layer_route(self, num_layers: int) -> tuple[tuple[int, str, int], ...]:
        """GPT extension point, once at build: the planned route, one ``(block, role, k)`` per
        pass of the virtual order. Role ``"enc"`` pushes a U-Net skip, ``"dec"`` pops one,
        ``"mid"`` does neither; ``k`` numbers the recycled passes (-1: not one). core: the
        physical encoder half, the recycled passes, the physical decoder half; loop: the first
        half of the virtual order encodes, the rest decodes, a block's later passes recycle."""
        plan = self.layer_plan(num_layers)
        if self.cfg.mode == "core":
            enc = num_layers // 2
            dec = len(plan) - (num_layers - enc)
            recycled = range(enc, dec)
        else:
            enc = dec = len(plan) // 2
            recycled = [pos for pos, layer in enumerate(plan) if layer in plan[:pos]]
        k = {pos: i for i, pos in enumerate(recycled)}
        return tuple(
            (layer, "enc" if pos < enc else "dec" if pos >= dec else "mid", k.get(pos, -1))
            for pos, layer in enumerate(plan)
        )

    def on_recycle(self, x: Tensor, k: int) -> Tensor:
        """GPT extension point: modulate the stream before recycled pass ``k``."""
        return self[k](x) if self.cfg.modulation else x

    def progress(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """The training fraction the switch compares with ``start_frac``."""
        if self.cfg.clock == "auto" and max_wallclock_ms > 0:
            return elapsed_ms / max_wallclock_ms
        return step / max(iterations, 1)

    def on_train_progress(
        self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float
    ) -> list[str]:
        """GPT extension point, before each training step: switch the recycled passes on once
        the fraction reaches ``start_frac`` (off before it); a log line when that changes."""
        if self.cfg.start_frac <= 0:
            return []
        frac = self.progress(step, elapsed_ms, iterations=iterations, max_wallclock_ms=max_wallclock_ms)
        active = frac >= self.cfg.start_frac
        if active == self.active:
            return []
        self.active = active
        if not active:
            return [f"layer_loop:disabled step:{step} frac:{frac:.3f}"]
        return [f"layer_loop:enabled step:{step} frac:{frac:.3f} {self._split}"]

    def describe(self) -> list[str]:
        """Upstream's log line, e.g. ``recycle_layers:[3, 4] repeats:1 effective_depth:14``, then
        the loop's split and switch when they differ from P1573's."""
        lines = [f"recycle_layers:{list(self.layers)} repeats:{self.repeats} effective_depth:{self._depth}"]
        if self.cfg.mode == "loop" or self.cfg.start_frac > 0:
            lines.append(
                f"recycle_mode:{self.cfg.mode} modulation:{self.cfg.modulation} "
                f"start_frac:{self.cfg.start_frac:g} clock:{self.cfg.clock} {self._split}"
            )
        return lines

    def attach(self, model: nn.Module) -> None:
        """Remember the model's virtual depth and U-Net split for the log lines."""
        route = self.layer_route(len(model.blocks))
        self._depth = len(route)
        enc = [layer for layer, role, _ in route if role == "enc"]
        dec = [layer for layer, role, _ in route if role == "dec"]
        self._split = f"encoder:{enc} decoder:{dec}"


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``RecycledCoreConfig`` as the ``arch_component`` ``recycled_core``."""
    registry.register("arch_component", "recycled_core", RecycledCoreConfig)
