"""Arithmetic shared by the quantizer plugins (which may not import each other).

What lives here, and where each piece comes from (docs/techniques.md §8):

* ``linear_quantile``: ``torch.quantile`` without its 2**24-element limit; the baseline
  int8 export's clip statistic (upstream baseline `train_gpt.py`, ``INT8_CLIP_Q``).
* ``packed_nbytes``: the size of a bit-packed stream of intN codes (P1573's layout). The
  packing itself (``pack_bits`` / ``unpack_bits``, kind ``intn_packed``) is
  `harness.api.bit_packing`, imported by name (`BIT_PACKING_MODULE`) so that only quantizer
  configs that pack (and name it in ``modules_by_name()``) ship it.
* ``quantize_rows``: symmetric per-row quantization in the three variants of the records,
  selected by keywords: the baseline int8 (clip to a row quantile, step floor 1/127, q
  rounded with the fp32 step: ``baseline_rounding=True``), T1's intN (row max, no floor, q
  rounded with the stored fp16 step, range [-(c+1), c]: ``allow_extra_negative=True``) and
  P1573's "GPTQ-lite" (several candidate percentiles, floor 1/15, the one with the lowest
  whole-tensor MSE wins).
* ``encode_int8`` / ``decode_int8``: the baseline's complete int8 encoding (per row for
  2-D tensors, one fp32 step otherwise), used by the ``int8`` and ``mixed`` plugins.
* ``encode_intn`` / ``decode_intn``: intN tensors as ``QTensor`` (one value per int8
  byte, T1's layout, or bit-packed, P1573's, through `harness.api.bit_packing`), used by the
  ``intn`` and ``mixed`` plugins; ``store_intn`` stores codes chosen elsewhere (the ``gptq``
  plugin) in the same kinds, and ``decode_intn_or_passthrough`` reads everything ``intn`` and
  ``gptq`` write.
* ``passthrough`` / ``decode_passthrough`` and the dtype, array and finiteness checks.

Longer than 400 lines because it holds all the integer arithmetic the quantizer plugins share
(per-row and per-channel scales, nibbles, clip search, dtype images); split by topic it would
scatter one numeric contract that the artifact, entropy report and late QAT must agree on. The
bit packing is the exception: a module apart only so that runs that never pack do not ship it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from harness.api.by_name import import_by_name
from harness.api.errors import ArtifactError, TrainingDiverged
from harness.api.protocols import QTensor

# dtype names a manifest may ask a decoder to restore (never getattr(torch, <untrusted>)).
DTYPES: dict[str, torch.dtype] = {
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

INT8_CLIP_Q = 0.9999984  # upstream baseline INT8_CLIP_PERCENTILE / 100
FP16_TINY = 2.0**-14  # smallest normal fp16 (torch.finfo(torch.float16).tiny)
BIT_PACKING_MODULE = "harness.api.bit_packing"
"""The ``intn_packed`` kind, imported by name: a quantizer config that packs names it in
``modules_by_name()`` (`harness.api.by_name`)."""


# ---------------------------------------------------------------- small shared checks


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"`` (the form stored in ``QTensor.meta``, artifact
    manifests and checkpoint headers)."""
    return str(dtype).removeprefix("torch.")


def host_bytes(t: torch.Tensor) -> np.ndarray:
    """A tensor's bytes in host order as a flat uint8 array (bf16 and bool through a uint8
    view): the image artifacts and checkpoints store, and the entropy report reads."""
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()


