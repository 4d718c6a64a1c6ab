"""Mixed-precision quantizer: each tensor's encoding chosen by its name, first matching rule wins.

Source: record T1 (records/track_10min_16mb/2026-03-20_10L_Int5MLP_MuonWD04_SWA50,
`mixed_quantize_int6` with ``_classify_param`` and ``quantize_intN_per_row``; also run by
P560), summarised in docs/techniques.md §8.4 and §13 rows 5-6.
``MixedConfig.t1()`` (the default) routes, in this order:

1. non-float tensors: stored as they are; floats with at most 8,192 elements: fp16. This
   catches every control tensor (gains, mixes, skip weights), so T1 stores them fp16;
2. larger control-named tensors: fp32 (T1's model has none);
3. names containing "tok_emb" or "blocks.8.attn.c_k": fp16. The blocks.8 quirk: T1 keeps
   the key projection of block 8, the second-to-last of its 10 layers, in fp16 (seemingly
   left over from its 9-layer predecessor, where block 8 was the last; the record README's
   "last layer" claim is wrong). The pattern is kept verbatim;
4. ".mlp." -> int5; "bigram" -> int6; ".attn." -> int6; ".proj." -> int6 (T1's
   ``_classify_param`` also files non-MLP ".proj." names under attention; no T1 name reaches
   that rule);
5. anything else (an untied ``lm_head``): the baseline int8 recipe.

intN here is T1's: Δ_r = rowmax/c in fp16 (no percentile clip, no floor), q = clamp(round(W/Δ),
-(c+1), c), one value per int8 byte, left to zstd-22 (a 31/63-symbol alphabet). "int8" is
the baseline's per-row int8 (`harness.api.quantization.encode_int8`), as T1 calls it.

``MixedConfig.p1573()`` expresses PR #1573's export with the same machinery (65,536
passthrough, ".mlp."/".attn."/".proj." -> packed int5 with the 4-percentile search and the
1/15 floor, embeddings int8).

Differences from the upstream code: every dtype is restored on load (T1 restores only
fp32/bf16 from fp16), an all-zero row or tensor dequantizes to zeros (T1's per-tensor path
would divide by a zero fp16 step), and NaN/inf weights raise TrainingDiverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import BASELINE_CONTROL_PATTERNS, QTensor, is_control_tensor
from harness.api.quantization import (
    BIT_PACKING_MODULE,
    INT8_CLIP_Q,
    decode_int8,
    decode_intn,
    decode_passthrough,
    encode_int8,
    encode_intn,
    passthrough,
)
from harness.api.registry import Registry

T1_RULES: tuple[tuple[str, str], ...] = (
    (".mlp.", "int5"),
    ("bigram", "int6"),
    (".attn.", "int6"),
    (".proj.", "int6"),
)
T1_CONTROL_PATTERNS: tuple[str, ...] = (*BASELINE_CONTROL_PATTERNS, "smear", "bigram.scale")
P1573_CONTROL_PATTERNS: tuple[str, ...] = (
    *BASELINE_CONTROL_PATTERNS,
    "smear",
    "dtg_gate",
    "ve_layer_scales",
    "ve_shared.scale",
    "attn_gate",
    "vr_lambda",
)
_FLOAT_ENCODINGS = ("fp16", "fp32")
_INT_ENCODINGS = tuple(f"int{b}" for b in range(2, 9))


@dataclass(frozen=True, kw_only=True)
class MixedConfig:
    """Settings of the mixed-precision quantizer (T1's routing by default)."""

    rules: tuple[tuple[str, str], ...] = T1_RULES
    """(name substring, encoding) pairs checked in order; encodings: int2..int7 (intN), int8 (baseline),
    fp16, fp32."""
    passthrough_max_numel: int = 8_192
    """Float tensors with at most this many elements are stored fp16 whatever their name (T1: 8,192)."""
    control_patterns: tuple[str, ...] = T1_CONTROL_PATTERNS
    """Larger float tensors whose name contains one of these are stored fp32."""
    keep_fp16_patterns: tuple[str, ...] = ("tok_emb", "blocks.8.attn.c_k")
    """Larger float tensors whose name contains one of these are stored fp16
    (T1's FP16_KEEP_NAME_PATTERNS)."""
    default_encoding: str = "int8"
    """Encoding of large float tensors no rule matches."""
    packed: bool = False
    """Bit-pack intN codes (P1573) instead of one int8 per value (T1)."""
    clip_percentiles: tuple[float, ...] = (1.0,)
    """intN candidate row quantiles of |w|; the lowest-MSE one wins (T1: row max only)."""
    scale_floor: float | None = None
    """Lower bound of the intN row step (T1: none; P1573: 1/15)."""
    allow_extra_negative: bool = True
    """intN levels go down to -(c+1), as T1's clamp allows; False clamps to ±c (P1573)."""
    int8_clip_quantile: float = INT8_CLIP_Q
    """Row quantile of |w| used as the clip of the baseline int8 encoding."""

    def __post_init__(self) -> None:
        # A config read back from JSON has lists where tuples were written.
        if isinstance(self.rules, tuple):
            object.__setattr__(
                self, "rules", tuple(tuple(r) if isinstance(r, list) else r for r in self.rules)
            )
        _check_rules(self.rules)
        _check_encoding("default_encoding", self.default_encoding)
        n = self.passthrough_max_numel
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"mixed passthrough_max_numel: expected an integer >= 0, got {n!r}")
        for field in ("control_patterns", "keep_fp16_patterns"):
            pats = getattr(self, field)
            if not isinstance(pats, tuple) or not all(isinstance(p, str) and p for p in pats):
                raise ConfigError(f"mixed {field}: expected a tuple of non-empty strings, got {pats!r}")
        for field in ("packed", "allow_extra_negative"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"mixed {field}: expected true or false, got {getattr(self, field)!r}")
        _check_numbers(self)

    @classmethod
    def t1(cls) -> MixedConfig:
        """Record T1 / P560's int5 MLP + int6 attention/bigram export (see the module docstring)."""
        return cls(
            rules=T1_RULES,
            passthrough_max_numel=8_192,
            control_patterns=T1_CONTROL_PATTERNS,
            keep_fp16_patterns=("tok_emb", "blocks.8.attn.c_k"),
            default_encoding="int8",
            packed=False,
            clip_percentiles=(1.0,),
            scale_floor=None,
            allow_extra_negative=True,
        )

    @classmethod
    def p1573(cls) -> MixedConfig:
        """PR #1573's export: packed int5 block matrices with the percentile search, int8 embeddings."""
        return cls(
            rules=(
                ("tok_emb", "int8"),
                ("lm_head", "int8"),
                (".mlp.", "int5"),
                (".attn.", "int5"),
                (".proj.", "int5"),
            ),
            passthrough_max_numel=65_536,
            control_patterns=P1573_CONTROL_PATTERNS,
            keep_fp16_patterns=(),
            default_encoding="int8",
            packed=True,
            clip_percentiles=(0.999, 0.9995, 0.9999, 1.0),
            scale_floor=1.0 / 15,
            allow_extra_negative=False,
        )

    def modules_by_name(self) -> tuple[str, ...]:
        """The bit packing when ``packed`` (`harness.api.by_name`): T1's one code per byte does not
        ship it."""
        return (BIT_PACKING_MODULE,) if self.packed else ()

    def build(self) -> MixedQuantizer:
        """The quantizer these settings describe."""
        return MixedQuantizer(self)


