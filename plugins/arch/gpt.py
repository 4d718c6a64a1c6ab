"""The Parameter Golf GPT (kind ``arch``, name ``gpt``): the naive baseline, and the host the
record architectures plug into.

Re-implements the model of the upstream baseline ``train_gpt.py`` (openai/parameter-golf),
itself derived from modded-nanogpt: a U-Net-skipped stack of pre-norm blocks with
parameter-free RMSNorm, GQA attention with QK-norm, half-split RoPE and per-head query gain,
a relu² MLP, learned residual mixing with the embedding (``resid_mix``), zero-initialised
output projections, a tied embedding head and a 30·tanh(z/30) logit softcap
(spec: docs/techniques.md §2.1, source B). The default config has exactly 17,059,912 parameters,
the ``model_params`` upstream logs, and computes what it always did. The model returns
logits only: the harness owns the loss.

Small knobs of the T1 (10L Int5-MLP) and P1573 (12L RecycledCore) records are fields of
``GPTConfig`` (``mlp_mult``, ``mlp_activation``, ``rope_dims``, ``rope_train_seq_len``,
``ln_scale``, ``orthogonal_init``, ``orthogonal_proj_scale``, and ``init_order``, P1573's
order of random draws at build); the add-on modules are
``components``: Configs of kind ``arch_component`` from other plugin modules (BigramHash,
SmearGate, value embeddings, value residual, gated attention, XSA, recycled core, parallel
residuals, QK temperature; docs/techniques.md). This module never imports them: a component's
``build(model_cfg, vocab_size)`` returns an ``nn.Module`` that this GPT registers under the
module's ``slot`` name and calls at the extension points that its class defines (listed,
in the order they fire, in `harness.api.protocols.ArchComponent`: ``attach``,
``layer_route``, ``on_embed``, ``on_post_embed``, ``on_recycle``, ``on_value``, ``on_qk``,
``on_attn_out``, ``on_skip``, ``describe``; and ``on_train_progress`` before each
training step, for a late switch between the plain route through the blocks and the
planned one). They are looked up on the component's class, so a child
module named ``on_embed`` is no extension point. At every point components run in
``COMPONENT_ORDER`` (by slot), whatever order the config lists them in. The MLP's
nonlinearity is a built-in name or an ``activation`` plugin's Config (``mlp_activation``).

Attention backend (P560 portability, docs/techniques.md §2.3): SDPA's ``enable_gqa=`` is missing
in torch < 2.5 and fails on some backends, so a tiny probe call runs at build and whenever
the model moves to another device (``_apply``, i.e. ``.to()``), before compilation; on
failure K/V heads are expanded with ``repeat_interleave``. ``model.attention_backend`` says
which path runs.

Deliberate differences from upstream code: RoPE tables are fp32 (upstream rounds
``inv_freq`` to bf16 in the baseline; the ``upstream_numerics`` component restores that and
the bf16 embedding, for scoring imported upstream weights as upstream does); P1573's hard-coded
``train_seq_len=1024`` NTK rescale is an explicit option (``rope_train_seq_len``), off by
default; ``orthogonal_init`` never redraws Linears flagged zero-init (upstream: same rule)
and the gated-attention gate is flagged, so it stays zero even with 64+ heads.

Parameter names follow upstream (``tok_emb.weight``, ``blocks.{i}.attn.c_q.weight``, ...,
``skip_weights``) so the shared control-tensor patterns route and keep the same tensors.

Code only some configurations run lives elsewhere, so that the others do not ship it (pgolf
issue 13): the orthogonal init pass (`plugins.arch.orthogonal_init`) and upstream's parameter
order for the gradient clip (`plugins.arch.upstream_clip_order`) are imported by name, as
``GPTConfig.modules_by_name()`` declares; the route of a layer planner through the blocks is
the planner's (``layer_route``, e.g. `plugins.arch.recycled_core`); upstream's bf16 embedding
tables are `plugins.arch.upstream_numerics`'s.

Longer than 400 lines because a plugin module holds exactly one component (the project's plugin
rule): the GPT host with its blocks, attention, MLP, RoPE and the dispatch of every extension
point is that one component.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.by_name import import_by_name
from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry

MLP_ACTIVATIONS = ("relu2", "leaky_relu2")
INIT_ORDERS = ("modules", "banks")
# init_order="banks": the components P1573 builds after its blocks rather than before them.
BANKS_LATE_SLOTS = ("ve_shared",)
# Imported by name (harness.api.by_name), so only the configurations that use them ship them.
ORTHOGONAL_INIT_MODULE = "plugins.arch.orthogonal_init"
CLIP_ORDER_MODULE = "plugins.arch.upstream_clip_order"

# Extension-point order by slot: VE before value residual (v0 includes VE), XSA before the
# gate (docs/techniques.md §3). Unknown slots run after these, in config order.
COMPONENT_ORDER = (
    "bigram",
    "smear",
    "ve_shared",
    "value_residual",
    "xsa",
    "gated_attention",
    "recycle",
    "parallel_residual",
)


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """Shape, init and add-ons of the GPT (upstream ``Hyperparameters`` names and defaults)."""

    num_layers: int = 9
    """Physical transformer blocks; the first ``num_layers // 2`` are the U-Net encoder half."""
    model_dim: int = 512
    """Residual stream width d."""
    num_heads: int = 8
    """Query heads; head dim = model_dim / num_heads (64 at the defaults)."""
    num_kv_heads: int = 4
    """Key/value heads (grouped-query attention); must divide num_heads."""
    mlp_mult: float = 2.0
    """MLP hidden width as a multiple of model_dim, mlp_mult·d must be an integer
    (baseline 2, T1 and P1573 3)."""
    mlp_activation: Any = "relu2"
    """MLP nonlinearity: "relu2" (baseline, T1) relu(u)²; "leaky_relu2" (P1573)
    leaky_relu(u, 0.5)², i.e. u² for u > 0 and 0.25u² for u < 0; or the Config of an
    ``activation`` plugin (``plugins/activation/``), whose module is the whole f(u)."""
    tie_embeddings: bool = True
    """Use the token embedding transposed as the output head (no separate lm_head)."""
    tied_embed_init_std: float = 0.005
    """Std of the normal init of the token embedding when tied."""
    logit_softcap: float = 30.0
    """Logits are c·tanh(z/c) with this c > 0."""
    rope_base: float = 10000.0
    """RoPE frequency base."""
    rope_dims: int = 0
    """Head dims that rotate: 0 = all (baseline, T1); P1573 16: dims 0..15 rotate as pairs
    (i, i + rope_dims/2) with rope_dims/2 frequencies, the rest carry no position."""
    rope_train_seq_len: int = 0
    """0 = off. Otherwise, for sequences T longer than this, RoPE uses the NTK-scaled base
    rope_base·(T/rope_train_seq_len)^(r/(r-2)), r = rotated dims. P1573 hard-codes 1024, so
    at T=2048 with r=16 every call (train and eval) runs with base ≈ 22,082
    (docs/techniques.md §13 row 8)."""
    qk_gain_init: float = 1.5
    """Initial value of the learned per-head query gain applied after QK-norm."""
    ln_scale: bool = False
    """P1573: scale the normed inputs of attention and MLP of block l by 1/sqrt(l+1)
    (recycled passes use their physical block's factor)."""
    orthogonal_init: bool = False
    """T1/P1573: after build, every Linear with both dims >= 64 that is not flagged zero-init
    gets an orthogonal init with gain 1 (the zero flag is checked first, so W_o and the MLP
    down projection stay 0). Overwrites component projections (bigram.proj, ve_shared.proj)."""
    orthogonal_proj_scale: bool = False
    """T1 only, with orthogonal_init: multiply re-drawn Linears named ``.proj`` by
    1/sqrt(2·num_layers). Meant as muP for output projections, it reaches only bigram.proj,
    because the block projections are zero-flagged (docs/techniques.md §13 row 7)."""
    init_order: str = "modules"
    """Order of the random draws at build, so a seed gives the initial weights of the upstream
    script a submission rebuilds (issue 16). "modules" (baseline, T1): every Linear draws its
    default init when constructed, components before blocks, then the tied embedding's
    normal, then the orthogonal pass. "banks" (P1573, needs orthogonal_init): the block
    matrices draw nothing when constructed (upstream allocates them as empty parameter
    banks); the gated-attention gates draw right after the blocks, the value embedding is
    built after them, then the tied embedding's normal; the orthogonal pass draws Q, K, V
    and MLP-up layer by layer (whatever their size) before the other Linears."""
    components: tuple[Any, ...] = ()
    """Add-on module Configs (kind ``arch_component``), e.g. ``(BigramHashConfig(),
    SmearGateConfig())``; each at most once. Run in COMPONENT_ORDER, not in listed order."""

    def __post_init__(self) -> None:
        _validate(self)

    def modules_by_name(self) -> tuple[str, ...]:
        """The host's modules this configuration imports by name (`harness.api.by_name`): the
        orthogonal init pass, and upstream's parameter order where ours differs from it."""
        names = (ORTHOGONAL_INIT_MODULE,) if self.orthogonal_init else ()
        return names + ((CLIP_ORDER_MODULE,) if self.components or self.init_order == "banks" else ())

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
    act = cfg.mlp_activation
    is_plugin = (
        dataclasses.is_dataclass(act) and not isinstance(act, type) and callable(getattr(act, "build", None))
    )
    if not is_plugin and act not in MLP_ACTIVATIONS:
        raise ConfigError(
            f"gpt.mlp_activation: expected one of {MLP_ACTIVATIONS} or an activation plugin Config, "
            f"got {act!r}"
        )
    if not cfg.logit_softcap > 0:
        raise ConfigError(f"gpt.logit_softcap: expected > 0, got {cfg.logit_softcap}")
    if not cfg.rope_base > 0:
        raise ConfigError(f"gpt.rope_base: expected > 0, got {cfg.rope_base}")
    if not cfg.tied_embed_init_std >= 0:
        raise ConfigError(f"gpt.tied_embed_init_std: expected >= 0, got {cfg.tied_embed_init_std}")
    _validate_rope(cfg)
    if cfg.init_order not in INIT_ORDERS:
        raise ConfigError(f"gpt.init_order: expected one of {INIT_ORDERS}, got {cfg.init_order!r}")
    if cfg.init_order == "banks" and cfg.orthogonal_init is not True:
        raise ConfigError(
            "gpt.init_order='banks' draws the block matrices in the orthogonal pass: set orthogonal_init=True"
        )
    for name in ("tie_embeddings", "ln_scale", "orthogonal_init", "orthogonal_proj_scale"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"gpt.{name}: expected a bool, got {getattr(cfg, name)!r}")
    _validate_components(cfg)


