"""Per-row intN quantizer (int5 by default) with P1573's "GPTQ-lite" clip-percentile search.

Source: record PR #1573 (records/track_10min_16mb/2026-04-12_11L_4xMLP_RecycledCore_
ParallelResid_Int5, `mixed_quantize_int6` with ``quantize_int5_per_row`` / ``pack_int5``),
summarised in docs/techniques.md §8.3 and §13 rows 4-5. Routing per tensor:

* non-float: stored unchanged; float with at most ``passthrough_max_numel`` (65,536)
  elements: stored as ``passthrough_dtype`` (fp16), control tensors included, as P1573 does;
* names matching ``embed_patterns`` (token, bigram and value embeddings): the baseline's
  per-row int8 (clip at the 0.9999984 quantile, step floor 1/127, one value per byte);
* every other float: intN. For each candidate percentile p in ``clip_percentiles``, c_r =
  quantile(|W_r|, p), Δ_r = c_r/c (at least ``scale_floor``) in fp16, q = clamp(round(W/Δ),
  ±c); the p with the lowest whole-tensor MSE wins ("GPTQ-lite": no Hessian). Stored
  bit-packed (P1573) or one value per byte (T1's layout, which zstd/lzma compress better:
  docs/pitfalls.md §13). Tensors that are not 2-D get one step from their max.

Deliberate differences from the P1573 code:
* **Defaults: no clip search (row max only) and no step floor.** P1573's 1/15 floor gives
  every row with max|w| < 1 (nearly all of them) a fixed step of 1/15 (docs/techniques.md §13
  row 4), and its percentile search trades the clipped outliers' error for a lower MSE; either
  puts the worst-case int5 error on N(0, 0.05) weights (0.033 and 0.020) beyond the
  harness's quantizer conformance tolerance (0.012; the row max alone gives 0.007).
  ``IntNConfig.p1573()`` returns the record's exact settings, search and floor included.
* The embedding class is chosen by name patterns; P1573 sends every tensor outside its
  "mlp"/"attn" name classes to int8 (for its model: tok_emb, bigram.embed, ve_shared.embed;
  an untied ``lm_head`` would be int8 there and intN here unless added to the patterns).
* Large control-named tensors are not kept fp32 (P1573 has none above 65,536 elements).
* The packed stream is padded to a byte, not to a group of 8 values (see `harness.api.quantization`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import QTensor
from harness.api.quantization import (
    BIT_PACKING_MODULE,
    INT8_CLIP_Q,
    clip_level,
    decode_intn_or_passthrough,
    encode_intn,
    passthrough,
)
from harness.api.registry import Registry

_PASSTHROUGH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
P1573_CLIP_PERCENTILES = (0.999, 0.9995, 0.9999, 1.0)


@dataclass(frozen=True, kw_only=True)
class IntNConfig:
    """Settings of the intN quantizer (``p1573()`` gives the record's search and floor; see the module
    docstring)."""

    bits: int = 5
    """Bit width of the block matrices: levels -c..c with c = 2**(bits-1) - 1 (15 for int5)."""
    packed: bool = True
    """Store intN codes as a little-endian bit stream (P1573) instead of one int8 per value (T1)."""
    clip_percentiles: tuple[float, ...] = (1.0,)
    """Candidate row quantiles of |w| for the clip; the one with the lowest tensor MSE wins (1.0 = row max;
    P1573 searches 0.999, 0.9995, 0.9999, 1.0)."""
    scale_floor: float | None = None
    """Lower bound of the row step (P1573 uses 1/15); None = no floor (T1)."""
    allow_extra_negative: bool = False
    """Allow the level -(c+1) as T1 does; P1573 clamps to ±c."""
    passthrough_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored unquantized."""
    passthrough_dtype: str = "float16"
    """Dtype of those unquantized floats: float16 (P1573), bfloat16 or float32."""
    embed_patterns: tuple[str, ...] = ("tok_emb", "bigram.embed", "ve_shared.embed")
    """Name substrings of embedding tables, quantized with the baseline's per-row int8 recipe instead."""
    embed_bits: int = 8
    """Bit width of the embedding tables (8 = exactly the baseline int8 rows)."""

    def __post_init__(self) -> None:
        _check_bits("bits", self.bits)
        _check_bits("embed_bits", self.embed_bits)
        for field in ("packed", "allow_extra_negative"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"intn {field}: expected true or false, got {getattr(self, field)!r}")
        _check_percentiles(self.clip_percentiles)
        floor = self.scale_floor
        if floor is not None and (
            isinstance(floor, bool) or not isinstance(floor, (int, float)) or not (0.0 < floor < math.inf)
        ):
            raise ConfigError(f"intn scale_floor: expected None or a positive finite number, got {floor!r}")
        n = self.passthrough_max_numel
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"intn passthrough_max_numel: expected an integer >= 0, got {n!r}")
        if self.passthrough_dtype not in _PASSTHROUGH_DTYPES:
            raise ConfigError(
                f"intn passthrough_dtype: expected one of {', '.join(_PASSTHROUGH_DTYPES)}, "
                f"got {self.passthrough_dtype!r}"
            )
        pats = self.embed_patterns
        if not isinstance(pats, tuple) or not all(isinstance(p, str) and p for p in pats):
            raise ConfigError(f"intn embed_patterns: expected a tuple of non-empty strings, got {pats!r}")

    @classmethod
    def p1573(cls) -> IntNConfig:
        """PR #1573's export exactly: int5 packed, 4-percentile search, step floor 1/15."""
        return cls(
            bits=5,
            packed=True,
            clip_percentiles=P1573_CLIP_PERCENTILES,
            scale_floor=1.0 / 15,
            allow_extra_negative=False,
            passthrough_max_numel=65_536,
            passthrough_dtype="float16",
            embed_patterns=("tok_emb", "bigram.embed", "ve_shared.embed"),
            embed_bits=8,
        )

    def modules_by_name(self) -> tuple[str, ...]:
        """The bit packing when ``packed`` (`harness.api.by_name`): unpacked runs do not ship it."""
        return (BIT_PACKING_MODULE,) if self.packed else ()

    def build(self) -> IntNQuantizer:
        """The quantizer these settings describe."""
        return IntNQuantizer(self)


