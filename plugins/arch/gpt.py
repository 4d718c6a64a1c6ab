"""The naive-baseline GPT of Parameter Golf (kind ``arch``, name ``gpt``).

Re-implements the model of the upstream baseline ``train_gpt.py`` (openai/parameter-golf),
itself derived from modded-nanogpt: a U-Net-skipped stack of pre-norm blocks with
parameter-free RMSNorm, GQA attention with QK-norm, half-split RoPE and per-head query gain,
a relu² MLP, learned residual mixing with the embedding (``resid_mix``), zero-initialised
output projections, a tied embedding head and a 30·tanh(z/30) logit softcap
(spec: TECHNIQUES.md §1, column B). The default config has exactly 17,059,912 parameters,
the ``model_params`` upstream logs. The model returns logits only: the harness owns the loss.

Parameter names follow upstream (``tok_emb.weight``, ``blocks.{i}.attn.c_q.weight``, ...,
``skip_weights``) so the shared control-tensor patterns route and keep the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.hookspecs import hookimpl
from harness.registry import Registry


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """Shape and init of the baseline GPT (upstream ``Hyperparameters`` names and defaults)."""

    num_layers: int = 9
    """Transformer blocks; the first ``num_layers // 2`` are the U-Net encoder half."""
    model_dim: int = 512
    """Residual stream width d."""
    num_heads: int = 8
    """Query heads; head dim = model_dim / num_heads (64 at the defaults)."""
    num_kv_heads: int = 4
    """Key/value heads (grouped-query attention); must divide num_heads."""
    mlp_mult: float = 2.0
    """MLP hidden width as a multiple of model_dim (baseline 2, T1 records 3)."""
    tie_embeddings: bool = True
    """Use the token embedding transposed as the output head (no separate lm_head)."""
    tied_embed_init_std: float = 0.005
    """Std of the normal init of the token embedding when tied."""
    logit_softcap: float = 30.0
    """Logits are c·tanh(z/c) with this c > 0."""
    rope_base: float = 10000.0
    """RoPE frequency base, applied over the full head dimension."""
    qk_gain_init: float = 1.5
    """Initial value of the learned per-head query gain applied after QK-norm."""

    def __post_init__(self) -> None:
        _validate(self)

    def build(self, vocab_size: int) -> GPT:
        """A freshly initialised GPT over ``vocab_size`` tokens (fp32 parameters)."""
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
            raise ConfigError(f"gpt: vocab_size must be a positive int, got {vocab_size!r}")
        return GPT(self, vocab_size)


