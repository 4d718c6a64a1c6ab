"""Value embeddings (kind ``arch_component``, name ``value_embed``): a second, small token
embedding added to the attention values of chosen layers.

From the P1573 (12L RecycledCore) record of openai/parameter-golf (VE_LAYERS "10,11",
VE_DIM 128; docs/techniques.md §3.3): one shared table V×dim, N(0, 0.01) → Linear dim→kv_dim (no
bias) → × a learned scale (0.1) → × a per-layer scalar (1), added to the V projection
output of each listed layer before the head reshape and before value-residual mixing
(GPT extension point ``on_value``). Computed once per forward; not used in recycled
passes. It reads only the current token: causal.

Names: ``ve_shared.embed.weight``, ``ve_shared.proj.weight``, ``ve_shared.scale``, and the
top-level ``ve_layer_scales.{j}`` (one per listed layer, in the listed order), which
``attach`` registers on the GPT itself, as upstream names them.

As upstream, the module zero-inits ``proj``; ``GPTConfig.orthogonal_init`` (on in P1573)
re-draws it orthogonal. The table is non-zero, so the zero proj still learns without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class ValueEmbedConfig:
    """Value-embedding layers and table shape (P1573 defaults)."""

    layers: tuple[int, ...] = (10, 11)
    """Physical layers whose V projection gets the embedding (P1573: the last two of 12)."""
    dim: int = 128
    """Width of the shared table; projected to kv_dim (skipped if equal)."""
    init_std: float = 0.01
    """Std of the normal init of the table."""
    scale_init: float = 0.1
    """Initial value of the shared output scalar ``ve_shared.scale``."""
    layer_scale_init: float = 1.0
    """Initial value of each per-layer scalar ``ve_layer_scales.{j}``."""

    def check(self, model_cfg: Any) -> None:
        """Refuse layers outside the model and non-positive widths."""
        L = model_cfg.num_layers
        layers = self.layers
        if not isinstance(layers, tuple) or not layers or len(set(layers)) != len(layers):
            raise ConfigError(
                f"value_embed.layers: expected a non-empty tuple of distinct ints, got {layers!r}"
            )
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < L for i in layers):
            raise ConfigError(f"value_embed.layers: expected layer indices in 0..{L - 1}, got {layers!r}")
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise ConfigError(f"value_embed.dim: expected a positive int, got {self.dim!r}")
        if not self.init_std >= 0:
            raise ConfigError(f"value_embed.init_std: expected >= 0, got {self.init_std!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> ValueEmbed:
        """The shared table for a GPT with ``model_cfg``'s kv width."""
        self.check(model_cfg)
        kv_dim = model_cfg.num_kv_heads * (model_cfg.model_dim // model_cfg.num_heads)
        return ValueEmbed(self, vocab_size, kv_dim)


class ValueEmbed(nn.Module):
    """scale · proj(Emb[tok]) over (B, T) ids -> (B, T, kv_dim); per-layer scalars live on the GPT."""

    slot = "ve_shared"

    def __init__(self, cfg: ValueEmbedConfig, vocab_size: int, kv_dim: int) -> None:
        super().__init__()
        self.layers = cfg.layers
        self.layer_scale_init = cfg.layer_scale_init
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        nn.init.normal_(self.embed.weight, mean=0.0, std=cfg.init_std)
        self.proj = nn.Linear(cfg.dim, kv_dim, bias=False) if cfg.dim != kv_dim else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(cfg.scale_init, dtype=torch.float32))

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        if self.proj is not None:
            h = F.linear(h, self.proj.weight.to(h.dtype))
        return h * self.scale.to(h.dtype)

    def attach(self, model: nn.Module) -> None:
        """Register ``ve_layer_scales`` on the GPT (upstream's top-level name)."""
        if hasattr(model, "ve_layer_scales"):
            raise ConfigError("value_embed: the model already has a `ve_layer_scales` attribute")
        model.ve_layer_scales = nn.ParameterList(
            nn.Parameter(torch.full((1,), self.layer_scale_init, dtype=torch.float32)) for _ in self.layers
        )

    def on_value(self, v: Tensor, *, attn: nn.Module, layer: int, recycled: bool, state: dict) -> Tensor:
        """GPT extension point: add the (cached) embedding on listed layers, never on recycled passes."""
        if recycled or layer not in self.layers:
            return v
        if "ve" not in state:
            state["ve"] = self(state["ids"])
        ve = state["ve"]
        scale = state["host"].ve_layer_scales[self.layers.index(layer)]
        return v + ve * scale.to(ve.dtype)

    def describe(self) -> list[str]:
        """Log line."""
        return [f"value_embed:layers:{list(self.layers)} dim:{self.embed.embedding_dim}"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``ValueEmbedConfig`` as the ``arch_component`` ``value_embed``."""
    registry.register("arch_component", "value_embed", ValueEmbedConfig)
