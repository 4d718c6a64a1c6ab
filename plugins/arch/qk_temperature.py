"""Learned attention temperature (kind ``arch_component``, name ``qk_temperature``): every
head h of every layer l scales its queries by exp(τ_{l,h}) right before attention, so its
logits are exp(τ)·q·k/√d: a learned inverse temperature on top of the query gain.

The GPT's ``on_qk`` extension point fires after QK-norm, RoPE and the query gain, where
scaling q scales the attention logits exactly. τ starts at ``init`` (0: the model computes
what it did without the component). The idea is the per-head logit scale of QK-norm
transformers (Dehghani et al., 2023, "Scaling Vision Transformers to 22B Parameters"; the
records' ``q_gain``, tuned to 5.25 in the 2026-04-09 record, is its initialisation-time
cousin). Parameter: ``qk_temp.log_scale`` (num_layers, num_heads): outside ``blocks.``, so
Muon leaves it to the scalar Adam group, and small enough that quantizers keep it in float.
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
class QKTemperatureConfig:
    """The initial log-scale τ of every head."""

    init: float = 0.0
    """Initial τ of every head; 0 leaves the model unchanged at initialisation."""

    def check(self, model_cfg: Any) -> None:
        """Refuse a non-finite initial log-scale."""
        require_finite(self.init, "qk_temperature.init")

    def build(self, model_cfg: Any, vocab_size: int) -> QKTemperature:
        """One τ per head and physical layer of the host."""
        self.check(model_cfg)
        return QKTemperature(model_cfg.num_layers, model_cfg.num_heads, float(self.init))


class QKTemperature(nn.Module):
    """q ← exp(τ_{layer}) ⊙ q per head; recycled passes reuse their block's τ."""

    slot = "qk_temp"

    def __init__(self, num_layers: int, num_heads: int, init: float) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((num_layers, num_heads), init, dtype=torch.float32))

    def on_qk(
        self, q: Tensor, k: Tensor, *, attn: Any, layer: int, recycled: bool, state: Any
    ) -> tuple[Tensor, Tensor]:
        """GPT extension point: scale the queries (B, H, T, Dh) of ``layer``."""
        scale = self.log_scale[layer].exp().to(q.dtype)
        return q * scale[None, :, None, None], k

    def describe(self) -> list[str]:
        """Log line."""
        return [f"qk_temperature: heads:{self.log_scale.shape[1]} layers:{self.log_scale.shape[0]}"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``QKTemperatureConfig`` as the ``arch_component`` ``qk_temperature``."""
    registry.register("arch_component", "qk_temperature", QKTemperatureConfig)
