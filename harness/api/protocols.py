"""The plugin contract: one Protocol per component kind, and the capabilities a component
may add. The harness depends on these protocols only, never on a concrete plugin.

Pattern from torchtitan's ``protocols/`` and ``config/configurable.py``: every component is
a frozen Config dataclass (registered by kind and name in `harness.api.registry`) whose
``build(...)`` returns the object described here.

| kind | the Config's build | returns | where it runs |
|---|---|---|---|
| ``arch`` | ``build(vocab_size)`` | `LanguageModel` | trained, exported, scored |
| ``arch_component`` | ``build(model_cfg, vocab_size)`` | `ArchComponent` (``nn.Module``) | in a host model |
| ``activation`` | ``build()`` | `Activation` (an elementwise ``nn.Module``) | the host's MLP |
| ``optimizer`` | ``build(model)`` | `OptimizerSet` | every training step |
| ``schedule`` | ``build()`` | `Schedule` | every training step |
| ``quantizer`` | ``build()`` | `Quantizer` (maybe `CalibratedQuantizer`) | export and roundtrip |
| ``compressor`` | ``build()`` | `Compressor` (maybe `LayoutAwareCompressor`) | export and roundtrip |
| ``averaging``, ``algorithm``, ``callback`` | ``build()`` | `RunPlugin` (maybe `Stateful`) | ``pg_*`` hooks |
| ``adapter`` | ``build()`` | `Adapter` | score-first test-time training, after the sliding pass |

Validation: a Config checks its own fields in ``__post_init__``, so a bad value fails where
it is written, with a `ConfigError` naming the field; an ``arch_component`` checks what it
needs of its host in ``check(model_cfg)``, which the host calls from its own
``__post_init__``; a check that needs the whole resolved run (a byte model needs a byte
dataset) goes in the plugin module's ``pg_configure`` hook. Each check lives in exactly one
of these places.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.api.adaptation import AdaptSession, ScoredChunk
    from harness.api.layout import Segment


class ComponentConfig(Protocol):
    """Every component's Config: a frozen dataclass with a ``build`` method (arguments by kind)."""

    def build(self, *args: Any) -> Any:
        """The component this Config describes."""


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM over token ids. Built by an ``arch`` Config: ``cfg.build(vocab_size)``.

    The harness computes every loss itself from ``forward``'s logits, so no model can
    change how it is scored.
    """

    vocab_size: int

    @property
    def attention_layers(self) -> int:
        """Attention layers on a token's path (a recycled block counts once per pass; 0 for an
        attention-free model): the L of the 12·L·T·d attention FLOPs behind MFU."""

    @property
    def width(self) -> int:
        """The residual stream's width (model dimension)."""

    def describe(self) -> list[str]:
        """Lines for the run header (components, effective depth, attention backend)."""

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


class CalibrationData(Protocol):
    """Training tokens for whatever runs before quantization (GPTQ Hessians, pruning
    statistics). The harness builds it from the train shards alone, with a sampler of its own
    (the training stream is not touched); it has no way to reach validation tokens, and asking
    for them is refused (docs/protocol.md §7.1: calibrating on validation text is illegal)."""

    def batches(self, count: int, *, split: str = "train") -> Iterator[torch.Tensor]:
        """``count`` batches of (rows, seq_len) int64 token ids on the run's device, each the
        shape of one training micro-batch of this rank. ``split`` other than "train" raises
        ``ConfigError``."""


@runtime_checkable
class CalibratedQuantizer(Quantizer, Protocol):
    """A quantizer that reads the trained model's activations before ``quantize`` (GPTQ).

    The export calls ``calibrate`` once on rank 0, with the model in eval mode, under
    ``torch.no_grad`` and the run's autocast, then ``quantize`` on the same object. Quantizers
    without the method are called as before.
    """

    def calibrate(self, model: LanguageModel, data: CalibrationData) -> str:
        """Collect statistics from ``data`` through ``model``; returns one line for the run log."""


