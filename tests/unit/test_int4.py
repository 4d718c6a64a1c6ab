"""The int4 quantizer (plugins/quant/int4.py): nibble packing against hand-written bytes,
the 15 levels (-8 never produced, refused on decode), the per-channel scale rule on
hand-computed channels (round half to even, unlike hexa), dequantize == fake_quant, the
artifact roundtrip, and late QAT through ``fake_quant``: the QAT forward equals the forward of
the model holding the dequantized int4 weights."""

from __future__ import annotations

import types

import pytest
import torch

from harness.api.errors import ArtifactError, ConfigError
from harness.api.protocols import QTensor
from harness.pipeline.artifact import load_state_dict
from harness.pipeline.plugin_manager import full_manager
from plugins.algorithms.late_qat import LateQATConfig, fake_quantize
from plugins.arch.conv_moe import ConvMoEConfig
from plugins.compress.zstd import ZstdConfig
from plugins.quant.int4 import Int4Config, pack_nibbles, quantize_channels, unpack_nibbles
from tests.artifact_files import write_with_configs

TINY = ConvMoEConfig(d_model=16, experts=3, trunk_layers=2)
CONV_WEIGHTS = {
    "ec.weight",
    "trunk.0.conv.weight",
    "trunk.1.conv.weight",
    "experts.0.weight",
    "experts.1.weight",
    "experts.2.weight",
    "router.weight",
    "readout.weight",
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return TINY.build(256)


def test_all_fifteen_levels_pack_to_hand_written_bytes():
    q = torch.arange(-7, 8)  # 15 codes: nibbles 1..15, odd tail padded with 8
    packed = pack_nibbles(q)
    assert packed.tolist() == [0x21, 0x43, 0x65, 0x87, 0xA9, 0xCB, 0xED, 0x8F]
    assert torch.equal(unpack_nibbles(packed, 15), q.to(torch.int8))


@pytest.mark.parametrize("count", [1, 2, 3, 14, 15, 101])
def test_pack_unpack_roundtrip_any_length(count):
    q = torch.randint(-7, 8, (count,), generator=torch.Generator().manual_seed(count))
    packed = pack_nibbles(q)
    assert packed.dtype == torch.uint8 and packed.numel() == (count + 1) // 2
    if count % 2:
        assert int(packed[-1]) >> 4 == 8  # the v0.2 padding nibble
    assert torch.equal(unpack_nibbles(packed, count), q.to(torch.int8))


def test_minus_eight_is_never_produced_and_refused_on_decode():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(64, 48, generator=gen)
    w[:, 0] = -w.abs().amax(dim=1) * 1.0001  # every channel's extreme is negative
    q, _ = quantize_channels(w)
    assert int(q.min()) == -7 and int(q.max()) <= 7
    assert not bool(((pack_nibbles(q) & 0xF) == 0).any() | ((pack_nibbles(q) >> 4) == 0).any())
    with pytest.raises(ValueError, match="-8"):
        unpack_nibbles(torch.tensor([0x80], dtype=torch.uint8), 2)


def test_channel_scale_and_rounding_by_hand():
    w = torch.tensor(
        [
            [7.0, 2.5, -3.5, 0.49],  # s = 1: 2.5 -> 2 (half to even; hexa's half-away gives 3), -3.5 -> -4
            [-14.0, 1.0, 3.0, 5.0],  # s = 2: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
            [0.0, 0.0, 0.0, 0.0],  # all-zero channel: s = 1 (hexa), q = 0
        ]
    )
    q, scale = quantize_channels(w)
    assert scale.tolist() == [1.0, 2.0, 1.0]
    assert q.tolist() == [[7, 2, -4, 0], [-7, 0, 2, 2], [0, 0, 0, 0]]


def test_scale_is_per_output_channel_of_a_conv_weight():
    w = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(0))
    _, scale = quantize_channels(w)
    assert torch.equal(scale, w.abs().reshape(5, -1).amax(dim=1) / 7)


def test_exactly_the_conv_weights_are_int4_and_the_rest_fp32():
    quant = Int4Config().build()
    state = tiny_model().state_dict()
    packed = quant.quantize(state)
    int4 = {n for n, qt in packed.items() if qt.kind == "int4_channel"}
    assert int4 == CONV_WEIGHTS
    assert {n for n in state if quant.qat_bits(n, state[n]) == 4} == CONV_WEIGHTS
    for name in set(state) - CONV_WEIGHTS:
        assert quant.qat_bits(name, state[name]) is None
        assert packed[name].kind == "passthrough" and packed[name].arrays["w"].dtype == torch.float32
    ec = packed["ec.weight"]
    assert ec.arrays["codes"].numel() == (16 * 16 * 3 + 1) // 2 and ec.arrays["scale"].dtype == torch.float32


