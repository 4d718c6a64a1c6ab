"""Value residual (kind ``arch_component``, name ``value_residual``): every attention layer
mixes layer 0's values into its own.

From the P1573 (12L RecycledCore) record of openai/parameter-golf (VALUE_RESIDUAL=1;
docs/techniques.md §3.4), after ResFormer's value residual learning (Zhou et al. 2024,
arXiv:2410.17897): v0 is layer 0's raw V (after value embeddings, if any); every later
layer, recycled passes included, uses v ← λ0·v0 + λ1·v with its own λ = (0.5, 0.5). Runs at
the GPT extension point ``on_value`` after value embeddings. Layer 0 has a λ too (upstream
creates one per block, and it counts in the 29,406,940 parameters) but never uses it, so it
never gets a gradient; a DDP wrapper needs ``find_unused_parameters`` for it.

Names: ``blocks.{i}.attn.vr_lambda`` (2 values, a control tensor), added by ``attach``.
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
class ValueResidualConfig:
    """Value-residual mixing weights (P1573 defaults)."""

    lambda_init: tuple[float, float] = (0.5, 0.5)
    """Initial (λ0, λ1) of every layer: weight of layer 0's values, weight of its own."""

    def check(self, model_cfg: Any) -> None:
        """Refuse anything but two numbers."""
        lam = self.lambda_init
        if not isinstance(lam, tuple) or len(lam) != 2 or not all(isinstance(x, (int, float)) for x in lam):
            raise ConfigError(f"value_residual.lambda_init: expected a tuple of two floats, got {lam!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> ValueResidual:
        """The (parameter-free) mixer; ``attach`` gives every block its λ."""
        self.check(model_cfg)
        return ValueResidual(tuple(float(x) for x in self.lambda_init))


class ValueResidual(nn.Module):
    """v ← λ0·v0 + λ1·v with λ = ``attn.vr_lambda`` of the physical block."""

    slot = "value_residual"

    def __init__(self, lambda_init: tuple[float, float] = (0.5, 0.5)) -> None:
        super().__init__()
        self.lambda_init = lambda_init

    def attach(self, model: nn.Module) -> None:
        """Give every block's attention its ``vr_lambda``.

        Layer 0 defines v0 and never mixes, so its λ never gets a gradient (as upstream,
        where it stays at its init). It is frozen here: it still counts in model_params
        (29,406,940 for P1573) and ships in the state dict, but DDP does not wait for a
        gradient that never comes, and no optimizer decays it.
        """
        for i, block in enumerate(model.blocks):
            lam = nn.Parameter(torch.tensor(self.lambda_init, dtype=torch.float32), requires_grad=i != 0)
            block.attn.vr_lambda = lam

    def on_value(self, v: Tensor, *, attn: nn.Module, layer: int, recycled: bool, state: dict) -> Tensor:
        """GPT extension point: the first call (layer 0) stores v0; later ones mix it in."""
        if "v0" not in state:
            state["v0"] = v
            return v
        lam = attn.vr_lambda.to(v.dtype)
        return lam[0] * state["v0"] + lam[1] * v

    def describe(self) -> list[str]:
        """Log line."""
        return ["value_residual:True"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``ValueResidualConfig`` as the ``arch_component`` ``value_residual``."""
    registry.register("arch_component", "value_residual", ValueResidualConfig)
