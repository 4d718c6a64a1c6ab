"""The naive baseline's int8 export (format ``int8_clean_per_row_v1``), reproduced exactly.

Source: `quantize_state_dict_int8` / `dequantize_state_dict_int8` in upstream
`train_gpt.py` (openai/parameter-golf, HEAD); summarised in docs/techniques.md §8.2 and
docs/protocol.md §4.1. Routing per tensor:

* non-float: stored unchanged (``passthrough``);
* float with at most 65,536 elements: stored as float (``passthrough``): fp32 when the name
  matches a control pattern, fp16 when it was fp32/bf16, otherwise in its own dtype;
* larger 2-D float: per-row symmetric int8 (``int8_row``), clip c_r = quantile(|W_r|,
  0.9999984), step Δ_r = max(c_r/127, 1/127) stored fp16;
* other larger float: one fp32 step for the whole tensor (``int8_tensor``). As upstream,
  that step has no 1/127 floor: it is c/127, or 1.0 when c == 0.

The original dtype is recorded in ``meta["dtype"]`` and restored by ``dequantize``; the
shape is the stored array's shape. The arithmetic lives in `harness.api.quantization`, shared with
the ``intn`` and ``mixed`` quantizers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import BASELINE_CONTROL_PATTERNS, QTensor, is_control_tensor
from harness.api.quantization import (
    INT8_CLIP_Q,
    decode_int8,
    decode_passthrough,
    encode_int8,
    passthrough,
    restore_dtype,
)
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class Int8Config:
    """Settings of the baseline int8 export (upstream constants by default)."""

    passthrough_max_numel: int = 65_536
    """Float tensors with at most this many elements are kept as float
    (upstream INT8_KEEP_FLOAT_MAX_NUMEL)."""
    clip_quantile: float = INT8_CLIP_Q
    """Quantile of |w| used as the clip value, per row or per tensor (upstream INT8_CLIP_Q)."""
    control_patterns: tuple[str, ...] = BASELINE_CONTROL_PATTERNS
    """Small float tensors whose name contains one of these substrings are kept fp32, not fp16."""

    def __post_init__(self) -> None:
        n = self.passthrough_max_numel
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"int8 passthrough_max_numel: expected an integer >= 0, got {n!r}")
        q = self.clip_quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
            raise ConfigError(f"int8 clip_quantile: expected a number in (0, 1], got {q!r}")
        pats = self.control_patterns
        if not isinstance(pats, tuple) or not all(isinstance(p, str) and p for p in pats):
            raise ConfigError(f"int8 control_patterns: expected a tuple of non-empty strings, got {pats!r}")

    def build(self) -> Int8Quantizer:
        """The quantizer these settings describe."""
        return Int8Quantizer(self)


class Int8Quantizer:
    """Float state dict <-> baseline int8 tensors (see the module docstring)."""

    name = "int8"

    def __init__(self, cfg: Int8Config) -> None:
        self.cfg = cfg

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        """Encode every tensor of ``state_dict``; arrays are contiguous CPU tensors."""
        return {name: self._quantize_one(name, t) for name, t in state_dict.items()}

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:
        """Decode ``quantize``'s output: q * Δ in fp32, cast to each tensor's original dtype."""
        return {name: _dequantize_one(name, qt) for name, qt in tensors.items()}

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        """8 for every tensor stored as int8 (per row when 2-D), None for passthroughs."""
        return None if self._passes_through(tensor) else 8

    def _passes_through(self, t: torch.Tensor) -> bool:
        return not t.is_floating_point() or t.numel() <= self.cfg.passthrough_max_numel

    def _quantize_one(self, name: str, tensor: torch.Tensor) -> QTensor:
        if self._passes_through(tensor):
            # Control tensors (gains, mixes) are few and sensitive, so they keep full precision.
            return passthrough(tensor, keep_fp32=is_control_tensor(name, self.cfg.control_patterns))
        return encode_int8(name, tensor, self.cfg.clip_quantile)


def _dequantize_one(name: str, qt: QTensor) -> torch.Tensor:
    restore_dtype(name, qt)  # a bad dtype is reported before a bad kind, as it always was
    if qt.kind == "passthrough":
        return decode_passthrough(name, qt)
    if qt.kind not in ("int8_row", "int8_tensor"):
        raise ArtifactError(f"int8 quantizer cannot decode tensor {name}: unknown kind {qt.kind!r}")
    return decode_int8(name, qt)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``int8`` as a quantizer."""
    registry.register("quantizer", "int8", Int8Config)
