"""Conformance tests parametrized over the registry (timm's test_models.py pattern):
registering a component gives it these tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from harness.api.protocols import LanguageModel, QTensor
from harness.pipeline.plugin_manager import full_manager

REGISTRY = full_manager(entrypoints=False).registry
TINY_ARCH = {"num_layers": 2, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2}
VOCAB = 64


def tiny_arch_config(cls):
    """The Config with the tiny test shape applied to whichever of its fields exist."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in TINY_ARCH.items() if k in names})


def tiny_model():
    torch.manual_seed(0)
    return tiny_arch_config(REGISTRY.get("arch", "gpt").config_cls).build(VOCAB)


@pytest.mark.parametrize("name", REGISTRY.names("arch"))
def test_arch_forward_backward(name):
    torch.manual_seed(0)
    model = tiny_arch_config(REGISTRY.get("arch", name).config_cls).build(VOCAB)
    x = torch.randint(0, VOCAB, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, VOCAB)
    assert torch.allclose(model.logits(model.hidden(x)), logits)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), x.roll(-1, 1).reshape(-1))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", REGISTRY.names("arch"))
def test_arch_implements_the_language_model_protocol(name):
    """Every architecture exposes what the harness reads without probing: depth and width for
    MFU, its header lines, and hidden/logits for the sliding window's fast path."""
    model = tiny_arch_config(REGISTRY.get("arch", name).config_cls).build(VOCAB)
    assert isinstance(model, LanguageModel)
    assert isinstance(model.attention_layers, int) and model.attention_layers >= 0
    assert isinstance(model.width, int) and model.width > 0
    assert all(isinstance(line, str) for line in model.describe())


@pytest.mark.parametrize("name", REGISTRY.names("optimizer"))
def test_optimizer_lowers_a_toy_loss(name):
    model = tiny_model()
    opt = REGISTRY.get("optimizer", name).config_cls().build(model)
    x = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    y = x.roll(-1, 1)

    def loss_fn():
        return F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))

    first = loss_fn().item()
    for step in range(1, 16):
        opt.zero_grad()
        loss_fn().backward()
        opt.step(step, 1.0)
    assert loss_fn().item() < first - 0.1


@pytest.mark.parametrize("name", REGISTRY.names("compressor"))
def test_compressor_roundtrip(name):
    codec = REGISTRY.get("compressor", name).config_cls().build()
    data = bytes(range(256)) * 50 + b"\x00" * 1000
    packed = codec.compress(data)
    assert codec.decompress(packed, max_output_size=len(data)) == data
    assert len(packed) < len(data)


@pytest.mark.parametrize("name", REGISTRY.names("quantizer"))
def test_quantizer_roundtrip_within_tolerance(name):
    state = {k: v.detach().clone() for k, v in tiny_model().state_dict().items()}
    state["big.weight"] = torch.randn(300, 256) * 0.05  # large enough to be quantized
    quant = REGISTRY.get("quantizer", name).config_cls().build()
    packed = quant.quantize(state)
    assert set(packed) == set(state)
    assert all(isinstance(q, QTensor) for q in packed.values())
    back = quant.dequantize(packed)
    for key, original in state.items():
        assert back[key].shape == original.shape and back[key].dtype == original.dtype, key
        err = (back[key].float() - original.float()).abs().max().item()
        assert err <= 0.05 * max(original.float().abs().max().item(), 1e-3) + 1e-3, (key, err)


@pytest.mark.parametrize("cname", REGISTRY.names("compressor"))
@pytest.mark.parametrize("qname", REGISTRY.names("quantizer"))
def test_quantizer_compressor_pair_roundtrips_through_the_artifact(qname, cname, tmp_path):
    """Through the file: exactly what the quantizer alone gives back (the container and codec
    are lossless), and within quantization error of the original."""
    from harness.pipeline.artifact import config_to_json, load_state_dict, write_artifact

    state = {k: v.detach().clone() for k, v in tiny_model().state_dict().items()}
    state["big.weight"] = torch.randn(300, 256) * 0.05
    qcfg = REGISTRY.get("quantizer", qname).config_cls()
    ccfg = REGISTRY.get("compressor", cname).config_cls()
    quant = qcfg.build()
    direct = quant.dequantize(quant.quantize(state))
    path = tmp_path / "a.pgolf"
    write_artifact(
        path,
        quant.quantize(state),
        quantizer_name=qname,
        quantizer_config=config_to_json(qcfg),
        compressor=ccfg.build(),
        compressor_name=cname,
        compressor_config=config_to_json(ccfg),
    )
    loaded, manifest = load_state_dict(path, REGISTRY)
    assert manifest["quantizer"]["name"] == qname and manifest["compressor"]["name"] == cname
    assert set(loaded) == set(state)
    for key in state:
        assert torch.equal(loaded[key], direct[key]), key
        assert loaded[key].dtype == state[key].dtype and loaded[key].shape == state[key].shape


@pytest.mark.parametrize("name", REGISTRY.names("adapter"))
def test_adapter_scores_every_target_once_and_only_after_its_chunk(name):
    """Any adapter, in the harness's walk: every target scored once, chunk 0 scored by the
    unadapted model, and the model changed afterwards only through its weights."""
    from harness.pipeline.adaptation import evaluate_adaptive
    from harness.pipeline.bpb import ByteLUTs
    from harness.pipeline.eval import evaluate_sliding

    luts = ByteLUTs(
        base_bytes=torch.ones(VOCAB, dtype=torch.int32),
        has_leading_space=torch.zeros(VOCAB, dtype=torch.bool),
        is_boundary=torch.zeros(VOCAB, dtype=torch.bool),
        vocab_size=VOCAB,
    )
    tokens = torch.randint(0, VOCAB, (97,), generator=torch.Generator().manual_seed(4))
    walk = dict(window=16, stride=8, batch_seqs=4, device="cpu")
    plain = evaluate_sliding(tiny_model(), tokens, luts, **walk)
    model = tiny_model()
    out = evaluate_adaptive(
        model, REGISTRY.get("adapter", name).config_cls().build(), tokens, luts, chunk_tokens=32, **walk
    )
    assert (out.result.tokens, out.result.bytes) == (plain.tokens, plain.bytes) == (96, 96)
    first = evaluate_sliding(tiny_model(), tokens[:33], luts, **walk)
    assert out.chunks[0].loss_sum == pytest.approx(first.loss_sum, rel=1e-6)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tiny_model().named_parameters()]