def _validate_rope(cfg: GPTConfig) -> None:
    head_dim = cfg.model_dim // cfg.num_heads
    rd = cfg.rope_dims
    if not isinstance(rd, int) or isinstance(rd, bool) or rd < 0 or rd % 2 or rd > head_dim:
        raise ConfigError(
            f"gpt.rope_dims: expected 0 (all) or an even int <= head dim {head_dim}, got {rd!r}"
        )
    L = cfg.rope_train_seq_len
    if not isinstance(L, int) or isinstance(L, bool) or L < 0:
        raise ConfigError(f"gpt.rope_train_seq_len: expected an int >= 0 (0 = off), got {L!r}")
    if L and (rd or head_dim) <= 2:
        raise ConfigError("gpt.rope_train_seq_len: the NTK exponent r/(r-2) needs more than 2 rotated dims")


def _validate_components(cfg: GPTConfig) -> None:
    if not isinstance(cfg.components, tuple):
        raise ConfigError(f"gpt.components: expected a tuple of component Configs, got {cfg.components!r}")
    seen: set[type] = set()
    for comp in cfg.components:
        if (
            not dataclasses.is_dataclass(comp)
            or isinstance(comp, type)
            or not callable(getattr(comp, "build", None))
        ):
            raise ConfigError(
                f"gpt.components: {comp!r} is not a component Config (a dataclass with build())"
            )
        if type(comp) in seen:
            raise ConfigError(f"gpt.components: {type(comp).__name__} is listed twice")
        seen.add(type(comp))
        check = getattr(comp, "check", None)
        if callable(check):
            check(cfg)


