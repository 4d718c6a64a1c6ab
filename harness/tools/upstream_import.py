"""``pgolf import``: turn an upstream checkpoint into a pgolf artifact for a named submission.

Upstream scripts leave ``final_model.pt`` (``torch.save`` of the float state dict) and, in
the baseline, ``final_model.int8.ptz`` (zlib over ``torch.save`` of the int8 export, format
``int8_clean_per_row_v1`` of upstream ``quantize_state_dict_int8``). Both are read by
`harness.tools.upstream_pickle`, which never runs pickle code, and written as our artifact
(docs/formats.md §2) so that ``pgolf rescore`` scores them with the harness's own evaluation.

Mapping of the int8 export (upstream keys -> our ``int8`` quantizer's tensor kinds, which
decode with the same arithmetic as upstream ``dequantize_state_dict_int8``):

* ``quantized[name]`` with a 1-D ``scales[name]`` (``qmeta`` scheme ``per_row``) -> ``int8_row``
  {q, scale}; with a 0-D scale -> ``int8_tensor``; original dtype from ``dtypes[name]``;
* ``passthrough[name]`` -> ``passthrough`` {w}; original dtype from
  ``passthrough_orig_dtypes[name]`` when present, else the stored dtype.

A float state dict becomes ``passthrough`` tensors in their own dtype, so the weights load
bit for bit. Names must be exactly those of the submission's model (the baseline's are); the
model's arch config is the submission's plus, by default, the ``upstream_numerics`` component
(`plugins.arch.upstream_numerics`), so the imported weights are scored with upstream's dtypes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

import harness
from harness.api.errors import ArtifactError
from harness.api.protocols import QTensor
from harness.api.quantization import dtype_name
from harness.pipeline.artifact import DTYPES, ArtifactInfo, config_to_json, write_artifact
from harness.pipeline.plugin_manager import full_manager
from harness.pipeline.submission import build_submission_config
from harness.tools.upstream_pickle import read_torch_file

INT8_FORMAT = "int8_clean_per_row_v1"
MAX_INPUT_BYTES = 2**31


def upstream_qtensors(obj: Any, where: str) -> tuple[dict[str, QTensor], str]:
    """(tensors for our ``int8`` quantizer, format name) of an upstream checkpoint object."""
    if isinstance(obj, dict) and "__quant_format__" in obj:
        if obj["__quant_format__"] != INT8_FORMAT:
            raise ArtifactError(
                f"{where}: quant format {obj['__quant_format__']!r} is not supported "
                f"(supported: {INT8_FORMAT!r} and plain float state dicts)"
            )
        return _int8_export(obj, where), INT8_FORMAT
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): _passthrough(str(k), v, v.dtype, where) for k, v in obj.items()}, "state_dict"
    raise ArtifactError(
        f"{where}: holds neither an {INT8_FORMAT!r} export nor a state dict of tensors "
        f"(top-level {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else "")
        + ")"
    )


def _int8_export(obj: dict, where: str) -> dict[str, QTensor]:
    quantized = _mapping(obj, "quantized", where)
    scales, dtypes = _mapping(obj, "scales", where), _mapping(obj, "dtypes", where)
    passthrough = _mapping(obj, "passthrough", where)
    orig = _mapping(obj, "passthrough_orig_dtypes", where, required=False)
    out: dict[str, QTensor] = {}
    for name, q in quantized.items():
        scale = scales.get(name)
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or not isinstance(scale, torch.Tensor):
            raise ArtifactError(f"{where}: quantized[{name!r}] needs an int8 tensor and a scales tensor")
        meta = {"dtype": _dtype(dtypes.get(name), f"dtypes[{name!r}]", where)}
        if scale.ndim == 1 and q.ndim == 2 and scale.numel() == q.shape[0]:
            out[name] = QTensor("int8_row", {"q": q.contiguous(), "scale": scale.contiguous()}, meta)
        elif scale.numel() == 1 and scale.ndim == 0:
            scale32 = scale.to(torch.float32)  # upstream reads it back with float(s.item())
            out[name] = QTensor("int8_tensor", {"q": q.contiguous(), "scale": scale32}, meta)
        else:
            raise ArtifactError(
                f"{where}: quantized[{name!r}] of shape {list(q.shape)} has scales of shape "
                f"{list(scale.shape)}; expected one per row of a 2-D tensor, or a single one"
            )
    for name, t in passthrough.items():
        if name in out:
            raise ArtifactError(f"{where}: {name!r} is both quantized and passed through")
        kept = orig.get(name)
        dtype = _dtype(kept, f"passthrough_orig_dtypes[{name!r}]", where) if kept is not None else None
        out[name] = _passthrough(name, t, DTYPES[dtype] if dtype else None, where)
    return out


def _passthrough(name: str, t: Any, dtype: torch.dtype | None, where: str) -> QTensor:
    if not isinstance(t, torch.Tensor) or dtype_name(t.dtype) not in DTYPES:
        raise ArtifactError(f"{where}: tensor {name!r} is not a tensor of a supported dtype")
    meta = {"dtype": dtype_name(dtype if dtype is not None else t.dtype)}
    return QTensor("passthrough", {"w": t.contiguous()}, meta)


def _mapping(obj: dict, key: str, where: str, required: bool = True) -> dict:
    value = obj.get(key, None if required else {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ArtifactError(
            f"{where}: {key!r} must be a dict keyed by tensor names, got {type(value).__name__}"
        )
    return value


def _dtype(value: Any, field: str, where: str) -> str:
    if isinstance(value, torch.dtype):
        value = dtype_name(value)
    if value not in DTYPES or not DTYPES[value].is_floating_point:
        raise ArtifactError(f"{where}: {field} is {value!r}; expected a float dtype name such as 'bfloat16'")
    return value


def check_names(tensors: dict[str, QTensor], model: torch.nn.Module, where: str, submission: str) -> None:
    """Every tensor of the submission's model is present with its shape, and nothing else."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(
            f"{where}: tensor names do not match submission {submission!r}: "
            f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {extra[:6]}{'...' if len(extra) > 6 else ''}"
        )
    for name, qt in tensors.items():
        stored = qt.arrays["q"] if "q" in qt.arrays else qt.arrays["w"]
        if tuple(stored.shape) != tuple(expected[name].shape):
            raise ArtifactError(
                f"{where}: {name} has shape {list(stored.shape)}; submission {submission!r} "
                f"expects {list(expected[name].shape)}"
            )


