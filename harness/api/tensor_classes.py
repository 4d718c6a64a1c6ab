"""The class of each array of an artifact, by the tensor it belongs to: the grouping that the
container orders its payload by (`harness.pipeline.artifact_manifest`) and that the symbol
layout and the entropy report count in (`harness.api.layout`, `harness.pipeline.entropy_report`).

Classes, fixed: ``embed``, ``attn``, ``mlp``, ``other_quant`` (codes of quantized weights, by
the tensor's name: ``emb`` / ``attn`` / ``mlp`` in it, first match wins), ``scales`` (the step
arrays of quantized tensors) and ``float`` (passthrough tensors and arrays of kinds not listed in
``CODE_ARRAYS``). A module of its own because every artifact writer needs it, while the layout
ships only with a compressor that reads it (pgolf issue 13).
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("embed", "attn", "mlp", "other_quant", "scales", "float")
CODE_ARRAYS: dict[str, str] = {
    "int8_row": "q",
    "int8_tensor": "q",
    "intn": "q",
    "intn_packed": "q",
    "int4_channel": "codes",
}
"""Quantized kinds and the array holding their codes; their ``scale`` array is class ``scales``."""
_NAME_CLASSES = (("emb", "embed"), ("attn", "attn"), ("mlp", "mlp"))  # first match wins


def tensor_class(name: str, kind: str, key: str) -> str:
    """The class of array ``key`` of tensor ``name`` (see the module docstring)."""
    if CODE_ARRAYS.get(kind) == key:
        low = name.lower()
        return next((cls for part, cls in _NAME_CLASSES if part in low), "other_quant")
    return "scales" if kind in CODE_ARRAYS and key == "scale" else "float"