def rope_base_for(cfg: GPTConfig, seq_len: int) -> float:
    """The RoPE base a length-``seq_len`` forward uses (NTK-scaled past rope_train_seq_len)."""
    L = cfg.rope_train_seq_len
    if not L or seq_len <= L:
        return cfg.rope_base
    rd = cfg.rope_dims or cfg.model_dim // cfg.num_heads
    return cfg.rope_base * (seq_len / L) ** (rd / (rd - 2))


def _rms_norm(x: Tensor) -> Tensor:
    # Parameter-free; eps=None means torch.finfo(x.dtype).eps, as upstream.
    return F.rms_norm(x, (x.size(-1),))


def _sdpa_gqa_works(device: torch.device, num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """P560's probe: does ``enable_gqa=True`` SDPA run on ``device`` with these head counts?"""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q = torch.zeros(1, num_heads, 4, head_dim, device=device, dtype=dtype)
    kv = torch.zeros(1, num_kv_heads, 4, head_dim, device=device, dtype=dtype)
    try:
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
    except Exception:  # noqa: BLE001 - TypeError on torch < 2.5, RuntimeError when no kernel fits
        return False
    return True


class CastedLinear(nn.Linear):
    """Bias-free Linear with fp32 master weights, cast to the input dtype at matmul time."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        self._zero_init = zero_init  # orthogonal_init leaves flagged weights at zero
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


def rotary_tables(
    seq_len: int, rot_dims: int, base: float, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """cos/sin tables (1, 1, T, rot_dims/2) for half-split RoPE over ``rot_dims`` dims.

    fp32 by default (docs/techniques.md §2.3). ``dtype=torch.bfloat16`` reproduces upstream's
    baseline, whose ``.bfloat16()`` also cast its inv_freq buffer: frequencies, positions and
    the tables are then bf16, so positions above 256 are rounded.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dims, 2, dtype=torch.float32, device=device) / rot_dims))
    inv_freq = inv_freq.to(dtype)
    freqs = torch.outer(torch.arange(seq_len, dtype=dtype, device=device), inv_freq)
    return freqs.cos()[None, None], freqs.sin()[None, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (i, i + r/2) of the first r = 2·cos.size(-1) dims of x (B, H, T, D);
    dims r..D-1 pass through (partial RoPE)."""
    rot = 2 * cos.size(-1)
    if rot < x.size(-1):
        return torch.cat((apply_rotary(x[..., :rot], cos, sin), x[..., rot:]), dim=-1)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    """GQA attention with QK-norm, RoPE, a learned per-head query gain and component hooks."""

    def __init__(
        self, dim: int, num_heads: int, num_kv_heads: int, qk_gain_init: float, layer_idx: int = 0
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.layer_idx = layer_idx
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.native_gqa = True  # set by GPT.probe_attention
        # Plain tuples (not registered): the components are registered once, on the GPT.
        self.value_hooks: tuple[nn.Module, ...] = ()
        self.qk_hooks: tuple[nn.Module, ...] = ()
        self.out_hooks: tuple[nn.Module, ...] = ()

    def forward(
        self, h: Tensor, cos: Tensor, sin: Tensor, state: dict | None = None, recycled: bool = False
    ) -> Tensor:
        bsz, seqlen, dim = h.shape
        q = self.c_q(h).view(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)  # (B,H,T,Dh)
        k = self.c_k(h).view(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B,Hkv,T,Dh)
        v = self.c_v(h)  # (B,T,kv_dim)
        for comp in self.value_hooks:
            v = comp.on_value(v, attn=self, layer=self.layer_idx, recycled=recycled, state=state)
        v = v.reshape(bsz, seqlen, self.num_kv_heads, self.head_dim)  # (B,T,Hkv,Dh)
        q, k = _rms_norm(q), _rms_norm(k)
        q = apply_rotary(q, cos.to(q.dtype), sin.to(q.dtype))
        k = apply_rotary(k, cos.to(k.dtype), sin.to(k.dtype))
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        for comp in self.qk_hooks:
            q, k = comp.on_qk(q, k, attn=self, layer=self.layer_idx, recycled=recycled, state=state)
        y = self._attend(q, k, v.transpose(1, 2)).transpose(1, 2)  # (B,T,H,Dh)
        for comp in self.out_hooks:
            y = comp.on_attn_out(y, attn=self, h=h, v=v, layer=self.layer_idx, recycled=recycled, state=state)
        return self.proj(y.reshape(bsz, seqlen, dim))

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
    """f(W1 h) then a zero-initialised down projection. Built-in f: relu(u)² (modded-nanogpt)
    or LeakyReLU(0.5)(u)² (P1573); an ``activation`` plugin Config supplies any other f."""

    def __init__(self, dim: int, hidden: int, activation: Any = "relu2") -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)
        self.leaky = activation == "leaky_relu2"
        # A tuple, not a registered child: an activation plugin holds no parameters.
        self.plugin: tuple[nn.Module, ...] = () if isinstance(activation, str) else (activation.build(),)

    def forward(self, x: Tensor) -> Tensor:
        u = self.fc(x)
        if self.plugin:
            return self.proj(self.plugin[0](u))
        act = F.leaky_relu(u, negative_slope=0.5) if self.leaky else torch.relu(u)
        return self.proj(act.square())


class Block(nn.Module):
    """Pre-norm block: mix the stream with x0, then scaled attention and MLP residuals
    (sequential, or GPT-J parallel when a component sets ``parallel``)."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        dim = cfg.model_dim
        self.attn = CausalSelfAttention(dim, cfg.num_heads, cfg.num_kv_heads, cfg.qk_gain_init, layer_idx)
        self.mlp = MLP(dim, int(cfg.mlp_mult * dim), cfg.mlp_activation)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        # Row 0 weighs the running stream, row 1 the embedding x0: starts as the plain stream.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0
        self.parallel = False

    def _normed(self, x: Tensor) -> Tensor:
        h = _rms_norm(x)
        # Skipping the multiply by 1.0 keeps the baseline's numbers bit-identical.
        return h if self.ln_scale == 1.0 else h * self.ln_scale

    def forward(
        self,
        x: Tensor,
        x0: Tensor,
        cos: Tensor,
        sin: Tensor,
        state: dict | None = None,
        recycled: bool = False,
    ) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        h = self._normed(x)
        attn = self.attn_scale.to(x.dtype) * self.attn(h, cos, sin, state, recycled)
        if self.parallel:
            return x + attn + self.mlp_scale.to(x.dtype) * self.mlp(h)
        x = x + attn
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self._normed(x))


