"""Parallel residuals (kind ``arch_component``, name ``parallel_residual``): GPT-J style
blocks, x ← x + α_a⊙Attn(n(x)) + α_m⊙MLP(n(x)), on the last K layers or from a given layer on.

Described in the README of the P1573 (12L RecycledCore) record of openai/parameter-golf
("parallel residuals on the last 5 layers") but implemented in none of the reference
scripts (docs/techniques.md §3.8); the form is GPT-J's (Wang & Komatsuzaki 2021): attention and
MLP both read the same normed input x_in = resid_mix(x, x0), and both residuals are added
to x_in. Off unless listed in ``GPTConfig.components``. Sets ``block.parallel`` on the last
``last_n`` physical blocks, or on blocks ``first_layer``..L-1 (recycled passes of those blocks
are parallel too). No parameters. The PR #1493 record (2026-04-09_SP8192_3LayerRecur_ParResid_
QK525_LegalTTT, PARALLEL_RESIDUAL_START=7; PR #1412, PR #1204) runs exactly this form in its
code, on layers 7..10 of 11.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class ParallelResidualConfig:
    """How many final layers run attention and MLP in parallel (README claim: 5)."""

    last_n: int = 5
    """Parallel blocks are num_layers-last_n .. num_layers-1 (unless first_layer is set)."""
    first_layer: int | None = None
    """If set, parallel blocks are first_layer .. num_layers-1 instead, whatever the depth
    (PR #1493 PARALLEL_RESIDUAL_START 7)."""

    def check(self, model_cfg: Any) -> None:
        """Refuse more layers than the model has, or a first layer outside it."""
        n, L, first = self.last_n, model_cfg.num_layers, self.first_layer
        if first is not None:
            if not isinstance(first, int) or isinstance(first, bool) or not 0 <= first < L:
                raise ConfigError(
                    f"parallel_residual.first_layer: expected None or an int in 0..{L - 1}, got {first!r}"
                )
        elif not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= L:
            raise ConfigError(f"parallel_residual.last_n: expected an int in 1..num_layers={L}, got {n!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> ParallelResidual:
        """The switch for the last ``last_n`` of ``model_cfg.num_layers`` blocks."""
        self.check(model_cfg)
        L = model_cfg.num_layers
        first = L - self.last_n if self.first_layer is None else self.first_layer
        return ParallelResidual(tuple(range(first, L)))


class ParallelResidual(nn.Module):
    """Marks blocks parallel at build; the GPT block does the rest."""

    slot = "parallel_residual"

    def __init__(self, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = layers

    def attach(self, model: nn.Module) -> None:
        """Set ``parallel`` on the chosen blocks."""
        for i in self.layers:
            model.blocks[i].parallel = True

    def describe(self) -> list[str]:
        """Log line."""
        return [f"parallel_residual:last_{len(self.layers)} layers:{list(self.layers)}"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``ParallelResidualConfig`` as the ``arch_component`` ``parallel_residual``."""
    registry.register("arch_component", "parallel_residual", ParallelResidualConfig)
