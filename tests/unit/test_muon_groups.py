"""Tests of the records' optimizer groups in plugins/optim/muon.py: name routing and its
precedence, the T1 and P1573 presets (docs/techniques.md §4.1), AdamW and Muon weight decay
against hand computations, the 0.92 -> 0.99 momentum warm-up, and bf16 embedding tables."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.api.errors import ConfigError
from plugins.optim.muon import MuonConfig, group_of, momentum_at, p1573_optimizer, t1_optimizer

D, H, KV, VOCAB, BUCKETS, SMALL = 16, 4, 8, 32, 24, 8  # toy widths; the names are the records'
LAYERS = 2


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _vec(value: float, n: int = D) -> nn.Parameter:
    return nn.Parameter(torch.full((n,), value))


def _block(p1573: bool) -> nn.Module:
    """A block with the baseline names, plus P1573's value-residual lambda and attention gate."""
    blk = nn.Module()
    blk.attn = nn.Module()
    blk.attn.c_q = nn.Linear(D, D, bias=False)
    blk.attn.c_k = nn.Linear(D, KV, bias=False)
    blk.attn.c_v = nn.Linear(D, KV, bias=False)
    blk.attn.proj = nn.Linear(D, D, bias=False)
    blk.attn.q_gain = _vec(1.5, H)
    blk.mlp = nn.Module()
    blk.mlp.fc = nn.Linear(D, 3 * D, bias=False)
    blk.mlp.proj = nn.Linear(3 * D, D, bias=False)
    blk.attn_scale = _vec(1.0)
    blk.mlp_scale = _vec(1.0)
    blk.resid_mix = nn.Parameter(torch.stack((torch.ones(D), torch.zeros(D))))
    if p1573:
        blk.attn.vr_lambda = _vec(0.5, 2)
        blk.attn.attn_gate = nn.Linear(D, H)  # weight H x D: 2-D and inside a block
    return blk


def _bigram() -> nn.Module:
    bigram = nn.Module()
    bigram.embed = nn.Embedding(BUCKETS, SMALL)
    bigram.proj = nn.Linear(SMALL, D, bias=False)  # weight D x SMALL, as 512 x 128
    bigram.scale = nn.Parameter(torch.tensor(0.05))
    return bigram


def toy_record(p1573: bool, seed: int = 0) -> nn.Module:
    """T1's (or P1573's) top-level parameter names, tiny and independent of the gpt plugin."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.tok_emb = nn.Embedding(VOCAB, D)
    model.bigram = _bigram()
    model.smear = nn.Module()
    model.smear.gate = nn.Parameter(torch.zeros(D))
    model.skip_weights = nn.Parameter(torch.ones(LAYERS // 2, D))  # 2-D control tensor
    model.blocks = nn.ModuleList(_block(p1573) for _ in range(LAYERS))
    if p1573:
        model.ve_shared = nn.Module()
        model.ve_shared.embed = nn.Embedding(VOCAB, SMALL)
        model.ve_shared.proj = nn.Linear(SMALL, KV, bias=False)  # weight KV x SMALL, as 256 x 128
        model.ve_shared.scale = nn.Parameter(torch.tensor(0.1))
        model.ve_layer_scales = nn.Parameter(torch.ones(2, 1))  # 2-D: only its name routes it
        model.recycle = nn.ModuleList(nn.Module() for _ in range(2))
        for mod in model.recycle:
            mod.a, mod.b = _vec(1.0), _vec(0.0)
    return model


def placement(opt_set, model: nn.Module) -> dict[str, tuple[str, float, float]]:
    """Parameter name -> (optimizer key, base lr, weight decay)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for key, opt in opt_set.optimizers.items():
        for group in opt.param_groups:
            for p in group["params"]:
                out[name_of[id(p)]] = (key, group["base_lr"], group.get("weight_decay", 0.0))
    return out


BLOCK_MATRICES = (
    "attn.c_q.weight",
    "attn.c_k.weight",
    "attn.c_v.weight",
    "attn.proj.weight",
    "mlp.fc.weight",
    "mlp.proj.weight",
)
BLOCK_SCALARS = ("attn.q_gain", "attn_scale", "mlp_scale", "resid_mix")


def _per_block(suffixes: tuple[str, ...]) -> set[str]:
    return {f"blocks.{i}.{s}" for i in range(LAYERS) for s in suffixes}


