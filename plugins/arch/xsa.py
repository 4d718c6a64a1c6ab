"""XSA, exclusive self-attention (kind ``arch_component``, name ``xsa``): remove from each
head's output its component along the token's own value.

From the P1573 (12L RecycledCore) record of openai/parameter-golf (XSA_LAST_N=4, active on
layers 8..11 of 12; docs/techniques.md §3.6; introduced upstream by the 11L XSA record,
2026-03-21): for every query head in KV group g at position t, y ← y - (y·v̂)v̂ with
v̂ = v_g(t)/‖v_g(t)‖, v the values attention read (after value embeddings and value
residual). Runs at the GPT extension point ``on_attn_out`` before the gate, on the last
``last_n`` physical layers, recycled passes of those layers included. It uses only
position t's own value: causal. No parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class XSAConfig:
    """Which layers use XSA (P1573 default: the last 4)."""

    last_n: int = 4
    """XSA runs on physical layers num_layers-last_n .. num_layers-1."""

    def check(self, model_cfg: Any) -> None:
        """Refuse more layers than the model has."""
        n, L = self.last_n, model_cfg.num_layers
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= L:
            raise ConfigError(f"xsa.last_n: expected an int in 1..num_layers={L}, got {n!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> XSA:
        """The projection remover for the last ``last_n`` of ``model_cfg.num_layers`` layers."""
        self.check(model_cfg)
        L = model_cfg.num_layers
        return XSA(self.last_n, tuple(range(L - self.last_n, L)))


def remove_self_value(y: Tensor, v: Tensor) -> Tensor:
    """y (B, T, H, Dh) minus its projection on v̂ (B, T, Hkv, Dh); head h uses kv head h // (H/Hkv)."""
    B, T, H, D = y.shape
    Hkv = v.size(-2)
    y_g = y.reshape(B, T, Hkv, H // Hkv, D)
    v_hat = F.normalize(v, dim=-1).unsqueeze(-2)  # (B, T, Hkv, 1, D)
    return (y_g - (y_g * v_hat).sum(dim=-1, keepdim=True) * v_hat).reshape(B, T, H, D)


class XSA(nn.Module):
    """Exclusive self-attention on a fixed set of physical layers."""

    slot = "xsa"

    def __init__(self, last_n: int, active_layers: tuple[int, ...]) -> None:
        super().__init__()
        self.last_n = last_n
        self.active_layers = active_layers

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
        """GPT extension point: project the self-value direction out on active layers."""
        return remove_self_value(y, v) if layer in self.active_layers else y

    def describe(self) -> list[str]:
        """Upstream's log line, e.g. ``XSA:last_4 active_layers:[8, 9, 10, 11]``."""
        return [f"XSA:last_{self.last_n} active_layers:{list(self.active_layers)}"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``XSAConfig`` as the ``arch_component`` ``xsa``."""
    registry.register("arch_component", "xsa", XSAConfig)
