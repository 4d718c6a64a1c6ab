"""Tests of the Muon + Adam optimizer set (plugins/optim/muon.py)."""

from __future__ import annotations

import gc
import importlib
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from harness.api.errors import ConfigError
from harness.api.registry import Registry
from plugins.optim import muon
from plugins.optim.muon import MuonConfig, momentum_at, newton_schulz5


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class ToyBlock(nn.Module):
    """Upstream-named block parameters: matrices, vectors, a 2-D control tensor."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.c_q = nn.Linear(d, d, bias=False)
        self.attn.c_k = nn.Linear(d, d // 2, bias=False)
        self.attn.q_gain = nn.Parameter(torch.full((2,), 1.5))
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(d, 2 * d, bias=False)  # tall: rows/cols = 2
        self.mlp.proj = nn.Linear(2 * d, d, bias=False)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))


class ToyGPT(nn.Module):
    """A 2-layer GPT-like parameter layout, independent of the gpt plugin."""

    def __init__(self, d: int = 8, vocab: int = 16, tied: bool = True) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(ToyBlock(d) for _ in range(2))
        self.skip_weights = nn.Parameter(torch.ones(1, d))
        self.extra = nn.Linear(d, d, bias=False)  # 2-D but outside blocks -> scalar Adam
        self.frozen = nn.Parameter(torch.zeros(3), requires_grad=False)
        self.lm_head = None if tied else nn.Linear(d, vocab, bias=False)


def toy(seed: int = 0, tied: bool = True) -> ToyGPT:
    torch.manual_seed(seed)
    return ToyGPT(tied=tied)


def fake_grads(model: nn.Module, step: int) -> None:
    gen = torch.Generator().manual_seed(1000 + step)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=gen)


def names_by_optimizer(opt_set: muon.MuonOptimizerSet, model: nn.Module) -> dict[str, set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {
        k: {name_of[id(p)] for g in o.param_groups for p in g["params"]}
        for k, o in opt_set.optimizers.items()
    }


def test_routing_tied():
    model = toy()
    opt = MuonConfig().build(model)
    groups = names_by_optimizer(opt, model)
    matrices = {
        f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.c_q", "attn.c_k", "mlp.fc", "mlp.proj")
    }
    scalars = {f"blocks.{i}.{m}" for i in range(2) for m in ("attn.q_gain", "attn_scale", "resid_mix")}
    assert groups == {
        "adam_tok": {"tok_emb.weight"},
        "muon": matrices,
        "adam_scalar": scalars | {"skip_weights", "extra.weight"},
    }
    everything = [n for names in groups.values() for n in names]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(everything) == sorted(trainable)
    lrs = {k: [g["lr"] for g in o.param_groups] for k, o in opt.optimizers.items()}
    assert lrs == {"adam_tok": [0.05], "muon": [0.04], "adam_scalar": [0.04]}
    assert type(opt.optimizers["adam_tok"]) is torch.optim.Adam
    assert opt.optimizers["adam_tok"].defaults["betas"] == (0.9, 0.95)
    assert len(opt.describe()) == 3 and "optimizer:muon" in opt.describe()[1]


def test_routing_untied_and_adamw():
    model = toy(tied=False)
    opt = MuonConfig(adam_weight_decay=0.04).build(model)
    groups = names_by_optimizer(opt, model)
    assert groups["adam_tok"] == {"tok_emb.weight"} and groups["adam_head"] == {"lm_head.weight"}
    assert opt.optimizers["adam_tok"].param_groups[0]["base_lr"] == 0.6
    assert opt.optimizers["adam_head"].param_groups[0]["base_lr"] == 0.008
    assert isinstance(opt.optimizers["adam_scalar"], torch.optim.AdamW)
    assert opt.optimizers["adam_scalar"].param_groups[0]["weight_decay"] == 0.04


def _with_singular_values(rows: int, cols: int, s: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(s), generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(s), generator=gen, dtype=torch.float64))
    return u @ torch.diag(s) @ v.T, u, v


@pytest.mark.parametrize("rows, cols", [(32, 32), (64, 16), (16, 64), (48, 40)])
def test_newton_schulz_orthogonalises(rows, cols):
    k = min(rows, cols)
    s = torch.logspace(0, -1, k, dtype=torch.float64)  # condition number 10
    g, u, v = _with_singular_values(rows, cols, s, seed=rows + cols)
    out = newton_schulz5(g.float()).double()
    assert out.shape == (rows, cols) and newton_schulz5(g.float()).dtype == torch.bfloat16
    # Hand reference: the quintic acts on each normalised singular value independently.
    x = s / s.norm()
    for _ in range(5):
        x = 3.4445 * x - 4.7750 * x**3 + 2.0315 * x**5
    sv = torch.linalg.svdvals(out)
    assert 0.5 <= sv.min() and sv.max() <= 1.5
    assert torch.allclose(sv, x.sort(descending=True).values, atol=0.03)
    # ...and keeps the singular vectors: out ~ U diag(p(s)) V^T.
    assert (out - u @ torch.diag(x) @ v.T).norm() / out.norm() < 0.06  # bf16 iteration: ~3%


def test_momentum_warmup():
    cfg = MuonConfig()
    # Upstream uses its 0-based counter: the k-th step uses frac = (k - 1) / 500.
    assert math.isclose(momentum_at(1, cfg), 0.85)
    assert math.isclose(momentum_at(250, cfg), 0.85 + 0.10 * 249 / 500)
    assert math.isclose(momentum_at(500, cfg), 0.85 + 0.10 * 499 / 500)
    assert math.isclose(momentum_at(501, cfg), 0.95)
    assert math.isclose(momentum_at(1000, cfg), 0.95)
    assert momentum_at(7, MuonConfig(momentum_warmup_steps=0)) == 0.95
    model = toy()
    opt = cfg.build(model)
    fake_grads(model, 1)
    opt.step(250, 1.0)
    assert math.isclose(opt.optimizers["muon"].param_groups[0]["momentum"], 0.85 + 0.10 * 249 / 500)


def _quintic64(u: torch.Tensor) -> torch.Tensor:
    """The NS5 formula of TECHNIQUES §4 in float64, never transposing (same result in exact math)."""
    x = u / u.norm()
    for _ in range(5):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x


def _reference_muon(
    w: torch.Tensor, grads: list[torch.Tensor], lrs: list[float], mus: list[float], wd: float
) -> torch.Tensor:
    """TECHNIQUES §4 Muon (Nesterov, sqrt(rows/cols) scale, decoupled decay) in float64."""
    w, buf = w.double().clone(), torch.zeros_like(w, dtype=torch.float64)
    scale = math.sqrt(max(1.0, w.shape[0] / w.shape[1]))
    for g, lr, mu in zip(grads, lrs, mus, strict=True):
        g = g.double()
        buf = mu * buf + g
        w = w * (1 - lr * wd) - lr * scale * _quintic64(g + mu * buf)
    return w


@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_muon_update_matches_reference(wd):
    model = toy()
    opt = MuonConfig(weight_decay=wd).build(model)
    p = model.blocks[0].mlp.fc.weight  # 16 x 8: exercises the sqrt(2) factor
    w0 = p.detach().clone()
    grads, lrs, mus = [], [], []
    for step, lr_scale in ((1, 1.0), (2, 0.5), (300, 0.25)):
        fake_grads(model, step)
        grads.append(p.grad.clone())
        lrs.append(0.04 * lr_scale)
        mus.append(momentum_at(step, MuonConfig()))
        opt.step(step, lr_scale)
        assert all(
            g["lr"] == g["base_lr"] * lr_scale for o in opt.optimizers.values() for g in o.param_groups
        )
    ref = _reference_muon(w0, grads, lrs, mus, wd)
    # The plugin iterates in bf16 (~3% off the float64 iteration), so compare the update.
    delta, ref_delta = (p.detach().double() - w0), (ref - w0)
    assert (delta - ref_delta).norm() < 0.06 * ref_delta.norm()


def test_least_squares_loss_decreases():
    torch.manual_seed(0)
    model = toy()
    x = torch.randn(64, 8)
    target = x @ (0.5 * torch.randn(8, 8))
    opt = MuonConfig(matrix_lr=0.05, scalar_lr=0.02).build(model)

    def loss_fn() -> torch.Tensor:
        blk = model.blocks[0]
        h = blk.attn.c_q(x) * blk.attn_scale
        return (h - target).pow(2).mean()

    losses = []
    for step in range(1, 101):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step(step, 1.0 - step / 101)  # linear warmdown, as the harness schedule does
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_roundtrip_restores_updates():
    model = toy()
    opt = MuonConfig().build(model)
    for step in (1, 2, 3):
        fake_grads(model, step)
        opt.step(step, 1.0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    snapshot = opt.state_dict()

    def run_two_more(o: muon.MuonOptimizerSet) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(params[n])
        for step in (4, 5):
            fake_grads(model, step)
            o.step(step, 0.5)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    first = run_two_more(opt)
    opt.load_state_dict(snapshot)
    second = run_two_more(opt)
    opt.load_state_dict(snapshot)  # the snapshot was not mutated by the runs above
    third = run_two_more(opt)
    fresh = run_two_more(MuonConfig().build(model))
    for n in first:
        assert torch.equal(first[n], second[n]) and torch.equal(first[n], third[n]), n
    assert not all(torch.equal(first[n], fresh[n]) for n in first)  # the state matters
    with pytest.raises(ConfigError, match="adam_tok"):
        opt.load_state_dict({"muon": snapshot["muon"]})


def _run_steps(model: nn.Module, opt: muon.MuonOptimizerSet) -> None:
    for step, scale in ((1, 1.0), (2, 0.7), (3, 0.3)):
        fake_grads(model, step)  # identical on every rank, as after DDP averaging
        opt.step(step, scale)


def _dist_worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    # Import torch._dynamo before the group exists. Optimizer.step imports it lazily, and it
    # pulls in torch.distributed.nn.functional, whose defaults `group=group.WORLD` are evaluated
    # at import: imported after init_process_group they capture the live gloo group, so
    # destroy_process_group cannot free it and its worker threads outlive the worker. A worker
    # thread still dropping the last all_reduce's tensor then needs the GIL while the
    # interpreter finalizes, and the process aborts ("terminate called without an active
    # exception"). Imported first, those defaults are None and the group dies (threads joined)
    # in destroy_process_group below.
    importlib.import_module("torch._dynamo")

    # A file rendezvous: no TCP port that another process could take between pick and bind.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=2)
    finished = False
    try:
        model = toy()
        opt = MuonConfig(weight_decay=0.1).build(model)
        _run_steps(model, opt)
        muon_opt = opt.optimizers["muon"]
        owned = [i for i, p in enumerate(muon_opt.param_groups[0]["params"]) if p in muon_opt.state]
        arrays = {n: p.detach().numpy() for n, p in model.named_parameters()}
        finished = True
    finally:
        # As harness.pipeline.distributed.shutdown: after a clean finish meet the peer so no
        # rank tears its transport down while the other still talks to it (skipped after a
        # failure: the peer may never arrive), collect garbage, then destroy the group.
        if finished:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
    # Written only once this rank left the group cleanly; the parent reads it after both exit.
    np.savez(f"{out_dir}/rank{rank}.npz", __owned__=np.array(owned), **arrays)


@pytest.mark.dist
def test_distributed_matches_single_process(tmp_path):
    mp.spawn(_dist_worker, args=(str(tmp_path),), nprocs=2, join=True)
    model = toy()
    opt = MuonConfig(weight_decay=0.1).build(model)
    _run_steps(model, opt)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    n_muon = len(opt.optimizers["muon"].param_groups[0]["params"])
    for r, data in enumerate(ranks):
        assert list(data["__owned__"]) == list(range(r, n_muon, 2))  # param i kept by rank i mod 2
    for n, p in model.named_parameters():
        assert np.array_equal(ranks[0][n], ranks[1][n]), n
        assert np.array_equal(ranks[0][n], p.detach().numpy()), n


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(matrix_lr=-1.0), "matrix_lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(backend_steps=-1), "backend_steps"),
        (dict(control_patterns="resid_mix"), "control_patterns"),
    ],
)
def test_bad_config_is_refused(overrides, field):
    with pytest.raises(ConfigError, match=field):
        MuonConfig(**overrides)


def test_registers_as_optimizer_muon():
    registry = Registry()
    muon.pg_register_components(registry=registry)
    assert registry.get("optimizer", "muon").config_cls is MuonConfig