def test_dequantize_equals_fake_quant_exactly():
    state = tiny_model().state_dict()
    state["odd.weight"] = torch.randn(7, 3, 3).to(torch.bfloat16)
    quant = Int4Config(patterns=(*Int4Config().patterns, "odd.weight")).build()
    back = quant.dequantize(quant.quantize(state))
    for name in CONV_WEIGHTS | {"odd.weight"}:
        fq = quant.fake_quant(name, state[name])
        assert fq.dtype == state[name].dtype and torch.equal(back[name], fq), name
        assert not torch.equal(fq, state[name])
    for name in set(state) - CONV_WEIGHTS - {"odd.weight"}:
        assert torch.equal(back[name], state[name])


def test_artifact_roundtrip_through_the_registry(tmp_path):
    registry = full_manager(entrypoints=False).registry
    qcfg, ccfg = Int4Config(), ZstdConfig(level=3)
    quant = qcfg.build()
    state = tiny_model().state_dict()
    path = tmp_path / "m.pgolf"
    write_with_configs(path, quant.quantize(state), ("int4", qcfg), ("zstd", ccfg))
    loaded, manifest = load_state_dict(path, registry)
    assert manifest["quantizer"]["name"] == "int4"
    expected = quant.dequantize(quant.quantize(state))
    assert set(loaded) == set(state)
    for name in state:
        assert torch.equal(loaded[name], expected[name]) and loaded[name].shape == state[name].shape, name
    model = TINY.build(256)
    model.load_state_dict(loaded, strict=True)


def test_bad_stored_tensors_are_refused_with_the_name():
    quant = Int4Config().build()
    good = quant.quantize({"ec.weight": torch.randn(4, 4, 3)})["ec.weight"]
    bad_scale = QTensor(good.kind, {**good.arrays, "scale": good.arrays["scale"].half()}, good.meta)
    with pytest.raises(ArtifactError, match="ec.weight"):
        quant.dequantize({"ec.weight": bad_scale})
    codes = good.arrays["codes"].clone()
    codes[0] = 0x80  # low nibble 0 = code -8
    with pytest.raises(ArtifactError, match="ec.weight.*-8"):
        quant.dequantize({"ec.weight": QTensor(good.kind, {**good.arrays, "codes": codes}, good.meta)})
    with pytest.raises(ArtifactError, match="unknown kind"):
        quant.dequantize({"ec.weight": QTensor("int8_row", good.arrays, good.meta)})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"patterns": ()}, "patterns"),
        ({"patterns": ("",)}, "patterns"),
        ({"passthrough_dtype": "int8"}, "passthrough_dtype"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        Int4Config(**kwargs)


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str, event: str | None = None, **fields) -> None:
        self.lines.append(line)


def test_late_qat_forward_equals_the_dequantized_int4_model():
    model = tiny_model(1)
    quant = Int4Config().build()
    dequantized = TINY.build(256)
    dequantized.load_state_dict(quant.dequantize(quant.quantize(model.state_dict())))
    ctx = types.SimpleNamespace(
        model=model,
        config=types.SimpleNamespace(quantizer=Int4Config()),
        log=_Log(),
        notes={},
        averaging=None,
        step=1,
        lr_scale=1.0,
    )
    plugin = LateQATConfig(threshold=1.01).build()
    plugin.pg_train_start(ctx)
    plugin.pg_step_end(ctx)  # lr_scale 1.0 < 1.01: on after the first step
    assert plugin.enabled_step == 1
    x = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        qat_logits, ref_logits = model(x), dequantized(x)
    assert torch.equal(qat_logits, ref_logits)
    # The per-row formula (step floor 1/7) would give other weights: fake_quant was used.
    ec = model.ec.parametrizations.weight.original
    assert not torch.equal(fake_quantize(ec, 4), quant.fake_quant("ec.weight", ec))
    # Gradients still reach the float weights (straight through).
    model(x).square().mean().backward()
    assert ec.grad is not None and ec.grad.abs().sum() > 0


def test_compiled_qat_forward_with_fake_quant_is_one_graph_and_follows_alpha():
    """fullgraph compilation (as on CUDA) traces the quantizer's fake_quant; alpha stays an input."""
    torch._dynamo.reset()
    model = tiny_model(2)
    ctx = types.SimpleNamespace(
        model=model,
        config=types.SimpleNamespace(quantizer=Int4Config()),
        log=_Log(),
        notes={},
        averaging=None,
        step=1,
        lr_scale=1.0,
    )
    plugin = LateQATConfig(threshold=1.01).build()
    plugin.pg_train_start(ctx)
    graphs: list[int] = []

    def counting_backend(gm, example_inputs):
        graphs.append(1)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, backend=counting_backend, fullgraph=True, dynamic=False)
    x = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        off = compiled(x)
        plugin.pg_step_end(ctx)
        on, eager_on = compiled(x), model(x)
    assert len(graphs) == 1
    assert (on - off).abs().max() > 1e-3
    torch.testing.assert_close(on, eager_on, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
