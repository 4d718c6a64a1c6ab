"""CLMConvMoE, made causal (kind ``arch``, name ``conv_moe``): a byte-level convolutional
language model with a soft mixture of two convolutional experts.

Source: docs/techniques.md §11.3, the architecture of dancinlab ``clm-v1-d768-core-3axis-green``
(hexa-lang ``stdlib/flame/clm_reexport.hexa``, the trainer that wrote its ``.clm`` v0.2 file;
PyTorch mirror ``anima CLM/model/model.py``, variant A). Per position, tensors [B, C, T]:

1. x0 = Embed(V, d)(bytes) (plain lookup, never quantized);
2. x = CausalConv1d(d→d, K)(x0) with bias, NO residual (the "embed conv" ``ec``);
3. trunk layer i: x = x + GELU(Norm(CausalConv1d(d→d, K, dilation min(2^i, 512))(x)));
4. router: p = softmax_E(Conv1d(d→E, 1)(x)) per position;
5. experts: h_e = GELU(CausalConv1d(d→d, K)(x)); y = Σ_e p_e·h_e (soft: every expert runs,
   no top-k, no renormalisation, no auxiliary loss);
6. logits = Conv1d(d→V, 1)(Norm(y)) with bias, NOT tied to the embedding.

Causal convolutions left-pad (K-1)·dilation zeros, so tap K-1 is the current position (the
hexa layout [Cout, Cin, K]). GELU is the exact erf form. The receptive field is
1 + (K-1)·(2 + Σ_i dil_i) bytes (7 for the published K=3, one trunk layer).

**The causal fix.** The published model normalises with GroupNorm(1 group) over the whole
window (T × C): the statistics at position t include later positions, among them the byte
that is position t's target, so its training and its published cross-entropies let the model
peek at the future. ``norm="causal_ln"`` (the default) is a LayerNorm over the C channels of
each position with affine γ/β: position t's statistics come from position t alone, so the
model is a pure function of the last (receptive field) bytes, and the sliding-window and
standard evaluations see the same model. A prefix (cumulative) GroupNorm would be causal too,
but every prediction would then depend on where its window starts. The γ/β shapes (d each)
are those of the GroupNorm affine, so the ``.clm`` v0.2 layout still holds them.
``norm="groupnorm_leaky"`` is the published GroupNorm, kept ONLY so a test can show the leak;
never train with it.

Parameter names: ``embed.weight``, ``ec.weight/bias``, ``trunk.{i}.conv.weight/bias``,
``trunk.{i}.norm.weight/bias``, ``router.weight/bias``, ``experts.{e}.weight/bias``,
``out_norm.weight/bias``, ``readout.weight/bias``. The conv weights quantized to int4 by
``plugins/quant/int4.py`` are ec, the trunk convs, the experts, the router and the readout
(the published six with one trunk layer and two experts); the embedding, biases and norm
affines stay fp32.

``init="lcg"`` reproduces the hexa initialisation (docs/techniques.md §11.3: a 64-bit LCG per
tensor with fixed seeds, uniform in [-scale, scale), gammas included) for the published shape
only (one trunk layer, two experts); the default is torch's own init.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry

NORMS = ("causal_ln", "groupnorm_leaky")
INITS = ("torch", "lcg")
NORM_EPS = 1e-5
MAX_DILATION = 512

# hexa t_fill_lcg constants and the (seed, scale) of every tensor (docs/techniques.md §11.3).
LCG_MUL, LCG_ADD, LCG_MOD = 6364136223846793005, 1442695040888963407, 2**31 - 1
LCG_SEEDS: dict[str, tuple[int, float]] = {
    "embed.weight": (1, 0.3),
    "ec.weight": (2, 0.2),
    "ec.bias": (3, 0.1),
    "trunk.0.conv.weight": (4, 0.2),
    "trunk.0.conv.bias": (5, 0.1),
    "trunk.0.norm.weight": (6, 0.5),
    "trunk.0.norm.bias": (7, 0.1),
    "router.weight": (12, 0.2),
    "router.bias": (13, 0.1),
    "experts.0.weight": (14, 0.2),
    "experts.0.bias": (15, 0.1),
    "experts.1.weight": (16, 0.2),
    "experts.1.bias": (17, 0.1),
    "out_norm.weight": (18, 0.5),
    "out_norm.bias": (19, 0.1),
    "readout.weight": (20, 0.2),
    "readout.bias": (21, 0.1),
}


@dataclass(frozen=True, kw_only=True)
class ConvMoEConfig:
    """Shape, normalisation and init of the causal CLMConvMoE."""

    d_model: int = 768
    """Channels d of every convolution (the published model: 768)."""
    experts: int = 2
    """Experts E of the soft mixture (published: 2)."""
    kernel: int = 3
    """Kernel size K of the causal convolutions (published: 3)."""
    trunk_layers: int = 1
    """Residual trunk layers; layer i has dilation min(2^i, 512) (published: 1)."""
    norm: str = "causal_ln"
    """"causal_ln": per-position LayerNorm over channels (causal, the default);
    "groupnorm_leaky": the published GroupNorm over the window, which sees the future (tests only)."""
    init: str = "torch"
    """"torch": PyTorch's default init; "lcg": the hexa LCG init (published shape only)."""

    def __post_init__(self) -> None:
        for name in ("d_model", "experts", "kernel", "trunk_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"conv_moe.{name}: expected a positive int, got {value!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"conv_moe.norm: expected one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.init not in INITS:
            raise ConfigError(f"conv_moe.init: expected one of {', '.join(INITS)}, got {self.init!r}")
        if self.init == "lcg" and (self.trunk_layers, self.experts) != (1, 2):
            raise ConfigError(
                f"conv_moe.init='lcg': the hexa seeds exist only for trunk_layers=1, experts=2, "
                f"got trunk_layers={self.trunk_layers}, experts={self.experts}"
            )

    def dilations(self) -> list[int]:
        """Dilation of each trunk layer: min(2^i, 512)."""
        return [min(2**i, MAX_DILATION) for i in range(self.trunk_layers)]

    def receptive_field(self) -> int:
        """Bytes a prediction depends on: 1 + (K-1)·(ec + Σ trunk dilations + expert)."""
        return 1 + (self.kernel - 1) * (2 + sum(self.dilations()))

    def build(self, vocab_size: int) -> ConvMoE:
        """A freshly initialised model over ``vocab_size`` tokens (fp32 parameters)."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ConfigError(f"conv_moe: vocab_size must be a positive int, got {vocab_size!r}")
        return ConvMoE(self, vocab_size)


class CausalConv1d(nn.Conv1d):
    """Conv1d over [B, C, T] that left-pads (K-1)·dilation zeros: output t reads inputs <= t."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, dilation: int = 1) -> None:
        super().__init__(channels_in, channels_out, kernel, dilation=dilation)
        self.left_pad = (kernel - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


class CausalLayerNorm(nn.Module):
    """LayerNorm over the channels of each position of [B, C, T]; γ/β of shape (C,)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, NORM_EPS)
        return y.transpose(1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """The configured norm over [B, C, T] (see the module docstring for why causal_ln)."""
    if kind == "causal_ln":
        return CausalLayerNorm(channels)
    return nn.GroupNorm(1, channels, eps=NORM_EPS)  # the published, future-leaking norm


class TrunkLayer(nn.Module):
    """x + GELU(Norm(CausalConv1d_dil(x)))."""

    def __init__(self, d: int, kernel: int, dilation: int, norm: str) -> None:
        super().__init__()
        self.conv = CausalConv1d(d, d, kernel, dilation)
        self.norm = make_norm(norm, d)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.gelu(self.norm(self.conv(x)))


class ConvMoE(nn.Module):
    """The causal CLMConvMoE (see the module docstring); returns logits, the harness owns the loss."""

    def __init__(self, cfg: ConvMoEConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        d, k = cfg.d_model, cfg.kernel
        self.embed = nn.Embedding(vocab_size, d)
        self.ec = CausalConv1d(d, d, k)
        self.trunk = nn.ModuleList(TrunkLayer(d, k, dil, cfg.norm) for dil in cfg.dilations())
        self.router = nn.Conv1d(d, cfg.experts, 1)
        self.experts = nn.ModuleList(CausalConv1d(d, d, k) for _ in range(cfg.experts))
        self.out_norm = make_norm(cfg.norm, d)
        self.readout = nn.Conv1d(d, vocab_size, 1)
        if cfg.init == "lcg":
            lcg_init_(self)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, d): the normalised expert mixture, before the readout."""
        x = self.ec(self.embed(input_ids).transpose(1, 2))  # (B, d, T)
        for layer in self.trunk:
            x = layer(x)
        gate = torch.softmax(self.router(x), dim=1)  # (B, E, T)
        mix = gate[:, :1] * F.gelu(self.experts[0](x))
        for e in range(1, len(self.experts)):
            mix = mix + gate[:, e : e + 1] * F.gelu(self.experts[e](x))
        return self.out_norm(mix).transpose(1, 2)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) -> (..., V): the readout, a 1x1 conv written as a linear map."""
        return F.linear(hidden, self.readout.weight.squeeze(-1), self.readout.bias)

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, T) int64 ids -> (B, T, V) logits."""
        return self.logits(self.hidden(input_ids))

    @property
    def attention_layers(self) -> int:
        """No attention: a convolutional trunk."""
        return 0

    @property
    def width(self) -> int:
        """Channels of every convolution."""
        return self.cfg.d_model

    def describe(self) -> list[str]:
        """Header lines for the run log."""
        c = self.cfg
        return [
            f"conv_moe: d:{c.d_model} experts:{c.experts} kernel:{c.kernel} trunk_layers:{c.trunk_layers} "
            f"dilations:{c.dilations()} receptive_field:{c.receptive_field()} norm:{c.norm} init:{c.init}"
        ]


def lcg_uniform(count: int, seed: int, scale: float) -> Tensor:
    """hexa ``t_fill_lcg``: st <- |wrap64(st·MUL + ADD)| mod (2^31-1), value (st/(2^31-1))·2-1, times scale.

    The state is updated before each value; the product wraps as a signed 64-bit integer and
    the remainder takes C's sign before the absolute value (|a rem m| == |a| mod m).
    Pure Python (the recurrence is sequential): about a second per million values.
    """
    out = [0.0] * count
    st = seed
    for i in range(count):
        s = (st * LCG_MUL + LCG_ADD) & 0xFFFFFFFFFFFFFFFF
        if s >= 1 << 63:
            s -= 1 << 64
        st = abs(s) % LCG_MOD
        out[i] = (st / LCG_MOD * 2.0 - 1.0) * scale
    return torch.tensor(out, dtype=torch.float64)


def lcg_init_(model: ConvMoE) -> None:
    """Overwrite every parameter with its hexa LCG values (row-major fill, seeds in LCG_SEEDS)."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) ^ set(LCG_SEEDS))
    if missing:  # only reachable if the module layout changes
        raise ConfigError(f"conv_moe.init='lcg': no hexa seed for {missing}")
    with torch.no_grad():
        for name, p in params.items():
            seed, scale = LCG_SEEDS[name]
            p.copy_(lcg_uniform(p.numel(), seed, scale).reshape(p.shape))


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``ConvMoEConfig`` as the ``arch`` component ``conv_moe``."""
    registry.register("arch", "conv_moe", ConvMoEConfig)