def test_t1_preset_routes_every_parameter():
    model = toy_record(p1573=False)
    opt = t1_optimizer().build(model)
    expected = {}
    for name in ("tok_emb.weight", "bigram.embed.weight"):
        expected[name] = ("adam_tok", 0.03, 0.04)
    for name in _per_block(BLOCK_MATRICES) | {"bigram.proj.weight"}:
        expected[name] = ("muon", 0.02, 0.04)
    for name in _per_block(BLOCK_SCALARS) | {"skip_weights", "smear.gate", "bigram.scale"}:
        expected[name] = ("adam_scalar", 0.02, 0.04)
    assert placement(opt, model) == expected
    assert set(expected) == {n for n, _ in model.named_parameters()}
    assert isinstance(opt.optimizers["adam_tok"], torch.optim.AdamW)
    assert isinstance(opt.optimizers["adam_scalar"], torch.optim.AdamW)
    assert opt.optimizers["muon"].param_groups[0]["momentum"] == pytest.approx(0.92)
    assert "weight_decay:0.04" in opt.describe()[1]


def test_p1573_preset_routes_every_parameter():
    model = toy_record(p1573=True)
    opt = p1573_optimizer().build(model)
    expected = {}
    for name in ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"):
        expected[name] = ("adam_tok", 0.035, 0.04)
    for name in _per_block(BLOCK_MATRICES):
        expected[name] = ("muon", 0.025, 0.04)
    scalars = _per_block(BLOCK_SCALARS + ("attn.attn_gate.weight", "attn.attn_gate.bias", "attn.vr_lambda"))
    scalars |= {"skip_weights", "smear.gate", "bigram.scale", "bigram.proj.weight"}
    scalars |= {"ve_shared.proj.weight", "ve_shared.scale", "ve_layer_scales"}
    scalars |= {f"recycle.{k}.{ab}" for k in range(2) for ab in "ab"}
    for name in scalars:
        expected[name] = ("adam_scalar", 0.025, 0.04)
    assert placement(opt, model) == expected
    assert set(expected) == {n for n, _ in model.named_parameters()}


def test_routing_precedence():
    cfg = MuonConfig(
        token_patterns=("tok_emb", "shared"),
        muon_extra_patterns=("extra", "shared", "vec"),
        scalar_extra_patterns=("gate", "shared", "lm_head"),
    )
    mat, vec = torch.zeros(4, 4), torch.zeros(4)
    assert group_of("shared.weight", mat, cfg) == "tok"  # 1. tokens beat every other list
    assert group_of("lm_head.weight", mat, cfg) == "head"  # 2. head beats scalar_extra
    assert group_of("blocks.0.attn.gate.weight", mat, cfg) == "scalar"  # 3. beats "inside blocks"
    assert group_of("extra.gate.weight", mat, cfg) == "scalar"  # 3. beats muon_extra
    assert group_of("blocks.0.resid_mix", mat, cfg) == "scalar"  # 3. control names
    assert group_of("blocks.0.attn.c_q.bias", vec, cfg) == "scalar"  # 4. not 2-D
    assert group_of("blocks.0.attn.c_q.weight", mat, cfg) == "muon"  # 5. block matrix
    assert group_of("extra.proj.weight", mat, cfg) == "muon"  # 5. muon_extra outside blocks
    assert group_of("other.proj.weight", mat, cfg) == "scalar"  # 6. everything else
    with pytest.raises(ConfigError, match="muon_extra_patterns.*vec.scale"):
        group_of("vec.scale", vec, cfg)  # Muon cannot take a vector that was named for it
    base = MuonConfig()
    assert group_of("bigram.proj.weight", mat, base) == "scalar"  # baseline: outside blocks
    assert group_of("bigram.embed.weight", mat, base) == "scalar"