class Adapter(Protocol):
    """Eval-time adaptation (score-first TTT). Built by an ``adapter`` Config: ``cfg.build()``.

    The harness owns the walk (`harness.pipeline.adaptation`): it scores each chunk of the
    validation stream under ``torch.no_grad`` and commits the score before it calls
    ``adapt`` with that chunk's tokens, so an adapter can only learn from scored tokens and
    can never change a committed score. Its time counts toward the evaluation cap.
    """

    name: str

    def start(self, model: torch.nn.Module, session: AdaptSession) -> None:
        """Called once before the first chunk with the model being scored (build optimizers)."""

    def adapt(self, chunk: ScoredChunk) -> None:
        """Update ``model`` from the scored ``chunk``; called in train mode, with grad enabled,
        after every chunk but the last. Forward hooks on the model are refused."""


class Schedule(Protocol):
    """LR multiplier per step. Built by a ``schedule`` Config: ``cfg.build()``."""

    def __call__(self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float) -> float:
        """Multiplier for the step after ``step`` steps and ``elapsed_ms`` of training time.

        ``max_wallclock_ms <= 0`` means no wallclock cap. Must not sync the device.
        """


class Compressor(Protocol):
    """Lossless bytes codec. Built by ``cfg.build()``."""

    name: str  # short tag for log lines, e.g. "zlib"

    def compress(self, data: bytes) -> bytes:
        """Compress ``data``."""

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """Decompress; raise ``ArtifactError`` if the output would exceed ``max_output_size``."""


@runtime_checkable
class LayoutAwareCompressor(Compressor, Protocol):
    """A compressor that reads the payload's symbol layout (`harness.api.layout.Segment`s
    covering the raw payload in order: where each array is, its tensor class, and whether
    its symbols are bit-packed codes or bytes) and reports what it coded per class.

    The artifact writer passes ``layout``; the hint changes nothing else: ``decompress`` must
    still return exactly ``data`` from the payload alone. Pattern: the ``ans`` entropy coder
    codes int5 codes as 5-bit symbols rather than the bytes they are packed in. The writer reaches
    the layout by name: a bundle embeds it when the compressor's module imports
    `harness.api.layout` (as ``ans`` does) or its config names it in ``modules_by_name()``.
    """

    def compress(self, data: bytes, layout: Sequence[Segment] | None = None) -> bytes:
        """Compress ``data``, reading its symbols as ``layout`` says (None: as bytes)."""

    def coded_class_bytes(self) -> dict[str, int]:
        """Bytes the last ``compress`` spent on each tensor class (tables and framing excluded)."""


@runtime_checkable
class Stateful(Protocol):
    """State that must survive ``--resume``: a run plugin (SWA sums, EMA shadow, the late-QAT
    switch) implements this pair and the checkpoint saves and restores it. ``load_state_dict``
    runs after ``pg_train_start`` (so live tensors taken there exist) and before step 1 of the
    resumed loop. Values: tensors, numbers, strings, lists and dicts of them."""

    def state_dict(self) -> dict[str, Any]:
        """This plugin's state, to be saved."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` output."""


class RunPlugin(Protocol):
    """The object a ``RunConfig.plugins`` entry builds (kinds ``averaging``, ``algorithm``,
    ``callback``): it implements some of the ``pg_*`` hooks of `harness.api.hooks` as
    ``@hookimpl`` methods taking ``ctx: TrainContext``, and `Stateful` when it has state a
    resumed run needs. ``algorithm`` plugins change the weights or how they train (late QAT,
    pruning); ``callback`` plugins only observe (an extra export); ``averaging`` plugins swap
    an average of the weights in at ``pg_train_end``."""


class Activation(Protocol):
    """An elementwise activation for a host model's MLP (kind ``activation``): an
    ``nn.Module`` mapping a tensor to one of the same shape and dtype. Built by
    ``cfg.build()``; a new activation is one small plugin module."""

    def __call__(self, x: Tensor) -> Tensor:
        """f(x), elementwise."""


