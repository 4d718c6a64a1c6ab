"""Tests of the baseline GPT architecture plugin (plugins/arch/gpt.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.api.errors import ConfigError
from harness.api.protocols import LanguageModel, is_control_tensor
from harness.api.registry import Registry
from plugins.arch import gpt
from plugins.arch.gpt import GPTConfig, apply_rotary, rotary_tables
from plugins.arch.upstream_numerics import to_baseline_dtypes

TINY = dict(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
VOCAB = 256


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(seed: int = 0, **overrides) -> gpt.GPT:
    torch.manual_seed(seed)
    return GPTConfig(**{**TINY, **overrides}).build(VOCAB)


def randomize(model: torch.nn.Module, seed: int = 1, std: float = 0.3) -> None:
    """Give every parameter (zero-initialised projections included) a random value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def ids(batch: int = 2, seq: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_default_param_count_matches_upstream_log():
    # Upstream baseline log: model_params:17059912.
    with torch.device("meta"):
        model = GPTConfig().build(1024)
    assert model.num_params() == 17_059_912
    with torch.device("meta"):
        untied = GPTConfig(tie_embeddings=False).build(1024)
    assert untied.num_params() == 17_059_912 + 1024 * 512


def test_tiny_param_count_by_hand():
    d, kv, hid, L = 64, 2 * 16, 128, 2
    per_block = d * d + 2 * kv * d + d * d + 4 + 2 * hid * d + d + d + 2 * d
    assert tiny().num_params() == VOCAB * d + L * per_block + 1 * d


def test_upstream_names_and_control_tensors():
    names = {n for n, _ in tiny().named_parameters()}
    block0 = {n for n in names if n.startswith("blocks.0.")}
    assert block0 == {
        "blocks.0.attn.c_q.weight",
        "blocks.0.attn.c_k.weight",
        "blocks.0.attn.c_v.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.attn.q_gain",
        "blocks.0.mlp.fc.weight",
        "blocks.0.mlp.proj.weight",
        "blocks.0.attn_scale",
        "blocks.0.mlp_scale",
        "blocks.0.resid_mix",
    }
    assert "tok_emb.weight" in names and "skip_weights" in names and not any("lm_head" in n for n in names)
    control = {n.split(".")[-1] for n in names if is_control_tensor(n)}
    assert control == {"attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights"}


def test_init_values():
    model = tiny()
    emb = model.tok_emb.weight
    assert abs(emb.std().item() - 0.005) < 0.0005
    blk = model.blocks[1]
    assert torch.equal(blk.resid_mix[0], torch.ones(64)) and torch.equal(blk.resid_mix[1], torch.zeros(64))
    assert torch.equal(blk.attn_scale, torch.ones(64)) and torch.equal(blk.mlp_scale, torch.ones(64))
    assert torch.equal(blk.attn.q_gain, torch.full((4,), 1.5))
    assert torch.equal(model.skip_weights, torch.ones(1, 64))
    for b in model.blocks:
        assert not b.attn.proj.weight.any() and not b.mlp.proj.weight.any()
        assert b.attn.c_q.weight.abs().sum() > 0 and b.mlp.fc.weight.abs().sum() > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_blocks_are_identity_at_init():
    # Zero output projections make every block return its input; U-Net skips only rescale
    # the stream, which the final RMSNorm removes (eps-free reference: both norms' eps
    # effects cancel in the ratio).
    model = tiny(num_layers=4)
    x = ids()
    emb = model.tok_emb.weight[x]
    expected = emb / emb.pow(2).mean(-1, keepdim=True).sqrt()
    assert torch.allclose(model.hidden(x), expected, atol=1e-5)


def test_forward_shape_and_equals_logits_of_hidden():
    model = tiny()
    randomize(model)
    x = ids(batch=3, seq=10)
    out = model(x)
    assert out.shape == (3, 10, VOCAB)
    h = model.hidden(x)
    assert h.shape == (3, 10, 64)
    assert torch.equal(out, model.logits(h))
    assert isinstance(model, LanguageModel) and model.vocab_size == VOCAB


def test_hidden_is_rms_normalised():
    model = tiny()
    randomize(model)
    h = model.hidden(ids())
    assert torch.allclose(h.pow(2).mean(-1), torch.ones(2, 16), atol=1e-4)


@pytest.mark.parametrize("t", [0, 7, 14])
def test_causality(t):
    model = tiny()
    randomize(model)
    x = ids(seq=16)
    y = x.clone()
    y[:, t + 1 :] = (y[:, t + 1 :] + 1 + torch.arange(16 - t - 1)) % VOCAB
    a, b = model(x), model(y)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :], atol=1e-3)


