"""The training step's gradient-norm clip, with the total norm summed as the upstream script sums it.

``torch.nn.utils.clip_grad_norm_`` takes one 2-norm per tensor, then the 2-norm of those. Float
addition is not associative, so the clip coefficient's last bits depend on which tensors there
are and in what order, and Newton-Schulz's bf16 rounding turns a last-bit difference into a
train-loss difference of 1e-4 within a few steps (benchmarks/upstream_parity/train_parity.py).
A model that is `harness.api.protocols.ClipOrder` lists its parameters in the upstream script's
order; a tuple in that list is a set of matrices the script holds as one stacked tensor (PR
#1573's parameter banks), whose norm is taken over the stack, as the script's is.

Only runs that clip need it (``train.grad_clip_norm > 0``: the records, not the naive baseline),
so the trainer imports it by name (`harness.api.by_name.GRAD_CLIP_MODULE`): a bundle whose
run does not clip leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from harness.api.protocols import ClipOrder


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Scale every gradient of ``model`` so that their total 2-norm is at most ``max_norm``."""
    if not isinstance(model, ClipOrder):
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    order = model.clip_order()
    if not any(isinstance(item, tuple) for item in order):
        torch.nn.utils.clip_grad_norm_(order, max_norm)
        return
    norm_inputs = [g for g in (_stacked_grad(item) for item in order) if g is not None]
    params = [p for item in order for p in (item if isinstance(item, tuple) else (item,))]
    total = _total_norm(norm_inputs)
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6: clip_grad_norm_'s second half
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.device))


def _stacked_grad(item: nn.Parameter | Sequence[nn.Parameter]) -> Tensor | None:
    if not isinstance(item, tuple):
        return item.grad
    if all(p.grad is None for p in item):
        return None
    # A matrix the step did not reach is a zero slice of the upstream bank's gradient.
    return torch.stack([p.grad if p.grad is not None else torch.zeros_like(p) for p in item])


def _total_norm(tensors: Iterable[Tensor]) -> Tensor:
    """The total norm as ``clip_grad_norm_`` computes it (its own helper where torch has it)."""
    tensors = list(tensors)
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(tensors, 2.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))
