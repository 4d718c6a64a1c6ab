"""Conformance tests for architecture components (kind ``arch_component``), parametrized over
the registry like tests/conformance/test_components.py: registering a component gives it
these tests. Each one is switched on alone, with its defaults, in a tiny GPT deep enough for
the record defaults (12 layers: VE on 10-11, XSA on the last 4, recycled 3-4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.pipeline.plugin_manager import full_manager

REGISTRY = full_manager(entrypoints=False).registry
TINY = {"num_layers": 12, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2}
VOCAB = 64


def build(*components):
    torch.manual_seed(0)
    return REGISTRY.get("arch", "gpt").config_cls(**TINY, components=tuple(components)).build(VOCAB)


def randomize(model: torch.nn.Module) -> None:
    # Zero-initialised output projections would hide every component from the loss.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_components_are_registered():
    assert len(REGISTRY.names("arch_component")) >= 8


@pytest.mark.parametrize("name", REGISTRY.names("arch_component"))
def test_component_forward_backward_causal(name):
    cfg = REGISTRY.get("arch_component", name).config_cls()
    model = build(cfg)
    plain = build()
    assert set(dict(plain.named_parameters())) <= set(dict(model.named_parameters()))
    assert list(model.state_dict()) == [n for n, _ in model.named_parameters()]  # each tensor once
    randomize(model)
    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape == (2, 16, VOCAB) and torch.isfinite(logits).all()
    assert torch.allclose(model.logits(model.hidden(x)), logits)
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % VOCAB
    changed = model(y)
    assert torch.allclose(changed[:, :9], logits[:, :9], atol=1e-5), "a later token changed an earlier logit"
    assert not torch.allclose(changed[:, 9:], logits[:, 9:], atol=1e-3)
    F.cross_entropy(logits.reshape(-1, VOCAB), x.roll(-1, 1).reshape(-1)).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    added = [n for n in grads if n not in dict(plain.named_parameters())]
    assert not added or any(grads[n] is not None and grads[n].any() for n in added), (
        f"no gradient reaches {added}"
    )
    state = model.state_dict()
    plain.load_state_dict({k: state[k] for k in plain.state_dict()})
    assert not torch.allclose(model(x), plain(x), atol=1e-4), "switching the component on changed nothing"