class ArchComponent(Protocol):
    """An add-on module of a host model (kind ``arch_component``), built by
    ``cfg.build(model_cfg, vocab_size)``. The host (`plugins.arch.gpt`) registers it under its
    ``slot`` name and calls the extension points below that its class defines; every one is
    optional. At each point components run in the host's fixed slot order, whatever order
    the config lists them in. ``layer`` is the physical block index; ``recycled`` is True on
    a recycled pass; ``state`` is one dict per forward (``ids``, ``host``, and what
    components leave there, such as ``v0``). Dispatch is static Python over lists fixed at
    build, so ``torch.compile(fullgraph=True)`` traces it.

    In the order they fire during one forward pass:

    1. ``attach(model)``: once at build, before the init pass: add per-layer parameters or
       set block flags.
    2. ``layer_route(num_layers) -> tuple[tuple[int, str, int], ...]``: once at build: the
       virtual layer order as the host runs it (at most one component may plan layers), one
       ``(block, role, k)`` per pass: role ``"enc"`` pushes a U-Net skip, ``"dec"`` pops one,
       ``"mid"`` does neither; ``k`` numbers the recycled passes (``on_recycle``), -1 on a
       block's own pass. The planner's attribute ``active`` (False: the host runs the plain
       order 0..L-1, read every forward) switches between the two.
    3. ``on_embed(ids, x) -> x``: on the token embedding, before its RMSNorm (BigramHash).
    4. ``on_post_embed(ids, x) -> x``: after that RMSNorm, before x0 is kept (SmearGate).
    5. ``on_recycle(x, k) -> x``: before recycled pass k (RecycledCore).
    6. ``on_value(v, *, attn, layer, recycled, state) -> v``: on the V projection (B, T,
       kv_dim), before the head reshape (value embeddings, value residual).
    7. ``on_qk(q, k, *, attn, layer, recycled, state) -> (q, k)``: on the per-head queries
       (B, H, T, Dh) and keys (B, Hkv, T, Dh) after QK-norm, RoPE and the query gain, right
       before attention: the attention logits are q·k/sqrt(Dh), so scaling q here is an
       attention temperature (`plugins.arch.qk_temperature`).
    8. ``on_attn_out(y, *, attn, h, v, layer, recycled, state) -> y``: on the per-head
       attention output (B, T, H, Dh) before the output projection (XSA, gated attention).
    9. ``on_skip(x, skip, index) -> x``: where decoder position ``index`` takes its U-Net
       skip, ``skip`` already weighted by the host's ``skip_weights[index]``: returns the
       merged stream in place of the host's ``x + skip`` (at most one component; skip gates).
    10. ``describe() -> list[str]``: once at build: log lines for the run header.

    Outside the forward, ``on_train_progress(step, elapsed_ms, *, iterations,
    max_wallclock_ms) -> list[str]`` fires before every training step with the arguments the
    LR schedule gets (see `TrainingProgress`): a component that changes the forward during
    training (a late switch) decides here and returns log lines saying what changed.
    """

    slot: str


@runtime_checkable
class TrainingProgress(Protocol):
    """A model whose forward changes during training (a late switch such as depth
    recurrence turned on at 35% of training). The trainer calls ``on_train_progress`` before
    every training step with the arguments the LR schedule gets (steps done, the rank-agreed
    training time, ``iterations``, the cap; ``max_wallclock_ms <= 0`` means no cap), and
    once before the loop, so a resumed run recomputes the same state from its step and clock.
    A freshly built model is in its end-of-training state (what eval-only runs and re-scoring
    rebuild); compile priming also runs that state when the call at the end of training
    reports a change. Must not sync the device.
    """

    def on_train_progress(
        self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float
    ) -> list[str]:
        """Set the forward for the next step; log lines for what changed (empty: nothing)."""


@runtime_checkable
class ClipOrder(Protocol):
    """A model that registers its parameters in another order than the upstream script it
    rebuilds. The trainer's gradient clip sums the per-tensor norms in ``clip_order()``'s order,
    so the clip coefficient has the upstream script's bits: float addition is not associative,
    and a last-bit difference there, amplified by Newton-Schulz's bf16 rounding, moved T1's
    train loss by 7e-4 within 20 steps (benchmarks/upstream_parity/train_parity.py).
    """

    def clip_order(self) -> list[Any]:
        """Every parameter of the model, in the upstream script's registration order; a tuple
        of parameters stands for one stacked tensor of the script (PR #1573's parameter banks),
        whose norm is taken over the stack (harness/pipeline/grad_clip.py)."""


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
