"""SmearGate (kind ``arch_component``, name ``smeargate``): blend each position's embedding
with the previous position's.

From the T1 (10L Int5-MLP) and P1573 (12L RecycledCore) records of openai/parameter-golf
(docs/techniques.md §3.2): with γ ∈ R^d and σ = sigmoid(γ), x_t ← (1-σ)⊙x_t + σ⊙x_{t-1},
x_{-1} = 0, applied after the embedding RMSNorm and before x0 is saved (GPT extension point
``on_post_embed``). γ starts at 0, so the gate starts as a 0.5/0.5 mix and position 0 is
halved. It only looks one position back, so it is causal; across packed documents it does
mix the last token of one document into the first of the next (docs/pitfalls.md §4.5, the
BOS leak of #1797), exactly as upstream. Parameter name: ``smear.gate`` (a control tensor:
scalar Adam group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.api.field_checks import require_finite
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class SmearGateConfig:
    """SmearGate settings (T1/P1573 defaults)."""

    gate_init: float = 0.0
    """Initial gate logit γ for every channel; 0 gives σ = 0.5 (upstream)."""

    def check(self, model_cfg: Any) -> None:
        """Refuse a non-finite initial logit."""
        require_finite(self.gate_init, "smeargate.gate_init")

    def build(self, model_cfg: Any, vocab_size: int) -> SmearGate:
        """The gate for a GPT of width ``model_cfg.model_dim``."""
        self.check(model_cfg)
        return SmearGate(model_cfg.model_dim, float(self.gate_init))


class SmearGate(nn.Module):
    """x_t ← (1-σ(γ))⊙x_t + σ(γ)⊙x_{t-1} over (B, T, d), with x_{-1} = 0."""

    slot = "smear"

    def __init__(self, dim: int, gate_init: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.full((dim,), gate_init, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))
        x_prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)
        return (1 - g) * x + g * x_prev

    def on_post_embed(self, ids: Tensor, x: Tensor) -> Tensor:
        """GPT extension point: smear the normed embedding."""
        return self(x)

    def describe(self) -> list[str]:
        """Log line."""
        return ["smear_gate:True"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``SmearGateConfig`` as the ``arch_component`` ``smeargate``."""
    registry.register("arch_component", "smeargate", SmearGateConfig)