def _check_bits(field: str, bits: object) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ConfigError(f"intn {field}: expected an integer in 2..8, got {bits!r}")


def _check_percentiles(ps: object) -> None:
    if (
        not isinstance(ps, tuple)
        or not ps
        or not all(not isinstance(p, bool) and isinstance(p, (int, float)) and 0.0 < p <= 1.0 for p in ps)
    ):
        raise ConfigError(
            f"intn clip_percentiles: expected a non-empty tuple of numbers in (0, 1], got {ps!r}"
        )


class IntNQuantizer:
    """Float state dict <-> intN/int8/float tensors (see the module docstring)."""

    def __init__(self, cfg: IntNConfig) -> None:
        self.cfg = cfg
        self.name = f"int{cfg.bits}"

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        """Encode every tensor of ``state_dict``; arrays are contiguous CPU tensors."""
        return {name: self._quantize_one(name, t) for name, t in state_dict.items()}

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:
        """Decode ``quantize``'s output back to each tensor's shape and dtype."""
        return {name: decode_intn_or_passthrough(name, qt, "intn") for name, qt in tensors.items()}

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        """The bit width ``quantize`` gives ``name``: bits, embed_bits, or None when kept as float."""
        if self._passes_through(tensor):
            return None
        return self.cfg.embed_bits if self._is_embedding(name) else self.cfg.bits

    def _passes_through(self, t: torch.Tensor) -> bool:
        return not t.is_floating_point() or t.numel() <= self.cfg.passthrough_max_numel

    def _is_embedding(self, name: str) -> bool:
        return any(p in name for p in self.cfg.embed_patterns)

    def _quantize_one(self, name: str, t: torch.Tensor) -> QTensor:
        cfg = self.cfg
        if self._passes_through(t):
            half = _PASSTHROUGH_DTYPES[cfg.passthrough_dtype]
            return passthrough(t, keep_fp32=half == torch.float32, half_dtype=half)
        if self._is_embedding(name):
            # The baseline int8 recipe (at embed_bits), stored one value per byte as P1573 does.
            return encode_intn(
                name,
                t,
                cfg.embed_bits,
                packed=False,
                clip_percentiles=(INT8_CLIP_Q,),
                scale_floor=1.0 / clip_level(cfg.embed_bits),
                baseline_rounding=True,
            )
        return encode_intn(
            name,
            t,
            cfg.bits,
            packed=cfg.packed,
            clip_percentiles=cfg.clip_percentiles,
            scale_floor=cfg.scale_floor,
            allow_extra_negative=cfg.allow_extra_negative,
        )


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``intn`` as a quantizer."""
    registry.register("quantizer", "intn", IntNConfig)
