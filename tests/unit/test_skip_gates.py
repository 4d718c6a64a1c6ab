"""Sigmoid-gated U-Net skips (plugins/arch/skip_gates.py), against the PR #1493 record's rule:
with s = skip_weights[i]·skip and g = σ(γ_i), x ← lerp(s, x, g); γ starts at zeros (g = 0.5),
one row per skip (8 for its 17-pass loop over 11 layers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.api.errors import ConfigError
from plugins.arch.gpt import GPTConfig
from plugins.arch.recycled_core import RecycledCoreConfig
from plugins.arch.skip_gates import SkipGatesConfig

VOCAB = 32


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def build(*components, num_layers: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    model = GPTConfig(
        num_layers=num_layers, model_dim=32, num_heads=2, num_kv_heads=1, components=components
    ).build(VOCAB)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("skip_gates"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def test_gates_start_at_the_records_init_one_row_per_skip():
    loop = RecycledCoreConfig(layers=(3, 4, 5), repeats=2, mode="loop", modulation=False)
    with torch.device("meta"):
        record = GPTConfig(num_layers=11, components=(loop, SkipGatesConfig())).build(8192)
    assert record.skip_gates.logit.shape == (8, 512)
    plain = build(SkipGatesConfig(), num_layers=4)
    assert plain.skip_gates.logit.shape == (2, 32)
    assert torch.equal(plain.skip_gates.logit, torch.zeros(2, 32))
    assert torch.equal(torch.sigmoid(plain.skip_gates.logit), torch.full((2, 32), 0.5))


def unrolled(model, x, gates):
    """The record's decoder merge written out for a 4-layer model (2 encoder, 2 decoder)."""
    h = F.rms_norm(model.tok_emb(x), (32,))
    x0, (cos, sin), skips = h, model.rotary(x.size(1), x.device), []
    for layer in (0, 1):
        h = model.blocks[layer](h, x0, cos, sin)
        skips.append(h)
    for i, layer in enumerate((2, 3)):
        s = model.skip_weights[i] * skips.pop()
        g = torch.sigmoid(gates[i])
        h = g * h + (1 - g) * s
        h = model.blocks[layer](h, x0, cos, sin)
    return F.rms_norm(h, (32,))


def test_forward_is_the_records_lerp_and_gates_learn():
    model = build(SkipGatesConfig())
    x = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model.hidden(x), unrolled(model, x, torch.zeros(2, 32)), atol=1e-5)
    with torch.no_grad():
        model.skip_gates.logit.copy_(torch.randn(2, 32, generator=torch.Generator().manual_seed(4)))
    assert torch.allclose(model.hidden(x), unrolled(model, x, model.skip_gates.logit), atol=1e-5)
    model(x).square().mean().backward()
    assert model.skip_gates.logit.grad is not None and model.skip_gates.logit.grad.abs().sum() > 0


def test_a_shut_gate_is_the_plain_model_without_skips():
    gated = build(SkipGatesConfig(init=30.0))  # σ(30) = 1 - 1e-13: the stream alone
    plain = build()
    with torch.no_grad():
        plain.skip_weights.zero_()
    x = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(gated(x), plain(x), atol=1e-5)


def test_non_finite_init_is_refused():
    with pytest.raises(ConfigError, match="skip_gates.init"):
        GPTConfig(num_layers=4, components=(SkipGatesConfig(init=float("inf")),))