def _check_encoding(field: str, enc: object) -> None:
    if enc not in _FLOAT_ENCODINGS + _INT_ENCODINGS:
        raise ConfigError(f"mixed {field}: encoding {enc!r} is not one of fp16, fp32, int2..int8")


def _check_rules(rules: object) -> None:
    ok = isinstance(rules, tuple) and all(
        isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], str) and r[0] for r in rules
    )
    if not ok:
        raise ConfigError(
            f"mixed rules: expected a tuple of (non-empty pattern, encoding) pairs, got {rules!r}"
        )
    for pattern, enc in rules:
        _check_encoding(f"rules[{pattern!r}]", enc)


def _check_numbers(cfg: MixedConfig) -> None:
    ps = cfg.clip_percentiles
    if (
        not isinstance(ps, tuple)
        or not ps
        or not all(not isinstance(p, bool) and isinstance(p, (int, float)) and 0.0 < p <= 1.0 for p in ps)
    ):
        raise ConfigError(
            f"mixed clip_percentiles: expected a non-empty tuple of numbers in (0, 1], got {ps!r}"
        )
    f = cfg.scale_floor
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < math.inf):
        raise ConfigError(f"mixed scale_floor: expected None or a positive finite number, got {f!r}")
    q = cfg.int8_clip_quantile
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
        raise ConfigError(f"mixed int8_clip_quantile: expected a number in (0, 1], got {q!r}")


