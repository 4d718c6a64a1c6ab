"""Gated attention (kind ``arch_component``, name ``gated_attention``): a per-token, per-head
sigmoid gate on the attention output.

From the P1573 (12L RecycledCore) record of openai/parameter-golf (GATED_ATTENTION=1;
docs/techniques.md §3.5), in the spirit of Qiu et al. 2025 ("Gated Attention for LLMs",
arXiv:2505.06708): gate = σ(W_g h + b), with h the normed, LN-scaled attention input,
W_g (H×d) zero and b = 4, so every head starts at σ(4) ≈ 0.982. Multiplies each head's
output after XSA and before W_o (GPT extension point ``on_attn_out``); recycled passes
use their physical block's gate. Pointwise in time: causal.

Names: ``blocks.{i}.attn.attn_gate.weight`` (H×d) and ``.bias`` (H), added by ``attach``.
The gate Linear is flagged zero-init, so ``GPTConfig.orthogonal_init`` never redraws it
(upstream: not flagged, but with 8 heads it is below the 64-row threshold anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.field_checks import require_finite
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class GatedAttentionConfig:
    """Gate initialisation (P1573 defaults)."""

    bias_init: float = 4.0
    """Initial gate bias b for every head; σ(4) ≈ 0.982 (upstream)."""

    def check(self, model_cfg: Any) -> None:
        """Refuse a non-finite bias."""
        require_finite(self.bias_init, "gated_attention.bias_init")

    def build(self, model_cfg: Any, vocab_size: int) -> GatedAttention:
        """The (parameter-free) gate applier; ``attach`` gives every block its gate Linear."""
        self.check(model_cfg)
        return GatedAttention(float(self.bias_init))


class GatedAttention(nn.Module):
    """y_h ← σ(W_g h + b)_h · y_h with ``attn.attn_gate`` of the physical block."""

    slot = "gated_attention"

    def __init__(self, bias_init: float = 4.0) -> None:
        super().__init__()
        self.bias_init = bias_init

    def attach(self, model: nn.Module) -> None:
        """Give every block's attention its ``attn_gate`` (weight 0, bias ``bias_init``)."""
        for block in model.blocks:
            attn = block.attn
            gate = nn.Linear(attn.num_heads * attn.head_dim, attn.num_heads, bias=True)
            with torch.no_grad():
                gate.weight.zero_()
                gate.bias.fill_(self.bias_init)
            gate._zero_init = True  # the model's orthogonal init leaves it alone
            attn.attn_gate = gate

    def on_attn_out(
        self,
        y: Tensor,
        *,
        attn: nn.Module,
        h: Tensor,
        v: Tensor,
        layer: int,
        recycled: bool,
        state: dict | None,
    ) -> Tensor:
        """GPT extension point: scale head outputs y (B, T, H, Dh) by σ(W_g h + b) (B, T, H)."""
        gate = attn.attn_gate
        logits = F.linear(h, gate.weight.to(h.dtype), gate.bias.to(h.dtype))
        return y * torch.sigmoid(logits).unsqueeze(-1).to(y.dtype)

    def describe(self) -> list[str]:
        """Log line."""
        return ["gated_attention:True"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``GatedAttentionConfig`` as the ``arch_component`` ``gated_attention``."""
    registry.register("arch_component", "gated_attention", GatedAttentionConfig)
