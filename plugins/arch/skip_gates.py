"""Sigmoid-gated U-Net skips (kind ``arch_component``, name ``skip_gates``): decoder position i
takes its skip as a learned per-channel blend instead of a sum.

From the PR #1493 record (2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT,
SKIP_GATES_ENABLED=1; the gates came with PR #1394's stack): with s = skip_weights[i]⊙skip
and g = σ(γ_i), the stream becomes lerp(s, x, g) = g⊙x + (1 - g)⊙s, where the host without
gates computes x + s. γ starts at ``init`` = 0 as in the record, so every channel starts as
the even mix 0.5·x + 0.5·s. One γ row per U-Net skip of the host, however many its layer plan
has (8 for the record's 17-pass loop), created when the component attaches. Runs at the GPT
extension point ``on_skip``. Parameter: ``skip_gates.logit`` (skips, d): outside
``blocks.``, so Muon leaves it to the scalar Adam group (the record sends ``skip_gates`` there
by name), and small enough that quantizers keep it in float.
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
class SkipGatesConfig:
    """The initial gate logit of every channel of every skip (record: 0, i.e. σ = 0.5)."""

    init: float = 0.0
    """Initial γ; the gate σ(γ) weighs the stream, 1 - σ(γ) the skip."""

    def check(self, model_cfg: Any) -> None:
        """Refuse a non-finite initial logit."""
        require_finite(self.init, "skip_gates.init")

    def build(self, model_cfg: Any, vocab_size: int) -> SkipGates:
        """The gates; their rows are created when the host attaches them."""
        self.check(model_cfg)
        return SkipGates(model_cfg.model_dim, float(self.init))


class SkipGates(nn.Module):
    """x ← lerp(skip, x, σ(γ_i)) at decoder position i."""

    slot = "skip_gates"

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.dim = dim
        self.init = init

    def attach(self, model: nn.Module) -> None:
        """One row of logits per U-Net skip the host has (its ``skip_weights`` rows)."""
        skips = model.skip_weights.shape[0]
        self.logit = nn.Parameter(torch.full((skips, self.dim), self.init, dtype=torch.float32))

    def on_skip(self, x: Tensor, skip: Tensor, index: int) -> Tensor:
        """GPT extension point: blend the weighted skip into the stream."""
        return torch.lerp(skip, x, torch.sigmoid(self.logit[index].to(x.dtype)))

    def describe(self) -> list[str]:
        """Log line."""
        return [f"skip_gates: skips:{self.logit.shape[0]} init:{self.init:g}"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``SkipGatesConfig`` as the ``arch_component`` ``skip_gates``."""
    registry.register("arch_component", "skip_gates", SkipGatesConfig)
