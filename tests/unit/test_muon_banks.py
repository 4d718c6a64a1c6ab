"""P1573's banked Muon arithmetic (``MuonConfig(bank_arithmetic=True)``, plugins/optim/muon.py).

References written here from the arithmetic PR #1573's script states: the gradient rounded to
bf16, bf16 momentum and Nesterov sum, Newton-Schulz on a (1, rows, cols) stack turned wide
before its Frobenius normalisation with b·A + c·(A·A), and the sqrt(max(1, rows/cols)) factor
multiplied into the learning rate.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from plugins.optim.muon import MuonConfig, newton_schulz5, newton_schulz5_stacked


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _stacked_quintic_bf16(u: torch.Tensor) -> torch.Tensor:
    """The batched iteration, step by step in bf16 on a stack of one matrix."""
    x = u.to(torch.bfloat16)[None]
    tall = x.shape[1] > x.shape[2]
    if tall:
        x = x.transpose(1, 2)
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
    for _ in range(5):
        a = torch.bmm(x, x.transpose(1, 2))
        x = 3.4445 * x + torch.bmm(-4.7750 * a + 2.0315 * torch.bmm(a, a), x)
    return (x.transpose(1, 2) if tall else x)[0]


@pytest.mark.parametrize("rows, cols", [(24, 8), (8, 24), (16, 16)])
def test_stacked_newton_schulz_is_the_batched_bf16_iteration(rows, cols):
    u = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows + cols))
    out = newton_schulz5_stacked(u)
    assert out.dtype == torch.bfloat16 and out.shape == (rows, cols)
    assert torch.equal(out, _stacked_quintic_bf16(u))
    # The same map as the 2-D form: only bf16 roundings apart.
    assert (out.float() - newton_schulz5(u).float()).abs().max() < 0.05


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(16, 8)
        self.blocks = nn.ModuleList([nn.Module()])
        self.blocks[0].fc = nn.Linear(8, 24, bias=False)  # a 24 x 8 matrix: sqrt(3) factor


def test_banked_steps_follow_p1573s_bf16_arithmetic():
    torch.manual_seed(0)
    model = Toy()
    p = model.blocks[0].fc.weight
    w = p.detach().clone()
    cfg = MuonConfig(bank_arithmetic=True, matrix_lr=0.025, weight_decay=0.04, momentum_warmup_steps=0)
    opt = cfg.build(model)
    buf = torch.zeros(p.shape, dtype=torch.bfloat16)
    for step, lr_scale in ((1, 1.0), (2, 0.5), (3, 0.25)):
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(step))
        p.grad = g.clone()
        model.tok_emb.weight.grad = torch.zeros_like(model.tok_emb.weight)
        opt.step(step, lr_scale)
        g16 = g.to(torch.bfloat16)
        buf = buf * 0.95 + g16
        update = _stacked_quintic_bf16(torch.add(g16, buf, alpha=0.95))  # one bf16 rounding
        lr = 0.025 * lr_scale
        # Decay, then one fused add with the factor in the learning rate: p + (-lr·sqrt(3))·update.
        w = (w * (1 - lr * 0.04)).add(update.float(), alpha=-lr * math.sqrt(3.0))
        assert torch.equal(p.detach(), w), step
    assert opt.optimizers["muon"].state[p]["momentum_buffer"].dtype == torch.bfloat16
    assert any("bank_arithmetic:True" in line for line in opt.describe())


def test_banked_and_plain_updates_differ_only_in_roundings():
    def first_update(banked: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = Toy()
        p = model.blocks[0].fc.weight
        before = p.detach().clone()
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
        model.tok_emb.weight.grad = torch.zeros_like(model.tok_emb.weight)
        MuonConfig(bank_arithmetic=banked).build(model).step(1, 1.0)
        return p.detach() - before

    plain, banked = first_update(False), first_update(True)
    assert not torch.equal(plain, banked)
    assert (plain - banked).norm() < 0.05 * plain.norm()
