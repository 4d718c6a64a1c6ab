"""The interfaces components implement: what the harness calls on a model, an optimizer
set, a quantizer and a compressor.

Pattern from torchtitan's `protocols/` and `config/configurable.py`: every component has a
frozen Config dataclass whose `build(...)` returns the object below. The harness depends
on these protocols only, never on a concrete plugin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM over token ids. Built by an ``arch`` Config: ``cfg.build(vocab_size)``.

    The harness computes every loss itself from ``forward``'s logits, so no model can
    change how it is scored.
    """

    vocab_size: int

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids -> (B, T, V) logits (after any softcap)."""

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, d) final hidden states, before the output head."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden states -> (..., V) logits; ``forward(x) == logits(hidden(x))``."""


class OptimizerSet(Protocol):
    """All optimizers of a run behind one face. Built by ``cfg.build(model)``."""

    def zero_grad(self) -> None:
        """Clear every gradient (set to None)."""

    def step(self, step: int, lr_scale: float) -> None:
        """One update; ``step`` is 1-based (momentum warm-up uses it), ``lr_scale`` the
        schedule multiplier applied to every group's base lr."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to undo compile-priming steps."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output."""

    def describe(self) -> list[str]:
        """One log line per optimizer/group (name, lr, parameter count)."""


@dataclass
class QTensor:
    """One tensor after quantization: named arrays plus JSON-able metadata.

    ``kind`` names the encoding (e.g. ``int8_row``, ``passthrough``); ``arrays`` holds the
    stored tensors (contiguous CPU tensors of any fixed-size dtype); ``meta`` holds small
    JSON values (original dtype, shape, bits, ...). The artifact stores exactly this.
    """

    kind: str
    arrays: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


class Quantizer(Protocol):
    """Float state dict <-> quantized tensors. Built by ``cfg.build()``."""

    name: str  # short tag for log lines, e.g. "int8"

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        """Quantize every tensor (pass small/non-float ones through)."""

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:
        """Inverse of ``quantize`` up to quantization error; dtypes and shapes restored."""

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        """Bit width ``quantize`` will give parameter ``name`` (symmetric per-row), or None
        when it keeps the tensor in floating point. QAT plugins fake-quantize exactly these."""


class Schedule(Protocol):
    """LR multiplier per step. Built by a ``schedule`` Config: ``cfg.build()``."""

    def __call__(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """Multiplier for the step after ``step`` steps and ``elapsed_ms`` of training time.

        ``max_wallclock_ms <= 0`` means no wallclock cap. Must not sync the device.
        """


class Compressor(Protocol):
    """Lossless bytes codec. Built by ``cfg.build()``.

    Optional layout hint: a codec whose ``accepts_layout`` attribute is ``True`` is called
    as ``compress(data, layout=segments)`` by the artifact writer, where ``segments`` is a
    list of `harness.entropy.Segment` (offset, nbytes, bits, count, cls, name) covering the
    raw payload in order and saying how to read each array's symbols (bit-packed codes or
    bytes) and which tensor class it belongs to. The hint changes nothing else: ``decompress``
    must still return exactly ``data`` from the payload alone, without the layout.
    """

    name: str  # short tag for log lines, e.g. "zlib"

    def compress(self, data: bytes) -> bytes:
        """Compress ``data`` (``compress(data, layout=...)`` when ``accepts_layout``)."""

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """Decompress; raise ``ArtifactError`` if the output would exceed ``max_output_size``."""


# Parameter names routed to the scalar Adam group and kept fp32 by the baseline int8
# export (upstream baseline `CONTROL_TENSOR_NAME_PATTERNS`). Shared by the optimizer and
# quantizer plugins, so it lives here rather than in either plugin.
BASELINE_CONTROL_PATTERNS: tuple[str, ...] = (
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
)


def is_control_tensor(name: str, patterns: tuple[str, ...] = BASELINE_CONTROL_PATTERNS) -> bool:
    """True if any pattern occurs in the dotted parameter ``name`` (upstream substring rule)."""
    return any(p in name for p in patterns)


def live_float_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The model's floating-point parameters and persistent buffers, as live objects
    (``state_dict(keep_vars=True)``), deduplicated by identity so a tied tensor counts once.

    Shared by the averaging plugins (SWA, EMA): tracking objects rather than names keeps them
    working while late QAT's parametrizations rename the weights.
    """
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for tensor in model.state_dict(keep_vars=True).values():
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out