def test_softcap_bounds_logits():
    model = tiny()
    with torch.no_grad():
        model.tok_emb.weight.normal_(0.0, 50.0)
    z = model(ids())
    assert z.abs().max() <= 30.0
    assert z.abs().max() > 29.0  # the cap is actually exercised
    raw = F.linear(model.hidden(ids()), model.tok_emb.weight)
    assert torch.allclose(z, 30.0 * torch.tanh(raw / 30.0), atol=1e-4)


def test_untied_head_is_separate_and_zero_init():
    model = tiny(tie_embeddings=False)
    assert model.lm_head is not None and not model.lm_head.weight.any()
    assert model.tok_emb.weight.std() > 0.5  # default N(0, 1), not the tied 0.005 init
    assert not model(ids()).any()  # zero head -> zero logits


def test_gqa_fallback_matches_native():
    model = tiny()
    randomize(model)
    x = ids()
    native = model(x)
    for block in model.blocks:
        block.attn.native_gqa = False
    assert torch.allclose(native, model(x), atol=1e-5)


def test_rope_is_relative_and_norm_preserving():
    cos, sin = rotary_tables(40, 16, 10000.0, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    rq = apply_rotary(q.expand(1, 1, 40, 16), cos, sin)[0, 0]
    rk = apply_rotary(k.expand(1, 1, 40, 16), cos, sin)[0, 0]
    assert torch.allclose(rq[0], q)  # position 0 is not rotated
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(40), atol=1e-5)
    assert torch.allclose(rq[9] @ rk[3], rq[36] @ rk[30], atol=1e-4)
    # Pair (0, 8) turns by angle pos * base**0; pair (7, 15) by pos * base**(-14/16).
    angle = 5 * 10000.0 ** (-14 / 16)
    assert math.isclose(cos[0, 0, 5, 7].item(), math.cos(angle), abs_tol=1e-6)
    assert math.isclose(
        rq[5, 7].item(), q[7].item() * math.cos(angle) + q[15].item() * math.sin(angle), abs_tol=1e-5
    )


def test_loss_decreases_with_adam():
    model = tiny()
    seq = ids(batch=2, seq=33, seed=3)
    x, y = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x).float().reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isclose(losses[0], math.log(VOCAB), rel_tol=0.02)  # near-uniform at init
    assert losses[-1] < 0.5 * losses[0]


def test_bf16_autocast():
    model = tiny()
    randomize(model, std=0.1)
    x = ids()
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
    F.cross_entropy(out.float().reshape(-1, VOCAB), x.reshape(-1)).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_baseline_dtypes_keep_only_embedding_bf16():
    model = to_baseline_dtypes(tiny())
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes.pop("tok_emb.weight") == torch.bfloat16
    assert set(dtypes.values()) == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(ids())).all()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(model_dim=66), "num_heads"),
        (dict(num_kv_heads=3), "num_kv_heads"),
        (dict(model_dim=12, num_heads=4), "RoPE"),
        (dict(logit_softcap=0.0), "logit_softcap"),
        (dict(mlp_mult=0.0), "mlp_mult"),
        (dict(num_layers=0), "num_layers"),
    ],
)
def test_bad_config_is_refused(overrides, field):
    with pytest.raises(ConfigError, match=field):
        GPTConfig(**{**TINY, **overrides})


def test_bad_vocab_is_refused():
    with pytest.raises(ConfigError, match="vocab_size"):
        GPTConfig(**TINY).build(0)


def test_registers_as_arch_gpt():
    registry = Registry()
    gpt.pg_register_components(registry=registry)
    assert registry.get("arch", "gpt").config_cls is GPTConfig