def import_upstream(
    source: Path, submission: Path, out: Path, *, upstream_numerics: bool = True
) -> ArtifactInfo:
    """Convert the upstream checkpoint ``source`` into the artifact ``out`` for ``submission``."""
    source, out = Path(source), Path(out)
    try:
        size = source.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise ArtifactError(f"{source}: {size} bytes is larger than any upstream checkpoint")
        data = source.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{source}: cannot read: {exc.strerror}") from None
    tensors, fmt = upstream_qtensors(read_torch_file(data, str(source)), str(source))
    config = build_submission_config(submission)
    model_cfg = config.model
    registry = full_manager().registry
    if upstream_numerics:
        switch = registry.get("arch_component", "upstream_numerics").config_cls
        components = getattr(model_cfg, "components", None)
        if components is None:
            raise ArtifactError(f"submission {submission}: its arch takes no components (upstream_numerics)")
        if not any(isinstance(c, switch) for c in components):
            model_cfg = dataclasses.replace(model_cfg, components=(*components, switch()))
    check_names(tensors, model_cfg.build(config.data.vocab_size), str(source), str(submission))
    compressor = config.compressor
    # The int8 kinds above decode with the baseline's arithmetic, whatever the submission ships.
    quantizer = registry.get("quantizer", "int8").config_cls()
    return write_artifact(
        out,
        tensors,
        quantizer_name=registry.name_of(quantizer),
        quantizer_config=config_to_json(quantizer),
        compressor=compressor.build(),
        compressor_name=registry.name_of(compressor),
        compressor_config=config_to_json(compressor),
        extras={
            "arch": registry.name_of(model_cfg),
            "arch_config": config_to_json(model_cfg),
            "vocab_size": config.data.vocab_size,
            "harness_version": harness.__version__,
            "imported_from": {
                "file": source.name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "format": fmt,
                "submission": config.name,
            },
        },
    )