def test_adamw_decays_a_scalar_with_zero_grad():
    model = toy_record(p1573=True)
    opt = p1573_optimizer().build(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step(1, 0.5)
    lr = 0.025 * 0.5
    # Zero grad: Adam's moments stay 0, so only the decoupled decay p *= 1 - lr*wd moves p.
    for name in (
        "blocks.0.attn.q_gain",
        "blocks.1.resid_mix",
        "recycle.0.a",
        "bigram.scale",
        "ve_shared.proj.weight",
    ):
        got = dict(model.named_parameters())[name].detach()
        assert torch.allclose(got, before[name] * (1 - lr * 0.04), rtol=1e-6, atol=0), name
        assert not torch.equal(got, before[name]) or not before[name].any(), name
    # Plain Adam (the baseline) leaves the same parameter untouched.
    base_model = toy_record(p1573=True)
    base = MuonConfig().build(base_model)
    q0 = base_model.blocks[0].attn.q_gain.detach().clone()
    for p in base_model.parameters():
        p.grad = torch.zeros_like(p)
    base.step(1, 0.5)
    assert torch.equal(base_model.blocks[0].attn.q_gain.detach(), q0)


def test_muon_weight_decay_uses_the_scheduled_lr():
    model = toy_record(p1573=False)
    opt = t1_optimizer().build(model)
    w0 = model.blocks[0].mlp.fc.weight.detach().clone()
    p0 = model.bigram.proj.weight.detach().clone()
    for step, lr_scale in ((1, 0.5), (2, 0.25)):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # NS of a zero update is 0: only the decay acts
        opt.step(step, lr_scale)
    factor = (1 - 0.02 * 0.5 * 0.04) * (1 - 0.02 * 0.25 * 0.04)  # hand: 0.9996 * 0.9998
    assert math.isclose(factor, 0.99940008)
    assert torch.allclose(model.blocks[0].mlp.fc.weight.detach(), w0 * factor, rtol=1e-6, atol=0)
    assert torch.allclose(model.bigram.proj.weight.detach(), p0 * factor, rtol=1e-6, atol=0)


def test_t1_bigram_proj_gets_an_orthogonal_muon_update():
    model = toy_record(p1573=False)
    opt = t1_optimizer().build(model)
    p0 = model.bigram.proj.weight.detach().clone()  # 16 x 8: Muon scales by sqrt(2)
    gen = torch.Generator().manual_seed(3)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step(1, 1.0)
    lr = 0.02
    update = (p0 * (1 - lr * 0.04) - model.bigram.proj.weight.detach()) / (lr * math.sqrt(2))
    sv = torch.linalg.svdvals(update.double())
    # An Adam step would be ~sign(grad): singular values spread far outside NS5's band.
    assert 0.5 <= sv.min() and sv.max() <= 1.5, sv


@pytest.mark.parametrize("preset", [t1_optimizer, p1573_optimizer])
def test_momentum_warmup_092_to_099_over_1500(preset):
    cfg = preset()
    # k-th step uses frac = (k - 1) / 1500 (upstream's 0-based counter).
    assert math.isclose(momentum_at(1, cfg), 0.92)
    assert math.isclose(momentum_at(750, cfg), 0.92 + 0.07 * 749 / 1500)
    assert math.isclose(momentum_at(1500, cfg), 0.92 + 0.07 * 1499 / 1500)
    assert math.isclose(momentum_at(1501, cfg), 0.99)
    assert math.isclose(momentum_at(5000, cfg), 0.99)
    model = toy_record(p1573=preset is p1573_optimizer)
    opt = cfg.build(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step(750, 1.0)
    assert math.isclose(opt.optimizers["muon"].param_groups[0]["momentum"], 0.92 + 0.07 * 749 / 1500)


def test_bf16_embedding_tables_take_adamw_steps():
    model = toy_record(p1573=True)
    for table in (model.tok_emb, model.bigram.embed, model.ve_shared.embed):
        table.weight.data = table.weight.data.bfloat16()  # docs/techniques.md §2.3: tables stay bf16
    opt = p1573_optimizer().build(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([[1, 5, 5, 9]])
    loss = (
        model.tok_emb(ids).float().sum()
        + model.bigram.embed(ids).float().pow(2).sum()
        + model.ve_shared.embed(ids).float().mean()
    )
    loss.backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    opt.step(1, 1.0)
    lr, wd = 0.035, 0.04
    for name in ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"):
        p = dict(model.named_parameters())[name]
        state = opt.optimizers["adam_tok"].state[p]
        assert p.dtype == torch.bfloat16 and state["exp_avg"].dtype == torch.bfloat16
        # First AdamW step from zero moments: m_hat/sqrt(v_hat) = g/|g| = sign(g).
        expected = before[name].double() * (1 - lr * wd) - lr * torch.sign(grads[name].double())
        err = (p.detach().double() - expected).abs()
        # bf16 rounds each of the two updates to ~2^-9 of its operands' size.
        assert (err <= 2**-7 * (before[name].double().abs() + lr)).all(), (name, err.max())
        assert not torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(token_patterns="tok_emb"), "token_patterns"),
        (dict(muon_extra_patterns=("",)), "muon_extra_patterns"),
        (dict(scalar_extra_patterns=(3,)), "scalar_extra_patterns"),
    ],
)
def test_bad_patterns_are_refused(overrides, field):
    with pytest.raises(ConfigError, match=field):
        MuonConfig(**overrides)


def test_model_without_a_token_table_is_refused():
    with pytest.raises(ConfigError, match="token_patterns"):
        MuonConfig(token_patterns=("word_emb",)).build(toy_record(p1573=False))
