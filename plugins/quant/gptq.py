"""Full-Hessian GPTQ with SDClip: int6 block matrices, int8 embeddings, small tensors fp16.

Sources: GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", 2022): quantize a weight matrix one input column at a time and
spread each column's rounding error over the columns not yet quantized, weighted by the
inverse Hessian H = Σ XᵀX of the layer's inputs. The defaults and details are those of the
record of 2026-04-09 (records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_
LegalTTT, ``collect_hessians``, ``gptq_quantize_weight``, ``gptq_mixed_quantize``;
docs/techniques.md §8.6):

* **SDClip**: the clip of row r is k·std(W_r) (unbiased std), the step Δ_r = k·std(W_r)/c with
  c = 2**(bits-1) - 1, stored fp16; codes q ∈ [-c, c]. k = 12.85 for int6 matrices, 20.0 for
  the int8 embedding (``tok_emb``).
* **Hessians**: on rank 0, ``calibrate`` runs 64 training micro-batches through the model
  (`harness.api.protocols.CalibrationData`: train shards only) and sums XᵀX over the inputs X
  of every ``nn.Linear`` whose weight is quantized (a recycled layer adds once per pass), then
  divides by the number of batches. The output head (the tied ``tok_emb`` here) gets the
  final hidden states, ``model.hidden(ids)``, as its input, as the record hooks its final norm.
* **GPTQ** per matrix: columns whose Hessian diagonal is 0 get weight 0 and diagonal 1;
  damping λ = 0.01·mean(diag H) is added to the diagonal; columns are processed in order of
  decreasing diag H (act-order); U = chol(H⁻¹) upper; in blocks of 128 columns, each column
  is rounded with the SDClip step and its error e = (w - qΔ)/U_jj is subtracted from the
  later columns of the block (e·U_j,j:), the block's errors from the rest at the block's end.
* Routing: non-float tensors as they are; floats of at most 65,536 elements as fp16; names
  containing ``tok_emb``: int8; every other float: int6. Codes are stored one per int8 byte
  (kind ``intn``, as the record's int8 ``.q`` tensors; ``packed=True`` bit-packs them).

Deliberate differences from the record:
* A quantized tensor without a Hessian (``quantize`` without ``calibrate``, an input embedding,
  a weight the model never applies as an ``nn.Linear``) is rounded to nearest with its SDClip
  step, which is what GPTQ does with H = I; the record stops with a KeyError instead.
  ``meta["hessian"]`` says which tensors had one.
* Steps below the smallest normal fp16 are raised to it (the record's floor of 1e-10 becomes 0
  in fp16 and divides by zero on an all-constant row).
* Tensors that are not 2-D are quantized as one row (the record has none above 65,536 elements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.api.by_name import CALIBRATION_MODULE
from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import CalibrationData, LanguageModel, QTensor
from harness.api.quantization import (
    BIT_PACKING_MODULE,
    FP16_TINY,
    check_finite,
    clip_level,
    decode_intn_or_passthrough,
    passthrough,
    store_intn,
)
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class GPTQConfig:
    """Settings of the GPTQ + SDClip quantizer (the 2026-04-09 record's values by default)."""

    bits: int = 6
    """Bit width of the block matrices (record MATRIX_BITS=6): codes -c..c, c = 2**(bits-1) - 1."""
    embed_bits: int = 8
    """Bit width of tensors matching ``embed_patterns`` (record EMBED_BITS=8)."""
    clip_sigmas: float = 12.85
    """SDClip k of the block matrices: row clip = k·std(row) (record MATRIX_CLIP_SIGMAS)."""
    embed_clip_sigmas: float = 20.0
    """SDClip k of the embeddings (record EMBED_CLIP_SIGMAS)."""
    embed_patterns: tuple[str, ...] = ("tok_emb",)
    """Name substrings of the tensors quantized at ``embed_bits`` with ``embed_clip_sigmas``."""
    passthrough_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored fp16, unquantized."""
    damping: float = 0.01
    """λ/mean(diag H): the fraction of the mean Hessian diagonal added to the diagonal."""
    block_size: int = 128
    """Columns per GPTQ block (the lazy batch update of the GPTQ paper)."""
    act_order: bool = True
    """Quantize columns in order of decreasing Hessian diagonal (the record does)."""
    calibration_batches: int = 64
    """Training micro-batches run through the model to collect the Hessians (record: 64)."""
    output_head: tuple[str, ...] = ("lm_head.weight", "tok_emb.weight")
    """Parameter names that may be the output head, in order: the first the model has receives
    the Hessian of its final hidden states (the tied ``tok_emb.weight`` for the GPT)."""
    packed: bool = False
    """Bit-pack the codes (``intn_packed``) instead of one int8 per code, as the record stores them."""

    def __post_init__(self) -> None:
        for field in ("bits", "embed_bits"):
            _check_int(field, getattr(self, field), 2, 8)
        for field in ("clip_sigmas", "embed_clip_sigmas"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < math.inf:
                raise ConfigError(f"gptq {field}: expected a positive finite number, got {v!r}")
        d = self.damping
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d < math.inf:
            raise ConfigError(f"gptq damping: expected a positive finite number, got {d!r}")
        _check_int("passthrough_max_numel", self.passthrough_max_numel, 0, None)
        _check_int("block_size", self.block_size, 1, None)
        _check_int("calibration_batches", self.calibration_batches, 0, None)
        for field in ("act_order", "packed"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"gptq {field}: expected true or false, got {getattr(self, field)!r}")
        for field in ("embed_patterns", "output_head"):
            pats = getattr(self, field)
            if not isinstance(pats, tuple) or not all(isinstance(p, str) and p for p in pats):
                raise ConfigError(f"gptq {field}: expected a tuple of non-empty strings, got {pats!r}")

    def modules_by_name(self) -> tuple[str, ...]:
        """What the export imports by name for this quantizer (`harness.api.by_name`): the
        calibration batches and step, always (GPTQ reads Hessians); the bit packing when ``packed``."""
        return (CALIBRATION_MODULE, BIT_PACKING_MODULE) if self.packed else (CALIBRATION_MODULE,)

    def build(self) -> GPTQQuantizer:
        """The quantizer these settings describe (no Hessians until ``calibrate``)."""
        return GPTQQuantizer(self)


def _check_int(field: str, v: object, low: int, high: int | None) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"gptq {field}: expected an integer {span}, got {v!r}")


def sdclip_steps(w: torch.Tensor, clip_sigmas: float, bits: int) -> torch.Tensor:
    """SDClip: Δ_r = k·std(W_r)/c per row of a 2-D tensor, fp16, at least the smallest normal fp16."""
    std = w.float().std(dim=1) if w.shape[1] > 1 else torch.zeros(w.shape[0])
    return (clip_sigmas * std / clip_level(bits)).to(torch.float16).clamp_min(FP16_TINY)


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor | None,
    step: torch.Tensor,
    bits: int,
    *,
    damping: float = 0.01,
    block_size: int = 128,
    act_order: bool = True,
) -> torch.Tensor:
    """Codes (rows, cols) int8 in -c..c of ``w`` with per-row fp16 ``step``s, by GPTQ over ``hessian``
    (cols, cols); rounding to nearest when ``hessian`` is None (GPTQ with H = I)."""
    c = clip_level(bits)
    sf = step.float()[:, None]
    if hessian is None:
        return torch.round(w.float() / sf).clamp(-c, c).to(torch.int8)
    W = w.float().clone()
    H = hessian.float().clone()
    dead = H.diagonal() == 0  # inputs never seen: their weights cannot matter to the outputs
    H.diagonal()[dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damping * H.diagonal().mean())
    cols = W.shape[1]
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W, dtype=torch.int8)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        block, Ub = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        err = torch.zeros_like(block)
        for j in range(i2 - i1):
            q = torch.round(block[:, j : j + 1] / sf).clamp(-c, c)
            Q[:, i1 + j] = q[:, 0].to(torch.int8)
            err[:, j] = (block[:, j] - q[:, 0] * sf[:, 0]) / Ub[j, j]
            block[:, j:] -= err[:, j : j + 1] * Ub[j : j + 1, j:]
        W[:, i2:] -= err @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)].contiguous()


class GPTQQuantizer:
    """Float state dict <-> GPTQ intN / fp16 tensors; `CalibratedQuantizer` (see the module docstring)."""

    def __init__(self, cfg: GPTQConfig) -> None:
        self.cfg = cfg
        self.name = f"int{cfg.bits}gptq"
        self.hessians: dict[str, torch.Tensor] = {}

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        """The bit width ``quantize`` gives ``name``: bits, embed_bits, or None when kept as float."""
        if not tensor.is_floating_point() or tensor.numel() <= self.cfg.passthrough_max_numel:
            return None
        return self.cfg.embed_bits if self._is_embedding(name) else self.cfg.bits

    def _is_embedding(self, name: str) -> bool:
        return any(p in name for p in self.cfg.embed_patterns)

    def calibrate(self, model: LanguageModel, data: CalibrationData) -> str:
        """Sum XᵀX of each quantized linear layer's inputs (and of the head's) over the batches."""
        params = dict(model.named_parameters())
        sums: dict[str, torch.Tensor] = {}
        linears = {
            f"{name}.weight": module
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and self.qat_bits(f"{name}.weight", module.weight) is not None
        }
        handles = [module.register_forward_hook(_accumulator(n, sums)) for n, module in linears.items()]
        # A head applied as a hooked nn.Linear already sees its own input.
        head = next((n for n in self.cfg.output_head if n in params and n not in linears), None)
        if head is not None and self.qat_bits(head, params[head]) is None:
            head = None
        batches = 0
        try:
            for ids in data.batches(self.cfg.calibration_batches):
                hidden = model.hidden(ids)
                if head is not None:
                    _add_gram(sums, head, hidden)
                batches += 1
        finally:
            for handle in handles:
                handle.remove()
        self.hessians = {name: h.cpu() / max(batches, 1) for name, h in sums.items()}
        return f"hessians:{len(self.hessians)} batches:{batches} head:{head}"

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        """Encode every tensor of ``state_dict`` with the Hessians of the last ``calibrate``."""
        return {name: self._quantize_one(name, t) for name, t in state_dict.items()}

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:
        """Decode ``quantize``'s output back to each tensor's shape and dtype."""
        return {name: decode_intn_or_passthrough(name, qt, "gptq") for name, qt in tensors.items()}

    def _quantize_one(self, name: str, t: torch.Tensor) -> QTensor:
        bits = self.qat_bits(name, t)
        if bits is None:
            return passthrough(t, keep_fp32=False)
        cfg = self.cfg
        t = t.detach().to("cpu")
        rows = t.float().reshape(t.shape[0], -1) if t.ndim == 2 else t.float().reshape(1, -1)
        check_finite(name, rows)
        sigmas = cfg.embed_clip_sigmas if self._is_embedding(name) else cfg.clip_sigmas
        hessian = self.hessians.get(name) if t.ndim == 2 else None
        if hessian is not None:
            check_finite(f"{name} (its calibration Hessian)", hessian)
        if hessian is not None and tuple(hessian.shape) != (rows.shape[1],) * 2:
            raise ConfigError(
                f"gptq: the Hessian of {name} is {list(hessian.shape)}, expected "
                f"{[rows.shape[1]] * 2} for a weight of shape {list(t.shape)}"
            )
        step = sdclip_steps(rows, sigmas, bits)
        q = gptq_quantize(
            rows,
            hessian,
            step,
            bits,
            damping=cfg.damping,
            block_size=cfg.block_size,
            act_order=cfg.act_order,
        )
        qt = store_intn(q, step, bits, dtype=t.dtype, shape=list(t.shape), packed=cfg.packed)
        qt.meta["hessian"] = hessian is not None
        return qt


def _accumulator(name: str, sums: dict[str, torch.Tensor]):
    """A forward hook adding the module input's Gram matrix XᵀX to ``sums[name]``."""

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        _add_gram(sums, name, inputs[0])

    return hook


def _add_gram(sums: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> None:
    x = x.detach().float().reshape(-1, x.shape[-1])
    # fp32 sums even under the run's bf16 autocast, as the record collects them.
    with torch.autocast(device_type=x.device.type, enabled=False):
        if name not in sums:
            sums[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
        sums[name].addmm_(x.T, x)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``gptq`` as a quantizer."""
    registry.register("quantizer", "gptq", GPTQConfig)
