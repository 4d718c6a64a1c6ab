"""The orthogonal init pass of the GPT host (``GPTConfig.orthogonal_init``), run once at build.

The T1 record (2026-03-20 10L Int5-MLP) and PR #1573 (12L RecycledCore) of openai/parameter-golf
re-draw their weight matrices orthogonal after building the model; the baseline keeps torch's
default Linear init. Only configurations with ``orthogonal_init`` need this pass, so it is a
module of its own that the host imports by name (`harness.api.by_name`): ``GPTConfig``
names it in ``modules_by_name()``, and a baseline bundle leaves it out.

The rule is upstream's: a Linear flagged zero-init (W_o, the MLP down projection, the
gated-attention gate) is zeroed again, checked first; any other Linear with both dims >= 64 is
drawn orthogonal with gain 1. T1's ``orthogonal_proj_scale`` then multiplies re-drawn Linears
named ``.proj`` by 1/sqrt(2·num_layers) (in practice only ``bigram.proj``). The order of the
draws is the upstream scripts' (init parity, tests/unit/test_init_parity.py): component modules
first, where upstream's ``named_modules()`` meets them, and with P1573's parameter banks, first
Q, K, V and MLP-up of each layer in turn, whatever their size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def orthogonal_init(model: nn.Module, banks: bool = False) -> None:
    """Re-draw the Linears of the GPT ``model`` as described above; ``banks`` for P1573's order."""
    cfg = model.cfg
    proj_scale = 1.0 / math.sqrt(2 * cfg.num_layers) if cfg.orthogonal_proj_scale else None
    drawn: set[nn.Module] = set()
    if banks:
        for block in model.blocks:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.fc):
                nn.init.orthogonal_(linear.weight, gain=1.0)
                drawn.add(linear)
    slots = {comp.slot for comp in model.components}
    # Component modules first (T1 registers bigram before its blocks, so its draws come first).
    ordered = sorted(model.named_modules(), key=lambda item: item[0].split(".")[0] not in slots)
    for name, module in ordered:
        if not isinstance(module, nn.Linear) or module in drawn:
            continue
        if getattr(module, "_zero_init", False):  # checked first, as upstream
            nn.init.zeros_(module.weight)
        elif module.weight.ndim == 2 and min(module.weight.shape) >= 64:
            nn.init.orthogonal_(module.weight, gain=1.0)
            if proj_scale is not None and (name.endswith(".proj") or ".proj." in name):
                module.weight.mul_(proj_scale)
