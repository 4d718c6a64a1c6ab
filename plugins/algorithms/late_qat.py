"""Late quantization-aware training with a straight-through estimator (kind ``algorithm``,
name ``late_qat``).

Idea from P1573 (12L RecycledCore record; spec: docs/techniques.md §7.1, §13 row 2): once
the LR multiplier drops below ``threshold`` (0.15), training forwards see fake-quantized
weights w + stopgrad(fq(w) - w), so the loss is computed on (almost) the weights the
artifact will hold while gradients flow to the float weights unchanged (the STE of Bengio
et al. 2013). fq is symmetric per-row quantization with P1573's formula generalised from
int6 to any width: c = 2^(bits-1) - 1, Δ_r = max(max|w_r| / c, 1/c),
q = clamp(round(w / Δ_r), -c-1, c)·Δ_r.

How it works here:
* ``pg_train_start`` (before ``torch.compile``, DDP and compile-priming) builds the run's
  quantizer and asks ``quantizer.qat_bits(name, tensor)`` for every parameter; each one
  with a bit width gets a ``torch.nn.utils.parametrize`` parametrization (`FakeQuant`).
  The original Parameter object moves to ``<module>.parametrizations.<name>.original``, so
  the optimizers, which hold the objects, keep updating it.
* The switch is ONE shared 0-dim float32 tensor ``alpha`` (0 = off, 1 = on), registered as
  a non-persistent buffer of every `FakeQuant` (so compilation treats it as a graph input
  and it stays out of the state dict). Turning QAT on is ``alpha.fill_(1.0)``: no
  recompilation, no host sync.
* ``pg_train_end`` removes the parametrizations with ``leave_parametrized=False``: the
  state dict gets its original names and raw float weights back, and the quantizer
  quantizes those at export.

Deliberate differences from P1573:
* P1573 flips a Python class attribute on ``CastedLinear``. Only CastedLinear modules saw it
  (bigram.proj and the VE proj, both exported fp16, so QAT could not touch the artifact),
  and ``torch.compile`` bakes such a flag into the graph, so the branch reportedly never
  ran. Here the fake-quantized set is exactly what the run's quantizer quantizes, and the
  switch is a tensor.
* P1573 checks the threshold before a step and fake-quantizes that step; ``pg_step_end``
  runs after a step, so QAT starts one step later (from the step after the first one whose
  multiplier is below the threshold).
* The fake quantizer sees only the bit width, not the quantizer's clipping rule (percentile
  clip, step floor). ``step_floor=False`` drops the 1/c floor for quantizers without one
  (T1's intN uses Δ = max|w_r| / c).
* Exception: a quantizer with a ``fake_quant(name, w) -> Tensor`` method (the exact values its
  ``dequantize`` will return for that weight, e.g. the per-channel ``int4``) is used as fq
  instead of the per-row formula, so the forward sees exactly the artifact's weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from harness.api.context import TrainContext
from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry

MIN_BITS, MAX_BITS = 2, 16


@dataclass(frozen=True, kw_only=True)
class LateQATConfig:
    """When QAT switches on and how it fake-quantizes (P1573 defaults)."""

    threshold: float = 0.15
    """Switch on after the first step whose LR multiplier is below this (P1573 LATE_QAT_THRESHOLD)."""
    step_floor: bool = True
    """Floor the per-row step at 1/c as P1573 (and the baseline int8) do; False = max|w_r|/c only."""
    enabled: bool = True
    """False makes the plugin an exact no-op (nothing attached, no log lines)."""

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ConfigError(
                f"late_qat.threshold: expected a finite number >= 0 (an LR multiplier), got {t!r}"
            )
        for name in ("step_floor", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"late_qat.{name}: expected true or false, got {getattr(self, name)!r}")

    def build(self) -> LateQAT:
        """The run plugin object (register it with the run's plugin manager)."""
        return LateQAT(self)


def fake_quantize(w: Tensor, bits: int, step_floor: bool = True) -> Tensor:
    """Symmetric per-row quantize-dequantize of ``w`` (rows = dim 0; a vector is one row).

    Computed in fp32 and returned in ``w``'s dtype and shape; no gradient is tracked.
    """
    c = 2 ** (bits - 1) - 1
    with torch.no_grad():
        w32 = w.detach().float()
        rows = w32.reshape(w32.shape[0], -1) if w32.ndim >= 2 else w32.reshape(1, -1)
        step = rows.abs().amax(dim=1, keepdim=True) / c  # (rows, 1)
        # Without the floor an all-zero row would divide 0 by 0; the tiny step maps it to 0.
        step = step.clamp_min(1.0 / c if step_floor else torch.finfo(torch.float32).tiny)
        q = torch.clamp(torch.round(rows / step), -c - 1, c) * step
        return q.reshape(w.shape).to(w.dtype)


class FakeQuant(nn.Module):
    """Parametrization w -> w + alpha·stopgrad(fq(w) - w), with a shared tensor switch ``alpha``.

    fq is ``exact(w)`` when given (a quantizer's own ``fake_quant``), else `fake_quantize`.
    """

    def __init__(
        self,
        bits: int,
        alpha: Tensor,
        step_floor: bool = True,
        exact: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.step_floor = step_floor
        self.exact = exact
        # A buffer, not a plain attribute: compiled graphs take it as an input, never a constant.
        self.register_buffer("alpha", alpha, persistent=False)

    def forward(self, w: Tensor) -> Tensor:
        if self.exact is not None:
            with torch.no_grad():
                target = self.exact(w.detach())
        else:
            target = fake_quantize(w, self.bits, self.step_floor)
        delta = target - w.detach()
        # alpha is 0-dim fp32, so the result keeps w's dtype; d(out)/dw = identity (the STE).
        return w + self.alpha * delta


def _check_bits(bits: Any, name: str, quantizer: Any) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(
            f"late_qat: {type(quantizer).__name__}.qat_bits({name!r}) returned {bits!r}; "
            f"expected None or an integer bit width in [{MIN_BITS}, {MAX_BITS}]"
        )
    return bits


def qat_targets(model: nn.Module, quantizer: Any) -> list[tuple[str, int]]:
    """(parameter name, bits) for every parameter ``quantizer`` will quantize."""
    if not callable(getattr(quantizer, "qat_bits", None)):
        raise ConfigError(
            f"late_qat: quantizer {type(quantizer).__module__}.{type(quantizer).__name__} has no "
            "qat_bits(name, tensor) method (harness.api.protocols.Quantizer), so it cannot say "
            "which tensors to fake-quantize"
        )
    targets = []
    for name, param in model.named_parameters():
        if ".parametrizations." in name:
            raise ConfigError(
                f"late_qat: parameter {name} is already parametrized; late_qat must own its weights"
            )
        bits = _check_bits(quantizer.qat_bits(name, param.detach()), name, quantizer)
        if bits is not None:
            targets.append((name, bits))
    return targets


def _exact_fake_quant(quantizer: Any, name: str, param: Tensor) -> Callable[[Tensor], Tensor] | None:
    """``quantizer.fake_quant`` bound to ``name``, checked once on ``param``; None without one."""
    fake_quant = getattr(quantizer, "fake_quant", None)
    if not callable(fake_quant):
        return None
    probe = fake_quant(name, param.detach())
    if not isinstance(probe, Tensor) or probe.shape != param.shape or probe.dtype != param.dtype:
        got = f"{tuple(probe.shape)} {probe.dtype}" if isinstance(probe, Tensor) else type(probe).__name__
        raise ConfigError(
            f"late_qat: {type(quantizer).__name__}.fake_quant({name!r}) returned {got}; "
            f"expected a tensor of shape {tuple(param.shape)} and dtype {param.dtype}"
        )
    return functools.partial(fake_quant, name)


class LateQAT:
    """Observer plugin: attaches `FakeQuant` at train start, flips ``alpha`` late, detaches at end."""

    def __init__(self, cfg: LateQATConfig) -> None:
        self.cfg = cfg
        self.alpha: Tensor | None = None
        self.attached: list[tuple[nn.Module, str]] = []
        self.names: list[str] = []
        self.enabled_step: int | None = None

    @hookimpl
    def pg_train_start(self, ctx: TrainContext) -> None:
        """Parametrize every parameter the run's quantizer quantizes (QAT off)."""
        if not self.cfg.enabled:
            return
        model = ctx.model
        quantizer = ctx.config.quantizer.build()
        targets = qat_targets(model, quantizer)
        device = next(model.parameters()).device if targets else torch.device("cpu")
        self.alpha = torch.zeros((), dtype=torch.float32, device=device)
        for name, bits in targets:
            module_name, _, tensor_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            exact = _exact_fake_quant(quantizer, name, module.get_parameter(tensor_name))
            fq = FakeQuant(bits, self.alpha, self.cfg.step_floor, exact)
            parametrize.register_parametrization(module, tensor_name, fq)
            self.attached.append((module, tensor_name))
            self.names.append(name)
        widths = sorted({bits for _, bits in targets})
        ctx.log.log(f"late_qat:armed tensors:{len(targets)} bits:{widths} threshold:{self.cfg.threshold:g}")

    @hookimpl
    def pg_step_end(self, ctx: TrainContext) -> None:
        """Switch QAT on (a tensor fill, no sync) after the first step below the threshold."""
        if self.alpha is None or self.enabled_step is not None or not ctx.lr_scale < self.cfg.threshold:
            return
        self.alpha.fill_(1.0)
        self.enabled_step = ctx.step
        ctx.notes["late_qat_step"] = ctx.step
        ctx.log.log(
            f"late_qat:enabled step:{ctx.step} scale:{ctx.lr_scale:.4f} threshold:{self.cfg.threshold:g} "
            f"tensors:{len(self.attached)}",
            event="late_qat",
            step=ctx.step,
            tensors=len(self.attached),
        )

    def state_dict(self) -> dict[str, Any]:
        """Whether and when QAT was switched on (saved in a checkpoint)."""
        return {"enabled_step": -1 if self.enabled_step is None else self.enabled_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the switch after ``pg_train_start`` armed the tensors, so a resumed run
        quantizes from the same step as the uninterrupted one."""
        step = state["enabled_step"]
        if not isinstance(step, int) or step < -1:
            raise ConfigError(f"late_qat: checkpoint enabled_step must be an integer >= -1, got {step!r}")
        if step >= 0:
            if self.alpha is None:
                raise ConfigError(
                    "late_qat: checkpoint says QAT was on, but no tensors were armed at train start"
                )
            self.alpha.fill_(1.0)
            self.enabled_step = step

    @hookimpl
    def pg_train_end(self, ctx: TrainContext) -> None:
        """Remove the parametrizations: original names and raw float weights go to export."""
        if not self.attached:
            return
        for module, tensor_name in self.attached:
            parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
        ctx.log.log(f"late_qat:detached tensors:{len(self.attached)} (raw weights are exported)")
        self.attached = []

    @hookimpl
    def pg_report(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """``late_qat_step`` (None if never switched on) and ``late_qat_tensors``."""
        if not self.cfg.enabled:
            return
        record["late_qat_step"] = self.enabled_step
        record["late_qat_tensors"] = len(self.names)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``LateQATConfig`` as the ``algorithm`` component ``late_qat``."""
    registry.register("algorithm", "late_qat", LateQATConfig)
