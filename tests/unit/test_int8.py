"""The baseline int8 quantizer: hand-checked rows, error bounds, passthrough rules, dtypes.

References: hand arithmetic for a small row, ``torch.quantile`` for the clip values, and
fp16/bf16 casts done by torch for the stored scales and passthroughs.
"""

from __future__ import annotations

import pytest
import torch

import plugins.quant.int8 as int8_plugin
from harness.api.errors import ArtifactError, ConfigError, TrainingDiverged
from harness.api.quantization import linear_quantile
from harness.api.registry import Registry
from plugins.quant.int8 import Int8Config

Q = 0.9999984


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hand_checked_rows_and_the_one_over_127_floor() -> None:
    # numel 8 > 4, so the 2-D tensor takes the per-row path.
    w = torch.tensor([[0.25, -2.0, 1.5, 0.0], [0.004, -0.003, 0.001, 0.0]])
    qt = Int8Config(passthrough_max_numel=4).build().quantize({"m": w})["m"]
    assert qt.kind == "int8_row"
    # Row 0: sorted |w| = [0, .25, 1.5, 2]; rank = Q * 3 = 2.9999952, so
    # c = 1.5 + 0.9999952 * (2 - 1.5) = 1.9999976 (just under the max) and Δ = c / 127.
    # q = round([0.25, -c, 1.5, 0] / Δ) = round([15.875, -127, 95.25, 0]) = [16, -127, 95, 0].
    # Row 1: c ≈ 0.004, c / 127 < 1/127, so the floor gives Δ = 1/127 and
    # q = round([0.508, -0.381, 0.127, 0]) = [1, 0, 0, 0] (without the floor: [127, -95, 32, 0]).
    assert qt.arrays["q"].dtype == torch.int8
    assert qt.arrays["q"].tolist() == [[16, -127, 95, 0], [1, 0, 0, 0]]
    scale = qt.arrays["scale"]
    assert scale.dtype == torch.float16 and scale.shape == (2,)
    assert scale[0] == torch.tensor(1.9999976 / 127).half()
    assert scale[1] == torch.tensor(1 / 127).half()
    out = int8_plugin.Int8Quantizer(Int8Config(passthrough_max_numel=4)).dequantize({"m": qt})["m"]
    assert out.dtype == torch.float32 and out.shape == w.shape
    expected = torch.tensor([[16, -127, 95, 0], [1, 0, 0, 0]]) * scale.float()[:, None]
    assert torch.equal(out, expected)


def test_row_error_is_at_most_half_a_step() -> None:
    # Default config: 4 x 16385 = 65,540 elements is just over the 65,536 passthrough limit.
    w = 3.0 * torch.randn(4, 16385, generator=_gen(0))
    quant = Int8Config().build()
    qt = quant.quantize({"w": w})["w"]
    assert qt.kind == "int8_row"
    out = quant.dequantize({"w": qt})["w"]
    step = qt.arrays["scale"].float()[:, None]
    err = (out - w).abs()
    # q is rounded with the fp32 step, then dequantized with the fp16-stored one: the fp16
    # rounding (relative 2**-11) adds at most 127 * 2**-11 * Δ ≈ 0.062 Δ to the Δ/2 bound.
    bound = step * (0.5 + 127 * 2**-11) + 1e-6
    top2 = w.abs().topk(2, dim=1)
    in_range = torch.ones_like(w, dtype=torch.bool)
    in_range.scatter_(1, top2.indices[:, :1], False)  # each row's largest |w| is clipped
    assert bool((err <= bound)[in_range].all())
    # The clipped maximum loses at most its distance to the clip value, which lies between
    # the two largest |w| (rank Q * 16384 = 16383.97).
    clipped_err = err.gather(1, top2.indices[:, :1])
    gap = (top2.values[:, :1] - top2.values[:, 1:2]).abs()
    assert bool((clipped_err <= gap + bound).all())


def test_row_scales_match_torch_quantile() -> None:
    w = torch.randn(3, 40_000, generator=_gen(1))
    qt = Int8Config().build().quantize({"w": w})["w"]
    clip = torch.quantile(w.abs(), Q, dim=1)
    assert torch.equal(qt.arrays["scale"], (clip / 127).clamp_min(1 / 127).half())


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 4097])
@pytest.mark.parametrize("q", [Q, 0.5, 0.999, 1.0])
def test_linear_quantile_is_bit_exact_with_torch_quantile(n: int, q: float) -> None:
    x = torch.randn(3, n, generator=_gen(n)).abs()
    assert torch.equal(linear_quantile(x, q), torch.quantile(x, q, dim=-1))


def test_linear_quantile_propagates_nan_like_torch() -> None:
    x = torch.randn(2, 9, generator=_gen(5))
    x[1, 4] = float("nan")
    got = linear_quantile(x, 0.5)
    assert torch.equal(got[0], torch.quantile(x[0], 0.5)) and torch.isnan(got[1])


def test_other_large_tensors_get_one_fp32_scale_without_floor() -> None:
    # Upstream's per-tensor branch: Δ = c / 127 (no 1/127 floor), kept as a 0-d fp32 tensor.
    x = 1e-3 * torch.randn(70_000, generator=_gen(2))
    quant = Int8Config().build()
    qt = quant.quantize({"v": x})["v"]
    assert qt.kind == "int8_tensor"
    scale = qt.arrays["scale"]
    assert scale.dtype == torch.float32 and scale.shape == ()
    expected = torch.tensor(float(torch.quantile(x.abs(), Q)) / 127, dtype=torch.float32)
    assert torch.equal(scale, expected)
    assert float(scale) < 1 / 127
    out = quant.dequantize({"v": qt})["v"]
    in_range = x.abs() <= 127 * float(scale)
    assert bool(((out - x).abs()[in_range] <= float(scale) / 2 + 1e-9).all())


