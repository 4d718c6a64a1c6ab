"""Per-output-channel int4 quantizer with 15 levels (kind ``quantizer``, name ``int4``), the
weight scheme of the CLMConvMoE ``.clm`` models.

Source: docs/techniques.md §8.5 and §11.3 and docs/formats.md §7, read from dancinlab/hexa-lang
``stdlib/flame/quant_lib.hexa`` (``nn_int4_quant_fwd``, the weight-only int4 QAT of the hexa
trainer) and the v0.2 block writer of ``stdlib/flame/clm_reexport.hexa``. For every tensor whose name matches
``patterns`` (the six conv weights of ``plugins/arch/conv_moe.py``):

* per output channel c (dim 0), s_c = max_j |W[c, j]| / 7, and s_c = 1 for an all-zero channel
  (as hexa; the torch reference clamps max|W| at 1e-8 instead, which gives the same codes);
* q = clamp(round(W / s), -7, 7): 15 levels. -8 is never produced (the AKIDA chip the reference
  targets rejects it), so code 0 is invalid in a file and decoding refuses it;
* stored two codes per byte, nibble = q + 8, element i (even, row-major over the whole tensor)
  in the LOW nibble and i + 1 in the HIGH nibble, an odd tail padded with 8: exactly the
  payload of a ``.clm`` v0.2 conv block. Scales are fp32, one per output channel.

Everything else (embedding, biases, norm affines) passes through in ``passthrough_dtype``
(fp32 by default, as the reference keeps them). ``qat_bits`` says 4 for exactly the quantized
tensors and ``fake_quant(name, w)`` returns q·s, bit for bit what ``dequantize`` gives back, so
the ``late_qat`` observer trains against the artifact's own values.

Deliberate difference: ``torch.round`` rounds halves to even, hexa rounds them away from
zero; the two disagree only when W/s lands exactly on .5 (e.g. a channel [7, 2.5]: q = 2 here,
3 in hexa). Every channel's own max maps to exactly ±7, so the straight-through clip mask of
the reference is all ones and plain STE is the same estimator.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch

from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import QTensor
from harness.api.quantization import (
    check_finite,
    decode_passthrough,
    dequantize_channels,
    dtype_name,
    get_array,
    pack_nibbles,
    passthrough,
    quantize_channels,
    restore_dtype,
    unpack_nibbles,
)
from harness.api.registry import Registry

CONV_MOE_WEIGHTS = ("ec.weight", "trunk.*.conv.weight", "experts.*.weight", "router.weight", "readout.weight")
_PASSTHROUGH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class Int4Config:
    """Which tensors become int4 and how the rest is stored."""

    patterns: tuple[str, ...] = CONV_MOE_WEIGHTS
    """fnmatch globs on full parameter names; matching float tensors of >= 2 dims are int4
    (default: the six conv weights of conv_moe: ec, trunk convs, experts, router, readout)."""
    passthrough_dtype: str = "float32"
    """Dtype of every other float tensor: float32 (the reference), float16 or bfloat16."""

    def __post_init__(self) -> None:
        pats = self.patterns
        if not isinstance(pats, tuple) or not pats or not all(isinstance(p, str) and p for p in pats):
            raise ConfigError(
                f"int4 patterns: expected a non-empty tuple of non-empty name globs, got {pats!r}"
            )
        if self.passthrough_dtype not in _PASSTHROUGH_DTYPES:
            raise ConfigError(
                f"int4 passthrough_dtype: expected one of {', '.join(_PASSTHROUGH_DTYPES)}, "
                f"got {self.passthrough_dtype!r}"
            )

    def build(self) -> Int4Quantizer:
        """The quantizer these settings describe."""
        return Int4Quantizer(self)


class Int4Quantizer:
    """Float state dict <-> per-channel int4 tensors (see the module docstring)."""

    name = "int4"

    def __init__(self, cfg: Int4Config) -> None:
        self.cfg = cfg

    def is_quantized(self, name: str, tensor: torch.Tensor) -> bool:
        """True for float tensors of >= 2 dims whose name matches one of the patterns."""
        return (
            tensor.is_floating_point()
            and tensor.ndim >= 2
            and any(fnmatch.fnmatchcase(name, p) for p in self.cfg.patterns)
        )

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        """4 for the int4 tensors, None for passthroughs."""
        return 4 if self.is_quantized(name, tensor) else None

    def fake_quant(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """q·s in w's dtype, shape and device: the exact values ``dequantize`` returns for ``w``."""
        q, scale = quantize_channels(w)
        return dequantize_channels(q, scale).to(w.dtype)

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        """Encode every tensor; arrays are contiguous CPU tensors."""
        return {name: self._quantize_one(name, t) for name, t in state_dict.items()}

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:
        """Decode ``quantize``'s output back to each tensor's dtype and shape."""
        return {name: _dequantize_one(name, qt) for name, qt in tensors.items()}

    def _quantize_one(self, name: str, t: torch.Tensor) -> QTensor:
        if not self.is_quantized(name, t):
            half = _PASSTHROUGH_DTYPES[self.cfg.passthrough_dtype]
            return passthrough(t, keep_fp32=half is torch.float32, half_dtype=half)
        t = t.detach().to("cpu")
        check_finite(name, t)
        q, scale = quantize_channels(t)
        meta = {"dtype": dtype_name(t.dtype), "shape": list(t.shape)}
        return QTensor("int4_channel", {"codes": pack_nibbles(q), "scale": scale.contiguous()}, meta)


def _dequantize_one(name: str, qt: QTensor) -> torch.Tensor:
    dtype = restore_dtype(name, qt)
    if qt.kind == "passthrough":
        return decode_passthrough(name, qt)
    if qt.kind != "int4_channel":
        raise ArtifactError(
            f"int4 quantizer cannot decode tensor {name}: unknown kind {qt.kind!r} "
            "(expected int4_channel or passthrough)"
        )
    shape = qt.meta.get("shape")
    if not isinstance(shape, list) or len(shape) < 2 or not all(type(d) is int and d >= 0 for d in shape):
        raise ArtifactError(
            f"tensor {name}: meta.shape must be a list of >= 2 non-negative integers, got {shape!r}"
        )
    codes, scale = get_array(name, qt, "codes"), get_array(name, qt, "scale")
    if scale.dtype != torch.float32 or tuple(scale.shape) != (shape[0],):
        raise ArtifactError(
            f"tensor {name}: int4_channel needs {shape[0]} fp32 scales, "
            f"got {list(scale.shape)} {dtype_name(scale.dtype)}"
        )
    count = 1
    for d in shape:
        count *= d
    try:
        q = unpack_nibbles(codes, count)
    except ValueError as exc:
        raise ArtifactError(f"tensor {name}: {exc}") from None
    return dequantize_channels(q.reshape(shape), scale).to(dtype).contiguous()


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``int4`` as a quantizer."""
    registry.register("quantizer", "int4", Int4Config)