def _validate(cfg: GPTConfig) -> None:
    """Refuse shapes the model cannot build, naming the field and what was expected."""
    for name in ("num_layers", "model_dim", "num_heads", "num_kv_heads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"gpt.{name}: expected a positive int, got {value!r}")
    if cfg.model_dim % cfg.num_heads:
        raise ConfigError(f"gpt.model_dim={cfg.model_dim} must be divisible by num_heads={cfg.num_heads}")
    if cfg.num_heads % cfg.num_kv_heads:
        raise ConfigError(
            f"gpt.num_heads={cfg.num_heads} must be divisible by num_kv_heads={cfg.num_kv_heads}"
        )
    if (cfg.model_dim // cfg.num_heads) % 2:
        raise ConfigError(
            f"gpt: head dim model_dim/num_heads={cfg.model_dim // cfg.num_heads} must be even for RoPE"
        )
    if not cfg.mlp_mult > 0 or not float(cfg.mlp_mult * cfg.model_dim).is_integer():
        raise ConfigError(f"gpt.mlp_mult={cfg.mlp_mult}: expected > 0 with mlp_mult*model_dim an integer")
    if not cfg.logit_softcap > 0:
        raise ConfigError(f"gpt.logit_softcap: expected > 0, got {cfg.logit_softcap}")
    if not cfg.rope_base > 0:
        raise ConfigError(f"gpt.rope_base: expected > 0, got {cfg.rope_base}")
    if not cfg.tied_embed_init_std >= 0:
        raise ConfigError(f"gpt.tied_embed_init_std: expected >= 0, got {cfg.tied_embed_init_std}")


def _rms_norm(x: Tensor) -> Tensor:
    # Parameter-free; eps=None means torch.finfo(x.dtype).eps, as upstream.
    return F.rms_norm(x, (x.size(-1),))


def _sdpa_has_gqa() -> bool:
    # `enable_gqa=` arrived in torch 2.5 (stock images with 2.4 lack it, upstream #1810).
    return torch.__version__ >= "2.5"


class CastedLinear(nn.Linear):
    """Bias-free Linear with fp32 master weights, cast to the input dtype at matmul time."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


def rotary_tables(seq_len: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos/sin tables (1, 1, T, head_dim/2) in fp32 for half-split RoPE."""
    # fp32 throughout: upstream's .bfloat16() also cast its inv_freq buffer, so its
    # positions above 256 were rounded; TECHNIQUES §1 specifies fp32 tables.
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return freqs.cos()[None, None], freqs.sin()[None, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (i, i + D/2) of the last dim of x (B, H, T, D) by the position angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    """GQA attention with QK-norm, RoPE and a learned per-head query gain."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, qk_gain_init: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.native_gqa = _sdpa_has_gqa()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).view(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)  # (B,H,T,Dh)
        k = self.c_k(x).view(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B,Hkv,T,Dh)
        v = self.c_v(x).view(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rms_norm(q), _rms_norm(k)
        q = apply_rotary(q, cos.to(q.dtype), sin.to(q.dtype))
        k = apply_rotary(k, cos.to(k.dtype), sin.to(k.dtype))
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = self._attend(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(bsz, seqlen, dim))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.num_kv_heads == self.num_heads:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.native_gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        # Same head grouping as enable_gqa: query head h reads kv head h // (H / Hkv).
        rep = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class MLP(nn.Module):
    """relu(W1 h)² then a zero-initialised down projection (modded-nanogpt's relu²)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    """Pre-norm block: mix the stream with x0, then scaled attention and MLP residuals."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        dim = cfg.model_dim
        self.attn = CausalSelfAttention(dim, cfg.num_heads, cfg.num_kv_heads, cfg.qk_gain_init)
        self.mlp = MLP(dim, int(cfg.mlp_mult * dim))
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        # Row 0 weighs the running stream, row 1 the embedding x0: starts as the plain stream.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(_rms_norm(x), cos, sin)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(_rms_norm(x))


class GPT(nn.Module):
    """The baseline GPT; implements ``harness.components.LanguageModel``."""

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        self.tok_emb = nn.Embedding(vocab_size, cfg.model_dim)
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim, dtype=torch.float32))
        # Upstream zero-inits an untied head too.
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, vocab_size, zero_init=True)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T, d) hidden states after the final RMSNorm."""
        x = _rms_norm(self.tok_emb(input_ids))
        x0 = x
        cos, sin = rotary_tables(
            input_ids.size(1), self.cfg.model_dim // self.cfg.num_heads, self.cfg.rope_base, input_ids.device
        )
        skips: list[Tensor] = []
        for block in self.blocks[: self.num_encoder_layers]:
            x = block(x, x0, cos, sin)
            skips.append(x)
        # Decoder i pops the most recent encoder output: the last encoder feeds the first decoder.
        for i, block in enumerate(self.blocks[self.num_encoder_layers :]):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = block(x, x0, cos, sin)
        return _rms_norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) hidden states -> (..., V) softcapped logits c·tanh(z/c)."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        z = F.linear(hidden, weight.to(hidden.dtype))
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(z / cap)

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T, V) softcapped logits; equals ``logits(hidden(ids))``."""
        return self.logits(self.hidden(input_ids))

    def num_params(self) -> int:
        """Number of parameters (the tied embedding counted once), as upstream logs it."""
        return sum(p.numel() for p in self.parameters())

    def to_baseline_dtypes(self) -> GPT:
        """Apply upstream's dtype policy: the embedding table in bf16, everything else fp32.

        Upstream casts the model to bf16 and then restores every Linear weight and every
        < 2-D or control-named parameter to fp32, which leaves only ``tok_emb`` in bf16.
        Meant for CUDA runs under bf16 autocast; ``build`` itself keeps all fp32.
        """
        self.tok_emb.to(torch.bfloat16)
        return self


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``GPTConfig`` as the ``arch`` component ``gpt``."""
    registry.register("arch", "gpt", GPTConfig)