class MixedQuantizer:
    """Float state dict <-> per-tensor fp16/fp32/intN/int8 encodings chosen by ``route``."""

    def __init__(self, cfg: MixedConfig) -> None:
        self.cfg = cfg
        widths = sorted({int(enc[3:]) for _, enc in cfg.rules if enc in _INT_ENCODINGS and enc != "int8"})
        # The log tag names the narrow widths in use ("int5int6" for T1), "mixed" when none.
        self.name = "".join(f"int{b}" for b in widths) or "mixed"

    def route(self, name: str, t: torch.Tensor) -> str:
        """Encoding of tensor ``name``: "raw" (non-float, as is), "fp16", "fp32" or "int2".."int8"."""
        cfg = self.cfg
        if not t.is_floating_point():
            return "raw"
        if t.numel() <= cfg.passthrough_max_numel:
            return "fp16"
        if is_control_tensor(name, cfg.control_patterns):
            return "fp32"
        if any(p in name for p in cfg.keep_fp16_patterns):
            return "fp16"
        for pattern, enc in cfg.rules:
            if pattern in name:
                return enc
        return cfg.default_encoding

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        """Bit width ``quantize`` gives ``name`` (None when it stays non-float or float)."""
        enc = self.route(name, tensor)
        return int(enc[3:]) if enc in _INT_ENCODINGS else None

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        """Encode every tensor of ``state_dict``; arrays are contiguous CPU tensors."""
        return {name: self._quantize_one(name, t) for name, t in state_dict.items()}

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:
        """Decode ``quantize``'s output back to each tensor's shape and dtype."""
        return {name: _dequantize_one(name, qt) for name, qt in tensors.items()}

    def _quantize_one(self, name: str, t: torch.Tensor) -> QTensor:
        cfg, enc = self.cfg, self.route(name, t)
        if enc in ("raw", "fp16", "fp32"):
            return passthrough(t, keep_fp32=enc == "fp32")
        if enc == "int8":
            return encode_int8(name, t, cfg.int8_clip_quantile)
        return encode_intn(
            name,
            t,
            int(enc[3:]),
            packed=cfg.packed,
            clip_percentiles=cfg.clip_percentiles,
            scale_floor=cfg.scale_floor,
            allow_extra_negative=cfg.allow_extra_negative,
        )


def _dequantize_one(name: str, qt: QTensor) -> torch.Tensor:
    if qt.kind == "passthrough":
        return decode_passthrough(name, qt)
    if qt.kind in ("int8_row", "int8_tensor"):
        return decode_int8(name, qt)
    if qt.kind in ("intn", "intn_packed"):
        return decode_intn(name, qt)
    raise ArtifactError(f"mixed quantizer cannot decode tensor {name}: unknown kind {qt.kind!r}")


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``mixed`` as a quantizer."""
    registry.register("quantizer", "mixed", MixedConfig)