def restore_dtype(name: str, qt: QTensor) -> torch.dtype:
    """The original dtype recorded in ``qt.meta["dtype"]``; ArtifactError if unknown."""
    dtype = DTYPES.get(qt.meta.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise ArtifactError(
            f"tensor {name}: meta.dtype {qt.meta.get('dtype')!r} is not one of {', '.join(DTYPES)}"
        )
    return dtype


def get_array(name: str, qt: QTensor, key: str) -> torch.Tensor:
    """``qt.arrays[key]``; ArtifactError naming the tensor when it is missing."""
    try:
        return qt.arrays[key]
    except KeyError:
        raise ArtifactError(f"tensor {name} ({qt.kind}) lacks its {key!r} array") from None


def check_finite(name: str, values: torch.Tensor) -> None:
    """TrainingDiverged naming ``name`` if ``values`` (clip statistics) hold NaN or inf."""
    if not bool(torch.isfinite(values).all()):
        raise TrainingDiverged(f"cannot quantize {name}: it holds NaN or infinite values")


def clip_level(bits: int) -> int:
    """Largest symmetric level of a signed ``bits``-bit code: 15 for int5, 31 for int6, 127 for int8."""
    return 2 ** (bits - 1) - 1


def check_bits(bits: int, low: int, where: str) -> None:
    """ValueError naming ``where`` unless ``bits`` is an integer in ``low``..8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= 8:
        raise ValueError(f"{where}: bits must be an integer in {low}..8, got {bits!r}")


# ---------------------------------------------------------------- quantile


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


# ---------------------------------------------------------------- bit-packed size


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes `harness.api.bit_packing.pack_bits` produces for ``count`` values of ``bits`` bits:
    ceil(count*bits/8)."""
    return (count * bits + 7) // 8


# ---------------------------------------------------------------- per-row quantization


def quantize_rows(
    w: torch.Tensor,
    bits: int,
    *,
    clip_percentiles: tuple[float, ...] = (1.0,),
    scale_floor: float | None = None,
    allow_extra_negative: bool = False,
    baseline_rounding: bool = False,
    name: str = "tensor",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Symmetric per-row quantization of a 2-D float tensor: (q int8, step fp16 [rows], percentile).

    For each candidate p: c_r = quantile(|W_r|, p) (p = 1.0 is the row max), Δ_r = c_r / c
    with c = 2**(bits-1) - 1, raised to ``scale_floor`` when given; q = clamp(round(W/Δ),
    lo, c) with lo = -(c+1) if ``allow_extra_negative`` else -c. Δ is stored fp16 (never
    below the smallest normal fp16, so an all-zero row dequantizes to exact zeros). With
    several candidates, the one whose dequantized tensor (with the fp16 Δ) has the lowest
    whole-tensor MSE wins; ties keep the earlier one (P1573's strict ``<``).

    ``baseline_rounding`` reproduces the baseline int8 export instead: W is clipped to
    ±c_r first and divided by the fp32 Δ; only the stored Δ is rounded to fp16.
    ``name`` only labels the TrainingDiverged raised for NaN or infinite rows.
    """
    check_bits(bits, 2, "quantize_rows")
    if w.ndim != 2 or not w.is_floating_point():
        raise ValueError(
            f"quantize_rows: {name} must be a 2-D float tensor, got {w.ndim}-D {dtype_name(w.dtype)}"
        )
    if not clip_percentiles or not all(0.0 < p <= 1.0 for p in clip_percentiles):
        raise ValueError(
            f"quantize_rows: clip_percentiles must be non-empty values in (0, 1], got {clip_percentiles!r}"
        )
    w = w.detach().float()
    absw = w.abs()
    best: tuple[float, torch.Tensor, torch.Tensor, float] | None = None
    for p in clip_percentiles:
        clip = _row_clip(absw, p)  # (rows,)
        check_finite(name, clip)
        q, step = _round_rows(w, clip, bits, scale_floor, allow_extra_negative, baseline_rounding)
        if len(clip_percentiles) == 1:
            return q, step, p
        err = (w - dequantize_rows(q, step)).square().mean().item()
        if best is None or err < best[0]:
            best = (err, q, step, p)
    assert best is not None
    return best[1], best[2], best[3]


def _row_clip(absw: torch.Tensor, p: float) -> torch.Tensor:
    if absw.shape[1] == 0:
        return torch.zeros(absw.shape[0], dtype=absw.dtype)
    # The max is what linear_quantile returns at p = 1, without two kthvalue passes.
    return absw.amax(dim=1) if p == 1.0 else linear_quantile(absw, p)


def _round_rows(
    w: torch.Tensor,
    clip: torch.Tensor,
    bits: int,
    scale_floor: float | None,
    allow_extra_negative: bool,
    baseline_rounding: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One candidate: (rows, cols) fp32 and (rows,) clip values -> int8 q and fp16 steps."""
    c = clip_level(bits)
    lo = -(c + 1) if allow_extra_negative else -c
    step = clip / c
    if scale_floor is not None:
        # A floor keeps rows of tiny weights from getting a tiny step (they round to 0).
        step = step.clamp_min(scale_floor)
    if baseline_rounding:
        stored, divisor = step.to(torch.float16), step
        x = w.clamp(-clip[:, None], clip[:, None])
    else:
        # T1 and P1573 round with the fp16 step they store, so q*Δ is exactly what they decode.
        stored = step.to(torch.float16).clamp_min(FP16_TINY)
        divisor, x = stored.float(), w
    divisor = torch.where(divisor > 0, divisor, torch.ones_like(divisor))  # zero rows: q = 0
    q = torch.round(x / divisor[:, None]).clamp(lo, c).to(torch.int8)
    return q.contiguous(), stored.contiguous()


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(rows, cols) integer codes times (rows,) steps -> fp32 (rows, cols)."""
    return q.float() * scale.float()[:, None]


# ---------------------------------------------------------------- float passthrough


def passthrough(t: torch.Tensor, *, keep_fp32: bool, half_dtype: torch.dtype = torch.float16) -> QTensor:
    """Store ``t`` unquantized (kind ``passthrough``), recording its dtype in the meta.

    Non-float tensors are stored as they are. Floats become fp32 when ``keep_fp32``;
    otherwise fp32 and bf16 become ``half_dtype`` and other float dtypes (fp16, fp64) are
    kept, as the baseline int8 export does.
    """
    t = t.detach().to("cpu").contiguous()
    meta = {"dtype": dtype_name(t.dtype)}
    if not t.is_floating_point():
        return QTensor("passthrough", {"w": t}, meta)
    if keep_fp32:
        return QTensor("passthrough", {"w": t.float().contiguous()}, meta)
    if t.dtype in (torch.float32, torch.bfloat16):
        return QTensor("passthrough", {"w": t.to(half_dtype).contiguous()}, meta)
    return QTensor("passthrough", {"w": t}, meta)


def decode_passthrough(name: str, qt: QTensor) -> torch.Tensor:
    """The stored tensor cast back to its original dtype."""
    return get_array(name, qt, "w").to(restore_dtype(name, qt)).contiguous()


# ---------------------------------------------------------------- baseline int8 encoding


def encode_int8(name: str, t: torch.Tensor, clip_quantile: float = INT8_CLIP_Q) -> QTensor:
    """The baseline's int8 encoding of one float tensor (docs/techniques.md §8.2).

    2-D: per row, c_r = quantile(|W_r|, clip_quantile), Δ_r = max(c_r/127, 1/127) stored
    fp16 (kind ``int8_row``). Other shapes: one fp32 step c/127 (1.0 when c == 0), no floor
    (kind ``int8_tensor``).
    """
    t = t.detach().to("cpu")
    meta = {"dtype": dtype_name(t.dtype)}
    t32 = t.float().contiguous()
    if t32.ndim == 2:
        q, scale, _ = quantize_rows(
            t32,
            8,
            clip_percentiles=(clip_quantile,),
            scale_floor=1.0 / 127,
            baseline_rounding=True,
            name=name,
        )
        return QTensor("int8_row", {"q": q, "scale": scale}, meta)
    clip_t = linear_quantile(t32.abs().reshape(-1), clip_quantile)
    check_finite(name, clip_t)
    clip = float(clip_t)
    step = torch.tensor(clip / 127 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.round(t32.clamp(-clip, clip) / step).clamp(-127, 127).to(torch.int8)
    return QTensor("int8_tensor", {"q": q.contiguous(), "scale": step}, meta)


def decode_int8(name: str, qt: QTensor) -> torch.Tensor:
    """Decode ``int8_row`` / ``int8_tensor``: q * Δ in fp32, cast to the original dtype."""
    dtype = restore_dtype(name, qt)
    q, step = get_array(name, qt, "q"), get_array(name, qt, "scale")
    if q.dtype != torch.int8:
        raise ArtifactError(f"tensor {name}: q must be int8, got {dtype_name(q.dtype)}")
    if qt.kind == "int8_row":
        if q.ndim != 2 or tuple(step.shape) != (q.shape[0],):
            raise ArtifactError(
                f"tensor {name}: int8_row needs 2-D q and one step per row, "
                f"got q {list(q.shape)} and scale {list(step.shape)}"
            )
        return dequantize_rows(q, step).to(dtype).contiguous()
    if step.numel() != 1:
        raise ArtifactError(f"tensor {name}: int8_tensor needs one scale, got shape {list(step.shape)}")
    return (q.float() * float(step)).to(dtype).contiguous()


# ---------------------------------------------------------------- intN encoding


def encode_intn(
    name: str,
    t: torch.Tensor,
    bits: int,
    *,
    packed: bool,
    clip_percentiles: tuple[float, ...] = (1.0,),
    scale_floor: float | None = None,
    allow_extra_negative: bool = False,
    baseline_rounding: bool = False,
) -> QTensor:
    """One float tensor -> intN ``QTensor`` (``quantize_rows`` settings as keywords).

    2-D tensors get one step per row; other shapes one step for the whole tensor, from its
    max (both records use the max there, whatever their row percentiles). Kind ``intn``
    stores q as int8 in the tensor's shape, one value per byte (T1's layout); kind
    ``intn_packed`` stores q + offset (offset = -lowest level) as a ``pack_bits`` stream
    (P1573's layout, `harness.api.bit_packing`). Meta: dtype, bits, shape, and offset when packed.
    """
    t = t.detach().to("cpu")
    shape = list(t.shape)
    t32 = t.float()
    rows = t32 if t32.ndim == 2 else t32.reshape(1, -1)
    q, scale, _ = quantize_rows(
        rows,
        bits,
        clip_percentiles=clip_percentiles if t32.ndim == 2 else (1.0,),
        scale_floor=scale_floor,
        allow_extra_negative=allow_extra_negative,
        baseline_rounding=baseline_rounding,
        name=name,
    )
    return store_intn(
        q, scale, bits, dtype=t.dtype, shape=shape, packed=packed, allow_extra_negative=allow_extra_negative
    )


def store_intn(
    q: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    *,
    dtype: torch.dtype,
    shape: list[int],
    packed: bool,
    allow_extra_negative: bool = False,
) -> QTensor:
    """Signed codes (rows, cols) and fp16 steps (rows,) as the ``QTensor`` `decode_intn` reads.

    Kind ``intn`` keeps q as int8 in the tensor's ``shape``; ``intn_packed`` stores q + offset
    (offset = -lowest level: c + 1 with ``allow_extra_negative``, else c) as a ``pack_bits``
    stream. Shared by `encode_intn` and quantizers that choose their codes otherwise (GPTQ).
    """
    meta: dict = {"dtype": dtype_name(dtype), "bits": bits, "shape": shape}
    if not packed:
        return QTensor("intn", {"q": q.reshape(shape).contiguous(), "scale": scale}, meta)
    packing = import_by_name(BIT_PACKING_MODULE)
    return packing.store_packed(q, scale, bits, meta, allow_extra_negative=allow_extra_negative)


def decode_intn(name: str, qt: QTensor) -> torch.Tensor:
    """Decode ``intn`` / ``intn_packed`` back to the original shape and dtype."""
    dtype = restore_dtype(name, qt)
    bits, shape = _meta_bits(name, qt), _meta_shape(name, qt)
    numel = math.prod(shape)
    rows = shape[0] if len(shape) == 2 else 1
    scale = get_array(name, qt, "scale")
    if scale.dtype != torch.float16 or tuple(scale.shape) != (rows,):
        raise ArtifactError(
            f"tensor {name}: {qt.kind} needs {rows} fp16 steps, "
            f"got scale {list(scale.shape)} {dtype_name(scale.dtype)}"
        )
    q = _codes(name, qt, bits, shape, numel)
    cols = numel // rows if rows else 0
    return dequantize_rows(q.reshape(rows, cols), scale).reshape(shape).to(dtype).contiguous()


def decode_intn_or_passthrough(name: str, qt: QTensor, quantizer: str) -> torch.Tensor:
    """Decode what the ``intn`` and ``gptq`` quantizers write: ``passthrough``, ``intn`` or
    ``intn_packed``; ArtifactError naming ``quantizer`` for any other kind."""
    if qt.kind == "passthrough":
        return decode_passthrough(name, qt)
    if qt.kind in ("intn", "intn_packed"):
        return decode_intn(name, qt)
    raise ArtifactError(f"{quantizer} quantizer cannot decode tensor {name}: unknown kind {qt.kind!r}")


def _codes(name: str, qt: QTensor, bits: int, shape: list[int], numel: int) -> torch.Tensor:
    """The signed integer codes of an intN tensor, flattened."""
    q = get_array(name, qt, "q")
    if qt.kind == "intn":
        if q.dtype != torch.int8 or list(q.shape) != shape:
            raise ArtifactError(
                f"tensor {name}: intn needs int8 q of shape {shape}, "
                f"got {list(q.shape)} {dtype_name(q.dtype)}"
            )
        return q.reshape(-1)
    if qt.kind != "intn_packed":
        raise ArtifactError(f"tensor {name}: {qt.kind!r} is not an intN kind (intn, intn_packed)")
    return import_by_name(BIT_PACKING_MODULE).packed_codes(name, qt, q, bits, numel)


def _meta_bits(name: str, qt: QTensor) -> int:
    bits = qt.meta.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ArtifactError(f"tensor {name}: meta.bits must be an integer in 2..8, got {bits!r}")
    return bits


def _meta_shape(name: str, qt: QTensor) -> list[int]:
    shape = qt.meta.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ArtifactError(f"tensor {name}: meta.shape must be a list of integers >= 0, got {shape!r}")
    return shape


# ---- per-output-channel int4 (CLMConvMoE, docs/techniques.md §8.5), shared by the int4 quantizer and
# the .clm exporter so the two can never disagree on a code.

INT4_LEVELS = 7
"""Largest code magnitude: q ∈ [-7, 7] (−8 is never produced: 15 levels, as the reference)."""
INT4_NIBBLE_OFFSET = 8
"""Stored nibble = q + 8 (so 8 means 0 and nibble 0, i.e. q = -8, never occurs)."""


def quantize_channels(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Cout, ...) float -> (q int8 of w's shape in -7..7, scale fp32 (Cout,)), on w's device.

    No host sync: callable inside a compiled training step.
    """
    rows = w.detach().float().reshape(w.shape[0], -1)
    amax = rows.abs().amax(dim=1) if rows.shape[1] else rows.new_zeros(rows.shape[0])
    scale = torch.where(amax > 0, amax / INT4_LEVELS, torch.ones_like(amax))  # hexa: s = 1 for a zero channel
    q = torch.round(rows / scale[:, None]).clamp(-INT4_LEVELS, INT4_LEVELS)
    return q.to(torch.int8).reshape(w.shape), scale


def dequantize_channels(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q·s in fp32, q of shape (Cout, ...) and scale (Cout,)."""
    rows = q.reshape(q.shape[0], -1).float() * scale.float()[:, None]
    return rows.reshape(q.shape)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Codes in -7..7 (read flattened) -> uint8 [ceil(n/2)]: element 2i low nibble, 2i+1 high,
    nibble q+8, odd tail padded 8."""
    flat = q.detach().to("cpu").reshape(-1).to(torch.int16)
    if bool(((flat < -INT4_LEVELS) | (flat > INT4_LEVELS)).any()):
        raise ValueError(
            f"pack_nibbles: codes must lie in -{INT4_LEVELS}..{INT4_LEVELS}, "
            f"got {int(flat.min())}..{int(flat.max())}"
        )
    nib = (flat + INT4_NIBBLE_OFFSET).to(torch.uint8)
    if nib.numel() % 2:
        nib = torch.cat([nib, torch.tensor([INT4_NIBBLE_OFFSET], dtype=torch.uint8)])
    pairs = nib.view(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).contiguous()


def unpack_nibbles(codes: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of ``pack_nibbles``: the first ``count`` codes as int8; ValueError on a -8 code."""
    if codes.dtype != torch.uint8 or codes.ndim != 1 or codes.numel() != (count + 1) // 2:
        raise ValueError(
            f"unpack_nibbles: {count} codes need {(count + 1) // 2} uint8 bytes, "
            f"got {list(codes.shape)} {dtype_name(codes.dtype)}"
        )
    nib = torch.stack([codes & 0xF, codes >> 4], dim=1).reshape(-1)[:count]
    if bool((nib == 0).any()):
        raise ValueError(
            f"unpack_nibbles: code -8 (nibble 0) at index {int((nib == 0).nonzero()[0])}; "
            "only -7..7 are valid"
        )
    return (nib.to(torch.int16) - INT4_NIBBLE_OFFSET).to(torch.int8)
