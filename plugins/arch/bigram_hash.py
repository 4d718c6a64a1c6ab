"""BigramHash (kind ``arch_component``, name ``bigram_hash``): a hashed embedding of each
(previous token, token) pair, added to the token embedding.

From the T1 (N=10240) and P1573 (N=2048) records of openai/parameter-golf (docs/techniques.md
§3.1, §13 rows 7 and 9): for t >= 1, b_t = ((36313·tok_t) XOR (27191·tok_{t-1})) mod (N-1), in
int32 (products wrap as upstream's do); b_0 = N-1 is reserved for position 0 of every
sequence or eval window (not for document starts). Emb[N×dim] (zero-init) → Linear
dim→d (no bias) → × a learned scalar (init 0.05), added to E[tok] before the embedding
RMSNorm (GPT extension point ``on_embed``). Only the previous position is read: causal.

Names: ``bigram.embed.weight``, ``bigram.proj.weight``, ``bigram.scale``.

Deliberate difference: upstream's module zero-inits ``proj`` and relies on the model's
orthogonal init pass to overwrite it; with both the table and the proj at zero neither
would ever get a gradient (docs/techniques.md §13 row 7). Here the module draws ``proj``
orthogonal (gain 1) itself, so the component is alive even without
``GPTConfig.orthogonal_init``; with it, the model re-draws it anyway (and T1's
``orthogonal_proj_scale`` scales it by 1/sqrt(2L)). That own draw is taken from a forked
generator, so the global one advances exactly as upstream's constructor advances it (init
parity with T1 at the same seed, issue 16). When dim == model_dim there is no proj, as upstream.
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

HASH_MUL_CUR = 36313
HASH_MUL_PREV = 27191


@dataclass(frozen=True, kw_only=True)
class BigramHashConfig:
    """BigramHash table shape and scale (P1573 defaults; T1 uses buckets=10240)."""

    buckets: int = 2048
    """N, rows of the hash table; bucket N-1 is reserved for position 0 (T1 10240, P1573 2048)."""
    dim: int = 128
    """Width of the table; a bias-free Linear projects it to model_dim (skipped if equal)."""
    scale_init: float = 0.05
    """Initial value of the learned output scalar ``bigram.scale``."""

    def check(self, model_cfg: Any) -> None:
        """Refuse tables the hash cannot address."""
        for name, low in (("buckets", 2), ("dim", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"bigram_hash.{name}: expected an int >= {low}, got {value!r}")

    def build(self, model_cfg: Any, vocab_size: int) -> BigramHash:
        """The embedding for a GPT of width ``model_cfg.model_dim``."""
        self.check(model_cfg)
        return BigramHash(self.buckets, self.dim, model_cfg.model_dim, self.scale_init)


def bigram_hash(ids: Tensor, buckets: int) -> Tensor:
    """(..., T) token ids -> (..., T) int64 bucket ids; position 0 gets the reserved N-1."""
    t = ids.to(torch.int32)
    mod = buckets - 1
    hashed = torch.bitwise_xor(HASH_MUL_CUR * t[..., 1:], HASH_MUL_PREV * t[..., :-1]) % mod
    first = torch.full_like(t[..., :1], mod)
    return torch.cat((first, hashed), dim=-1).long()


class BigramHash(nn.Module):
    """scale · proj(Emb[hash(tok_{t-1}, tok_t)]) over (B, T) ids -> (B, T, d)."""

    slot = "bigram"

    def __init__(self, buckets: int, dim: int, model_dim: int, scale_init: float = 0.05) -> None:
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = nn.Linear(dim, model_dim, bias=False) if dim != model_dim else None
        if self.proj is not None:
            # Upstream's constructor draws only the Linear's own init (then zeroes it): the
            # orthogonal draw must not move the generator the rest of the model draws from.
            with torch.random.fork_rng(devices=[]):
                nn.init.orthogonal_(self.proj.weight, gain=1.0)
        self.scale = nn.Parameter(torch.tensor(scale_init, dtype=torch.float32))

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(bigram_hash(ids, self.buckets))
        if self.proj is not None:
            h = F.linear(h, self.proj.weight.to(h.dtype))
        return h * self.scale.to(h.dtype)

    def on_embed(self, ids: Tensor, x: Tensor) -> Tensor:
        """GPT extension point: add the bigram embedding to E[tok]."""
        return x + self(ids)

    def describe(self) -> list[str]:
        """Log line."""
        return [f"bigram_hash:buckets:{self.buckets} dim:{self.embed.embedding_dim}"]


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``BigramHashConfig`` as the ``arch_component`` ``bigram_hash``."""
    registry.register("arch_component", "bigram_hash", BigramHashConfig)