def _check_component(comp: Any) -> None:
    slot = getattr(comp, "slot", None)
    if not isinstance(comp, nn.Module) or not isinstance(slot, str) or not slot.isidentifier():
        raise ConfigError(f"gpt.components: {type(comp).__name__} must be an nn.Module with a str `slot`")


def _in_component_order(built: list[Any]) -> list[Any]:
    rank = {slot: i for i, slot in enumerate(COMPONENT_ORDER)}
    # sorted() is stable: unknown slots keep their config order, after the known ones.
    return sorted(built, key=lambda c: rank.get(getattr(c, "slot", ""), len(rank)))


def _defines(comp: nn.Module, name: str) -> bool:
    # Looked up on the class: BigramHash's child module `embed` must not count as a hook.
    return callable(getattr(type(comp), name, None))


class GPT(nn.Module):
    """The GPT host; implements ``harness.api.protocols.LanguageModel``."""

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        # Random draws in upstream's order (init parity, issue 16): the embedding's own N(0, 1)
        # init, the add-on modules' constructors (T1 builds bigram and smear before its blocks),
        # the blocks, the head, and only then the tied embedding's normal init, as upstream's
        # _init_weights. The components register after the blocks (the parameter order that
        # optimizer state and checkpoints index by is unchanged); the orthogonal pass visits
        # them first, where upstream's named_modules() meets them.
        self.tok_emb = nn.Embedding(vocab_size, cfg.model_dim)
        # The upstream_numerics component sets bf16 RoPE tables and fp32 logits (upstream casts
        # its softcapped logits to fp32 before the loss).
        self.rope_dtype, self.logits_fp32 = torch.float32, False
        # init_order="banks" (P1573): the block matrices are empty banks upstream, so their
        # constructor draws are undone; the gates' draws (attach) and the late components come
        # before the head and the embedding's normal init.
        banks = cfg.init_order == "banks"
        built, late = self._build_components(cfg, vocab_size, BANKS_LATE_SLOTS if banks else ())
        with torch.random.fork_rng(devices=[], enabled=banks):
            self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        if banks:
            self._attach_components(cfg, built, late, vocab_size)
        # Upstream zero-inits an untied head too.
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, vocab_size, zero_init=True)
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        if not banks:
            # skip_weights (sized by the layer plan) is created in there, before any component attaches.
            self._attach_components(cfg, built)
        if cfg.orthogonal_init:
            import_by_name(ORTHOGONAL_INIT_MODULE).orthogonal_init(self, banks)
        if cfg.components or banks:
            # `harness.api.protocols.ClipOrder` only where the registration order is not upstream's.
            self.clip_order = MethodType(import_by_name(CLIP_ORDER_MODULE).clip_order, self)
        self.attention_backend = ""
        self._probed_device: torch.device | None = None
        self.probe_attention()

    # ------------------------------------------------------------------ build

    @staticmethod
    def _build_components(
        cfg: GPTConfig, vocab_size: int, late_slots: tuple[str, ...] = ()
    ) -> tuple[list[Any], list[Any]]:
        """The components' modules in COMPONENT_ORDER (built in config order, not yet
        registered), and the Configs of those whose slot is in ``late_slots``: their build
        is discarded and its draws undone, to be built again after the blocks."""
        built, late = [], []
        for c in cfg.components:
            rng = torch.get_rng_state() if late_slots else None
            comp = c.build(cfg, vocab_size)
            if rng is not None and getattr(comp, "slot", None) in late_slots:
                torch.set_rng_state(rng)
                late.append(c)
            else:
                built.append(comp)
        return _in_component_order(built), late

    def _attach_components(
        self, cfg: GPTConfig, built: list[Any], late: tuple[Any, ...] | list[Any] = (), vocab_size: int = 0
    ) -> None:
        """Register the components in COMPONENT_ORDER and attach them. ``late`` Configs are
        built only after the others attached (init_order="banks": P1573 draws its attention
        gates before its value embedding); the registration order stays the same."""
        self._plan_layers(cfg, built)
        early = list(built) if late else []
        for comp in early:
            _check_component(comp)
            if _defines(comp, "attach"):
                comp.attach(self)
        built = _in_component_order(built + [c.build(cfg, vocab_size) for c in late])
        for comp in built:
            _check_component(comp)
            if hasattr(self, comp.slot):
                raise ConfigError(
                    f"gpt.components: slot {comp.slot!r} of {type(comp).__name__} is already taken"
                )
            self.add_module(comp.slot, comp)
            if _defines(comp, "attach") and not any(comp is e for e in early):
                comp.attach(self)
        self.components = tuple(built)
        self._on_embed = tuple(c for c in built if _defines(c, "on_embed"))
        self._on_post_embed = tuple(c for c in built if _defines(c, "on_post_embed"))
        self._on_progress = tuple(c for c in built if _defines(c, "on_train_progress"))
        self._on_skip = tuple(c for c in built if _defines(c, "on_skip"))
        if len(self._on_skip) > 1:
            raise ConfigError(
                f"gpt.components: only one may merge skips, got {[type(c).__name__ for c in self._on_skip]}"
            )
        for block in self.blocks:
            block.attn.value_hooks = tuple(c for c in built if _defines(c, "on_value"))
            block.attn.qk_hooks = tuple(c for c in built if _defines(c, "on_qk"))
            block.attn.out_hooks = tuple(c for c in built if _defines(c, "on_attn_out"))

    def _plan_layers(self, cfg: GPTConfig, built: list[Any]) -> None:
        """The two routes through the blocks (before and after a planner's late switch) and
        ``skip_weights``, one per U-Net skip of the route with the most."""
        planners = [c for c in built if _defines(c, "layer_route")]
        if len(planners) > 1:
            raise ConfigError(
                f"gpt.components: only one may plan layers, got {[type(c).__name__ for c in planners]}"
            )
        self._planners = tuple(planners)  # a tuple, so the module is not registered twice
        L, enc = cfg.num_layers, self.num_encoder_layers
        self._route_off = tuple((i, "enc" if i < enc else "dec", -1) for i in range(L))
        self._route_on = tuple(planners[0].layer_route(L)) if planners else self._route_off
        self.recycled_layers = tuple(layer for layer, _, k in self._route_on if k >= 0)
        self.effective_depth = len(self._route_on)
        num_skips = max(
            min(sum(r == "enc" for _, r, _ in route), sum(r == "dec" for _, r, _ in route))
            for route in (self._route_off, self._route_on)
        )
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim, dtype=torch.float32))

    # ------------------------------------------------------------------ attention backend

    def probe_attention(self, device: torch.device | str | None = None) -> str:
        """Pick native-GQA SDPA or the repeat_interleave fallback by a tiny trial call on ``device``
        (default: where the parameters are); sets and returns ``attention_backend``."""
        device = torch.device(device) if device is not None else self.tok_emb.weight.device
        cfg = self.cfg
        if cfg.num_heads == cfg.num_kv_heads:
            native, backend = True, "sdpa_mha"
        else:
            native = _sdpa_gqa_works(device, cfg.num_heads, cfg.num_kv_heads, cfg.model_dim // cfg.num_heads)
            backend = "sdpa_native_gqa" if native else "sdpa_repeat_kv"
        self.set_native_gqa(native)
        self.attention_backend, self._probed_device = backend, device
        return backend

    def set_native_gqa(self, native: bool) -> None:
        """Force the attention path: SDPA ``enable_gqa=True`` or explicit K/V head expansion."""
        for block in self.blocks:
            block.attn.native_gqa = native
        if self.cfg.num_heads != self.cfg.num_kv_heads:
            self.attention_backend = "sdpa_native_gqa" if native else "sdpa_repeat_kv"

    def _apply(self, fn: Any, recurse: bool = True) -> GPT:
        # .to()/.cuda() end here: re-probe on the new device, before anyone compiles the model.
        out = super()._apply(fn, recurse)
        device = self.tok_emb.weight.device
        if getattr(self, "_probed_device", None) is not None and device != self._probed_device:
            self.probe_attention(device)
        return out

    # ------------------------------------------------------------------ forward

    def rotary(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos/sin tables for a length-``seq_len`` forward (partial and NTK-scaled as configured)."""
        rot = self.cfg.rope_dims or self.cfg.model_dim // self.cfg.num_heads
        return rotary_tables(seq_len, rot, rope_base_for(self.cfg, seq_len), device, self.rope_dtype)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T, d) hidden states after the final RMSNorm."""
        x = self.tok_emb(input_ids)
        for comp in self._on_embed:
            x = comp.on_embed(input_ids, x)
        x = _rms_norm(x)
        for comp in self._on_post_embed:
            x = comp.on_post_embed(input_ids, x)
        x0 = x
        cos, sin = self.rotary(input_ids.size(1), input_ids.device)
        state = {"ids": input_ids, "host": self} if self.components else None
        skips: list[Tensor] = []
        # A Python bool, so torch.compile guards on it: one graph per route, both primed.
        late_on = bool(self._planners) and bool(getattr(self._planners[0], "active", True))
        i = 0
        for layer, role, k in self._route_on if late_on else self._route_off:
            if k >= 0:  # a recycled pass: the block's weights again
                x = self._planners[0].on_recycle(x, k)
            if role == "dec":
                # Decoder i pops the most recent encoder output: the last encoder feeds the first decoder.
                if skips:
                    skip = self.skip_weights[i].to(x.dtype) * skips.pop()
                    x = self._on_skip[0].on_skip(x, skip, i) if self._on_skip else x + skip
                i += 1
            x = self.blocks[layer](x, x0, cos, sin, state, recycled=k >= 0)
            if role == "enc":
                skips.append(x)
        return _rms_norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) hidden states -> (..., V) softcapped logits c·tanh(z/c)."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        z = F.linear(hidden, weight.to(hidden.dtype))
        cap = self.cfg.logit_softcap
        out = cap * torch.tanh(z / cap)
        return out.float() if self.logits_fp32 else out

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T, V) softcapped logits; equals ``logits(hidden(ids))``."""
        return self.logits(self.hidden(input_ids))

    def on_train_progress(
        self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float
    ) -> list[str]:
        """`harness.api.protocols.TrainingProgress`: pass the training clock to the components
        with a late switch; their log lines for what changed."""
        lines: list[str] = []
        for comp in self._on_progress:
            lines.extend(
                comp.on_train_progress(
                    step, elapsed_ms, iterations=iterations, max_wallclock_ms=max_wallclock_ms
                )
            )
        return lines

    # ------------------------------------------------------------------ reporting

    @property
    def attention_layers(self) -> int:
        """Virtual layers: recycled blocks count once per pass."""
        return self.effective_depth

    @property
    def width(self) -> int:
        """The model dimension."""
        return self.blocks[0].attn.c_q.weight.shape[1]

    def num_params(self) -> int:
        """Number of parameters (the tied embedding counted once), as upstream logs it."""
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> list[str]:
        """Log lines: the attention backend, then one or more per component (upstream formats
        where upstream has one, e.g. ``XSA:last_4 active_layers:[8, 9, 10, 11]``)."""
        lines = [f"attention_backend:{self.attention_backend} native_gqa:{self.blocks[0].attn.native_gqa}"]
        for comp in self.components:
            if _defines(comp, "describe"):
                lines.extend(comp.describe())
        return lines


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``GPTConfig`` as the ``arch`` component ``gpt``."""
    registry.register("arch", "gpt", GPTConfig)
