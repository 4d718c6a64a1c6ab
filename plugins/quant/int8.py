"""The naive baseline's int8 export (format ``int8_clean_per_row_v1``), reproduced exactly.

Source: `quantize_state_dict_int8` / `dequantize_state_dict_int8` in upstream
`train_gpt.py` (openai/parameter-golf, HEAD); summarised in TECHNIQUES.md §6 ("B int8") and
PROTOCOL.md §4.1. Routing per tensor:

* non-float: stored unchanged (``passthrough``);
* float with at most 65,536 elements: stored as float (``passthrough``): fp32 when the name
  matches a control pattern, fp16 when it was fp32/bf16, otherwise in its own dtype;
* larger 2-D float: per-row symmetric int8 (``int8_row``), clip c_r = quantile(|W_r|,
  0.9999984), step Δ_r = max(c_r/127, 1/127) stored fp16;
* other larger float: one fp32 step for the whole tensor (``int8_tensor``). As upstream,
  that step has no 1/127 floor: it is c/127, or 1.0 when c == 0.

The original dtype is recorded in ``meta["dtype"]`` and restored by ``dequantize``; the
shape is the stored array's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.components import BASELINE_CONTROL_PATTERNS, QTensor, is_control_tensor
from harness.errors import ArtifactError, ConfigError, TrainingDiverged
from harness.hookspecs import hookimpl
from harness.registry import Registry

QMAX = 127  # symmetric range [-127, 127]; -128 is never used

# dtype names a manifest may ask `dequantize` to restore (never getattr(torch, <untrusted>)).
_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}


@dataclass(frozen=True, kw_only=True)
class Int8Config:
    """Settings of the baseline int8 export (upstream constants by default)."""

    passthrough_max_numel: int = 65_536
    """Float tensors with at most this many elements are kept as float (upstream INT8_KEEP_FLOAT_MAX_NUMEL)."""
    clip_quantile: float = 0.9999984
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


def linear_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(x, q, dim=-1)`` (linear interpolation) without its 2**24 size limit.

    Same arithmetic as ATen's quantile: rank = q * (n - 1) in x's dtype, the two order
    statistics around it (found with ``kthvalue`` instead of a full sort), then ``lerp``;
    a NaN anywhere in a row makes that row's result NaN.
    """
    n = x.shape[-1]
    rank = torch.tensor(q, dtype=x.dtype) * (n - 1)
    below_idx = int(rank)  # truncation, as ATen's cast to long
    above_idx = int(torch.ceil(rank))
    below = torch.kthvalue(x, below_idx + 1, dim=-1).values
    above = below if above_idx == below_idx else torch.kthvalue(x, above_idx + 1, dim=-1).values
    out = torch.lerp(below, above, rank - below_idx)
    return out.masked_fill(torch.isnan(x).any(dim=-1), float("nan"))


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

    def _quantize_one(self, name: str, tensor: torch.Tensor) -> QTensor:
        t = tensor.detach().to("cpu").contiguous()
        meta = {"dtype": _dtype_name(t.dtype)}
        if not t.is_floating_point():
            return QTensor("passthrough", {"w": t}, meta)
        if t.numel() <= self.cfg.passthrough_max_numel:
            return QTensor("passthrough", {"w": self._keep_float(name, t)}, meta)
        t32 = t.float()
        if t32.ndim == 2:
            q, scale = _quantize_rows(name, t32, self.cfg.clip_quantile)
            return QTensor("int8_row", {"q": q, "scale": scale}, meta)
        q, scale = _quantize_whole(name, t32, self.cfg.clip_quantile)
        return QTensor("int8_tensor", {"q": q, "scale": scale}, meta)

    def _keep_float(self, name: str, t: torch.Tensor) -> torch.Tensor:
        # Control tensors (gains, mixes) are few and sensitive, so they keep full precision.
        if is_control_tensor(name, self.cfg.control_patterns):
            return t.float().contiguous()
        # Upstream halves only fp32/bf16; fp16 and fp64 are stored as they are.
        if t.dtype in (torch.float32, torch.bfloat16):
            return t.to(torch.float16).contiguous()
        return t


def _quantize_rows(name: str, w: torch.Tensor, clip_q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) fp32 -> (rows, cols) int8 and (rows,) fp16 steps."""
    clip = linear_quantile(w.abs(), clip_q)  # (rows,)
    _check_finite(name, clip)
    # The floor keeps rows of tiny weights from getting a tiny step (they round to 0 instead).
    step = (clip / QMAX).clamp_min(1.0 / QMAX)  # (rows,) fp32
    clipped = w.clamp(-clip[:, None], clip[:, None])
    # q uses the fp32 step; only the stored step is rounded to fp16 (as upstream).
    q = torch.round(clipped / step[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q.contiguous(), step.to(torch.float16).contiguous()


def _quantize_whole(name: str, w: torch.Tensor, clip_q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Any-shape fp32 -> same-shape int8 and a 0-d fp32 step."""
    clip_t = linear_quantile(w.abs().reshape(-1), clip_q)
    _check_finite(name, clip_t)
    clip = float(clip_t)
    step = torch.tensor(clip / QMAX if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.round(w.clamp(-clip, clip) / step).clamp(-QMAX, QMAX).to(torch.int8)
    return q.contiguous(), step


def _check_finite(name: str, clip: torch.Tensor) -> None:
    if not bool(torch.isfinite(clip).all()):
        raise TrainingDiverged(f"cannot quantize {name}: it holds NaN or infinite values")


def _dequantize_one(name: str, qt: QTensor) -> torch.Tensor:
    dtype = _restore_dtype(name, qt)
    if qt.kind == "passthrough":
        return _array(name, qt, "w").to(dtype).contiguous()
    if qt.kind not in ("int8_row", "int8_tensor"):
        raise ArtifactError(f"int8 quantizer cannot decode tensor {name}: unknown kind {qt.kind!r}")
    q, step = _array(name, qt, "q"), _array(name, qt, "scale")
    if q.dtype != torch.int8:
        raise ArtifactError(f"tensor {name}: q must be int8, got {_dtype_name(q.dtype)}")
    if qt.kind == "int8_row":
        if q.ndim != 2 or tuple(step.shape) != (q.shape[0],):
            raise ArtifactError(
                f"tensor {name}: int8_row needs 2-D q and one step per row, "
                f"got q {list(q.shape)} and scale {list(step.shape)}"
            )
        return (q.float() * step.float()[:, None]).to(dtype).contiguous()
    if step.numel() != 1:
        raise ArtifactError(f"tensor {name}: int8_tensor needs one scale, got shape {list(step.shape)}")
    return (q.float() * float(step)).to(dtype).contiguous()


def _array(name: str, qt: QTensor, key: str) -> torch.Tensor:
    try:
        return qt.arrays[key]
    except KeyError:
        raise ArtifactError(f"tensor {name} ({qt.kind}) lacks its {key!r} array") from None


def _restore_dtype(name: str, qt: QTensor) -> torch.dtype:
    dtype = _DTYPES.get(qt.meta.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise ArtifactError(
            f"tensor {name}: meta.dtype {qt.meta.get('dtype')!r} is not one of {', '.join(_DTYPES)}"
        )
    return dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``int8`` as a quantizer."""
    registry.register("quantizer", "int8", Int8Config)
