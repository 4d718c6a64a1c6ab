"""Recycled core (kind ``arch_component``, name ``recycled_core``): run some blocks a second
time, with their own weights, between the U-Net encoder and decoder.

From the P1573 (12L RecycledCore) record of openai/parameter-golf (RECYCLE_LAYERS "3,4",
RECYCLE_REPEATS 1 → 12 physical / 14 virtual layers; docs/techniques.md §3.7). Virtual order:
encoder blocks 0..enc-1 (each pushing a U-Net skip), then for each repeat and each listed
layer k in order: x ← x⊙a_k + b_k (a = ones, b = zeros, one pair per application), then
block k again with the same weights, its resid_mix with x0, its LN scale and value-residual
λ, v0 as value residual, no value embedding; then decoder blocks enc..L-1 popping skips.
Recycled passes neither push nor pop skips, and gradients from both uses of a block add up.
Active from step 0 (the README's "delayed at 35%" is not in the code). The GPT runs this
through its ``layer_plan`` / ``on_recycle`` extension points.

Names: ``recycle.{k}.a`` / ``recycle.{k}.b`` (d each; k = position in the application
list). Upstream calls them ``recycle_mods.{k}.scale`` / ``.bias``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class RecycledCoreConfig:
    """Which blocks are re-applied and how often (P1573 defaults)."""

    layers: tuple[int, ...] = (3, 4)
    """Physical blocks re-applied after the encoder, in this order."""
    repeats: int = 1
    """How many times the whole list is re-applied."""

    def check(self, model_cfg: Any) -> None:
        """Refuse layers outside the model and repeats < 1."""
        L, layers = model_cfg.num_layers, self.layers
        if not isinstance(layers, tuple) or not layers:
            raise ConfigError(f"recycled_core.layers: expected a non-empty tuple of ints, got {layers!r}")
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < L for i in layers):
            raise ConfigError(f"recycled_core.layers: expected layer indices in 0..{L - 1}, got {layers!r}")
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise ConfigError(f"recycled_core.repeats: expected an int >= 1, got {self.repeats!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> RecycledCore:
        """One modulation per application for a GPT of width ``model_cfg.model_dim``."""
        self.check(model_cfg)
        return RecycledCore(self.layers, self.repeats, model_cfg.model_dim)


class RecycleModulation(nn.Module):
    """x ⊙ a + b, identity at init."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.b = nn.Parameter(torch.zeros(dim, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.a.to(x.dtype) + self.b.to(x.dtype)


class RecycledCore(nn.ModuleList):
    """The modulations (children ``0``, ``1``, ...) and the virtual layer plan."""

    slot = "recycle"

    def __init__(self, layers: tuple[int, ...], repeats: int, dim: int) -> None:
        super().__init__(RecycleModulation(dim) for _ in range(len(layers) * repeats))
        self.layers = layers
        self.repeats = repeats

    def layer_plan(self, num_layers: int) -> tuple[int, ...]:
        """Virtual order: encoder, the recycled passes, decoder."""
        enc = num_layers // 2
        return tuple(range(enc)) + self.layers * self.repeats + tuple(range(enc, num_layers))

    def on_recycle(self, x: Tensor, k: int) -> Tensor:
        """GPT extension point: modulate the stream before recycled pass ``k``."""
        return self[k](x)

    def describe(self) -> list[str]:
        """Upstream's log line, e.g. ``recycle_layers:[3, 4] repeats:1 effective_depth:14``."""
        return [f"recycle_layers:{list(self.layers)} repeats:{self.repeats} effective_depth:{self._depth}"]

    def attach(self, model: nn.Module) -> None:
        """Remember the model's virtual depth for the log line."""
        self._depth = len(model.blocks) + len(self.layers) * self.repeats


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``RecycledCoreConfig`` as the ``arch_component`` ``recycled_core``."""
    registry.register("arch_component", "recycled_core", RecycledCoreConfig)
