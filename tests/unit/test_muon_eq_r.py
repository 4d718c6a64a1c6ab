"""MuonEq-R (``MuonConfig(row_normalize=True)``) and the PR #1493 optimizer preset.

The record's update: Nesterov momentum, each row divided by its L2 norm (fp32, floored at
1e-7), Newton-Schulz 5, times sqrt(max(1, rows/cols)); decoupled WD 0.095 at lr 0.022; AdamW
WD 0.085 on the tied embedding at lr 0.03 and 0.02 on scalars, skip weights and gates at
lr 0.02 (its Optimizers class and Hyperparameters, train_seed42.log).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.api.errors import ConfigError
from plugins.arch.gpt import GPTConfig
from plugins.arch.skip_gates import SkipGatesConfig
from plugins.optim.muon import MuonConfig, momentum_at, p1493_optimizer, row_normalized


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_row_normalized_gives_unit_rows_and_keeps_zero_rows():
    u = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7)[:, None]
    u[2] = 0
    r = row_normalized(u)
    norms = r.norm(dim=1)
    assert torch.allclose(norms[[0, 1, 3, 4, 5]], torch.ones(5), atol=1e-6)
    assert torch.equal(r[2], torch.zeros(10))
    assert torch.allclose(r[4], u[4] / u[4].norm(), atol=1e-7)


def _quintic64(u: torch.Tensor) -> torch.Tensor:
    x = u / u.norm()
    for _ in range(5):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(16, 8)
        self.blocks = nn.ModuleList([nn.Module()])
        self.blocks[0].fc = nn.Linear(8, 16, bias=False)  # a 16 x 8 matrix: the sqrt(2) factor


def test_update_is_ns5_of_the_row_normalised_nesterov_step():
    torch.manual_seed(0)
    model = Toy()
    p = model.blocks[0].fc.weight
    w_init = p.detach().double().clone()
    w = w_init.clone()
    cfg = MuonConfig(row_normalize=True, weight_decay=0.095, matrix_lr=0.022, momentum_warmup_steps=10)
    opt = cfg.build(model)
    buf = torch.zeros_like(w)
    for step in (1, 2, 3):
        g = (
            torch.randn(p.shape, generator=torch.Generator().manual_seed(step))
            * torch.linspace(0.1, 10, 16)[:, None]
        )
        p.grad = g.clone()
        model.tok_emb.weight.grad = torch.zeros_like(model.tok_emb.weight)
        mu = momentum_at(step, cfg)
        buf = mu * buf + g.double()
        u = g.double() + mu * buf
        u = u / u.norm(dim=1, keepdim=True)
        w = w * (1 - 0.022 * 0.095) - 0.022 * math.sqrt(2.0) * _quintic64(u)
        opt.step(step, 1.0)
    # The plugin iterates in bf16 (~3% off the float64 iteration), so compare the updates.
    delta, ref_delta = p.detach().double() - w_init, w - w_init
    assert (delta - ref_delta).norm() < 0.06 * ref_delta.norm()


def test_row_scaling_of_the_gradient_changes_nothing_with_row_normalize():
    def first_update(row_normalize: bool, scale_rows: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = Toy()
        p = model.blocks[0].fc.weight
        before = p.detach().clone()
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
        if scale_rows:
            g = g * torch.logspace(-2, 2, 16)[:, None]
        p.grad = g
        model.tok_emb.weight.grad = torch.zeros_like(model.tok_emb.weight)
        MuonConfig(row_normalize=row_normalize).build(model).step(1, 1.0)
        return p.detach() - before

    assert torch.allclose(first_update(True, False), first_update(True, True), atol=2e-3)
    assert not torch.allclose(first_update(False, False), first_update(False, True), atol=2e-3)


def test_p1493_preset_groups_lrs_and_decays():
    cfg = p1493_optimizer()
    assert (cfg.matrix_lr, cfg.scalar_lr, cfg.tied_embed_lr) == (0.022, 0.02, 0.03)
    assert (cfg.weight_decay, cfg.adam_weight_decay, cfg.embed_weight_decay) == (0.095, 0.02, 0.085)
    assert (cfg.momentum, cfg.momentum_warmup_start, cfg.momentum_warmup_steps) == (0.99, 0.92, 1500)
    assert cfg.row_normalize and (cfg.beta1, cfg.beta2, cfg.adam_eps) == (0.9, 0.95, 1e-8)
    model = GPTConfig(
        num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, components=(SkipGatesConfig(),)
    ).build(64)
    opt = cfg.build(model)
    tok = opt.optimizers["adam_tok"].param_groups[0]
    scalar = opt.optimizers["adam_scalar"].param_groups[0]
    assert type(opt.optimizers["adam_tok"]).__name__ == "AdamW" and tok["weight_decay"] == 0.085
    assert scalar["weight_decay"] == 0.02 and scalar["lr"] == 0.02
    names = {id(p): n for n, p in model.named_parameters()}
    assert {"skip_weights", "skip_gates.logit"} <= {names[id(p)] for p in scalar["params"]}
    muon_group = opt.optimizers["muon"].param_groups[0]
    assert muon_group["row_normalize"] and muon_group["weight_decay"] == 0.095
    assert any("row_normalize:True" in line for line in opt.describe())


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="muon.embed_weight_decay"):
        MuonConfig(embed_weight_decay=-0.1)
    with pytest.raises(ConfigError, match="muon.row_normalize"):
        MuonConfig(row_normalize="yes")
