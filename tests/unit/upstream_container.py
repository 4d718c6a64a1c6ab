"""Upstream's baseline artifact for a model our ``int8`` quantizer exported: the yardstick
that our container must not be larger than.

Upstream's baseline (root ``train_gpt.py`` of openai/parameter-golf; docs/formats.md §2)
gathers its int8 export into one dict and ships ``zlib.compress(torch.save(dict), level=9)``.
The dict, as that script builds it: ``__quant_format__`` = ``int8_clean_per_row_v1``; then
``quantized`` (name -> int8 codes), ``scales`` (name -> fp16 row steps, or one fp32 step),
``dtypes`` (name -> original float dtype), ``passthrough`` (name -> kept tensor), each in
state-dict order; then ``qmeta`` (name -> ``{"scheme": "per_row", "axis": 0}`` for per-row
tensors) and ``passthrough_orig_dtypes`` (name -> original dtype of a tensor kept as fp16),
each present only when not empty. Our ``int8`` quantizer's codes and steps are upstream's
(`plugins/quant/int8.py`), so the same dict can be laid out from its `QTensor` output.

It lives with the tests (and `benchmarks/container_vs_upstream.py` imports it) because
``torch.save`` has no place under harness/ (tests/unit/test_checkpoint.py); nothing here reads a
pickle.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Mapping

import torch

from harness.api.errors import PgolfError
from harness.api.protocols import QTensor

UPSTREAM_FORMAT = "int8_clean_per_row_v1"


def upstream_export_dict(state_dict: Mapping[str, torch.Tensor], qtensors: Mapping[str, QTensor]) -> dict:
    """Upstream's export dict for ``qtensors`` (our ``int8`` output for ``state_dict``),
    in ``state_dict``'s order."""
    quantized, scales, dtypes, passthrough, qmeta, orig_dtypes = {}, {}, {}, {}, {}, {}
    for name, tensor in state_dict.items():
        qt = qtensors.get(name)
        if qt is None:
            raise PgolfError(f"upstream container: tensor {name!r} of the state dict was not quantized")
        if qt.kind in ("int8_row", "int8_tensor"):
            quantized[name], scales[name] = qt.arrays["q"], qt.arrays["scale"]
            dtypes[name] = str(tensor.dtype).removeprefix("torch.")
            if qt.kind == "int8_row":
                qmeta[name] = {"scheme": "per_row", "axis": 0}
        elif qt.kind == "passthrough":
            kept = qt.arrays["w"]
            passthrough[name] = kept
            if kept.dtype == torch.float16 and tensor.dtype in (torch.float32, torch.bfloat16):
                orig_dtypes[name] = str(tensor.dtype).removeprefix("torch.")
        else:
            raise PgolfError(
                f"upstream container: tensor {name!r} has kind {qt.kind!r}; upstream's int8 export "
                "only has int8_row, int8_tensor and passthrough"
            )
    obj: dict = {
        "__quant_format__": UPSTREAM_FORMAT,
        "quantized": quantized,
        "scales": scales,
        "dtypes": dtypes,
        "passthrough": passthrough,
    }
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    return obj


def upstream_container_bytes(state_dict: Mapping[str, torch.Tensor], qtensors: Mapping[str, QTensor]) -> int:
    """Size of upstream's ``final_model.int8.ptz`` for this model: zlib-9 of ``torch.save``."""
    buf = io.BytesIO()
    torch.save(upstream_export_dict(state_dict, qtensors), buf)
    return len(zlib.compress(buf.getvalue(), level=9))


def trained_like(state: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """``state`` with seeded trained-like values, so int8 codes spread over many levels as trained
    ones do (an init's zero matrices would flatter every container): matrices N(0, 0.02), other
    float tensors their value plus N(0, 0.01); non-float tensors as they are."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if t.is_floating_point():
            noise = torch.randn(t.shape, generator=g)
            t = noise * 0.02 if t.ndim == 2 else t + 0.01 * noise
        out[name] = t
    return out