def test_dtypes_and_shapes_are_restored() -> None:
    g = _gen(3)
    sd = {
        "emb": torch.randn(300, 256, generator=g).to(torch.bfloat16),  # int8_row
        "cube": torch.randn(40, 40, 50, generator=g),  # int8_tensor, 3-D
        "half": torch.randn(300, 256, generator=g).to(torch.float16),  # int8_row
        "small_bf16": torch.randn(10, generator=g).to(torch.bfloat16),  # passthrough
    }
    quant = Int8Config().build()
    qts = quant.quantize(sd)
    assert [qts[k].kind for k in sd] == ["int8_row", "int8_tensor", "int8_row", "passthrough"]
    out = quant.dequantize(qts)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
        assert torch.allclose(out[name].float(), t.float(), atol=0.05), name


def test_control_tensors_stay_fp32_exactly() -> None:
    g = _gen(4)
    sd = {
        "blocks.0.attn_scale": torch.randn(64, generator=g),
        "blocks.1.resid_mix": torch.randn(2, 64, generator=g),
        "skip_weights": torch.randn(4, 64, generator=g).to(torch.bfloat16),
    }
    quant = Int8Config().build()
    qts = quant.quantize(sd)
    out = quant.dequantize(qts)
    for name, t in sd.items():
        assert qts[name].kind == "passthrough"
        assert qts[name].arrays["w"].dtype == torch.float32
        assert out[name].dtype == t.dtype and torch.equal(out[name], t), name


def test_other_small_float_tensors_become_fp16() -> None:
    g = _gen(6)
    sd = {
        "blocks.0.mlp.fc.bias": torch.randn(256, generator=g),
        "lm_head.gain": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "already_half": torch.randn(16, generator=g).half(),
    }
    quant = Int8Config().build()
    qts = quant.quantize(sd)
    out = quant.dequantize(qts)
    for name, t in sd.items():
        assert qts[name].kind == "passthrough"
        assert qts[name].arrays["w"].dtype == torch.float16, name
        assert out[name].dtype == t.dtype, name
        assert torch.equal(out[name], t.half().to(t.dtype)), name


def test_custom_control_patterns_are_honoured() -> None:
    t = torch.randn(16, generator=_gen(7))
    quant = Int8Config(control_patterns=("gate",)).build()
    qts = quant.quantize({"blocks.0.gate": t, "blocks.0.attn_scale": t})
    assert qts["blocks.0.gate"].arrays["w"].dtype == torch.float32
    assert qts["blocks.0.attn_scale"].arrays["w"].dtype == torch.float16


def test_non_float_tensors_pass_through_bit_exactly() -> None:
    g = _gen(8)
    sd = {
        "big_ids": torch.randint(-(2**40), 2**40, (70_000,), generator=g),
        "mask": torch.rand(300, 300, generator=g) > 0.5,
        "small": torch.arange(7, dtype=torch.int32),
    }
    quant = Int8Config().build()
    qts = quant.quantize(sd)
    out = quant.dequantize(qts)
    for name, t in sd.items():
        assert qts[name].kind == "passthrough"
        assert qts[name].arrays["w"].dtype == t.dtype
        assert out[name].dtype == t.dtype and torch.equal(out[name], t), name


def test_arrays_are_contiguous_cpu_tensors_and_meta_is_json() -> None:
    g = _gen(9)
    sd = {
        "t": torch.randn(260, 300, generator=g).t(),  # non-contiguous input
        "v": torch.randn(70_000, generator=g),
        "s": torch.randn(5, generator=g),
        "i": torch.arange(3),
    }
    for name, qt in Int8Config().build().quantize(sd).items():
        assert set(qt.meta) == {"dtype"} and isinstance(qt.meta["dtype"], str), name
        for key, arr in qt.arrays.items():
            assert arr.is_contiguous() and arr.device.type == "cpu", (name, key)


def test_nan_weights_are_refused_with_the_tensor_name() -> None:
    w = torch.randn(300, 300, generator=_gen(10))
    w[5, 5] = float("nan")
    with pytest.raises(TrainingDiverged, match="blocks.3.mlp.fc.weight"):
        Int8Config().build().quantize({"blocks.3.mlp.fc.weight": w})


def test_dequantize_rejects_malformed_entries() -> None:
    quant = Int8Config(passthrough_max_numel=0).build()
    qt = quant.quantize({"w": torch.randn(3, 4, generator=_gen(11))})["w"]
    bad_kind = int8_plugin.QTensor("int4_row", qt.arrays, qt.meta)
    with pytest.raises(ArtifactError, match="int4_row"):
        quant.dequantize({"w": bad_kind})
    bad_dtype = int8_plugin.QTensor(qt.kind, qt.arrays, {"dtype": "complex64"})
    with pytest.raises(ArtifactError, match="complex64"):
        quant.dequantize({"w": bad_dtype})
    short_scale = int8_plugin.QTensor(
        qt.kind, {"q": qt.arrays["q"], "scale": qt.arrays["scale"][:2]}, qt.meta
    )
    with pytest.raises(ArtifactError, match="scale"):
        quant.dequantize({"w": short_scale})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("passthrough_max_numel", -1),
        ("passthrough_max_numel", 1.5),
        ("clip_quantile", 0.0),
        ("clip_quantile", 1.5),
        ("control_patterns", ["attn_scale"]),
        ("control_patterns", ("",)),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Int8Config(**{field: value})


def test_registers_as_int8() -> None:
    registry = Registry()
    int8_plugin.pg_register_components(registry=registry)
    assert registry.names("quantizer") == ["int8"]
    assert registry.get("quantizer", "int8").config_cls is Int8Config
    assert Int8Config().build().name == "int8"
