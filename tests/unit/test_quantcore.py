"""harness.api.quantization and harness.api.bit_packing: bit packing, per-row intN quantization, the
clip search, the step floor; plus the int8 plugin's qat_bits (test_int8.py is kept as it was).

References: Python integers as the bit stream (int.to_bytes, little-endian), hand-computed
rows, ``torch.quantile`` and a brute-force MSE for the clip search.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.api.bit_packing import pack_bits, unpack_bits
from harness.api.errors import ArtifactError, TrainingDiverged
from harness.api.protocols import QTensor
from harness.api.quantization import (
    decode_intn,
    decode_passthrough,
    dequantize_rows,
    encode_intn,
    packed_nbytes,
    passthrough,
    quantize_rows,
)
from plugins.quant.int8 import Int8Config


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_stream(values: list[int], bits: int) -> bytes:
    """Value k at bits k*bits.. of one little-endian integer, cut to ceil(n*bits/8) bytes."""
    acc = 0
    for k, v in enumerate(values):
        acc |= v << (k * bits)
    return acc.to_bytes((len(values) * bits + 7) // 8, "little")


# ---------------------------------------------------------------- packing


def test_pack_hand_checked_bytes() -> None:
    # 1 | 2 << 5 | 3 << 10 = 0x0C41 -> bytes 0x41, 0x0C.
    assert pack_bits(torch.tensor([1, 2, 3], dtype=torch.uint8), 5).tolist() == [0x41, 0x0C]
    assert (
        packed_nbytes(8, 5) == 5
        and pack_bits(torch.full((8,), 31, dtype=torch.uint8), 5).tolist() == [255] * 5
    )
    assert (
        packed_nbytes(4, 6) == 3
        and pack_bits(torch.full((4,), 63, dtype=torch.uint8), 6).tolist() == [255] * 3
    )
    # One int6 value 0b100001 in an otherwise empty stream: the low 6 bits of byte 0.
    assert pack_bits(torch.tensor([33, 0, 0, 0], dtype=torch.uint8), 6).tolist() == [33, 0, 0]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("length", [0, 1, 3, 7, 8, 9, 13, 64, 1001])
def test_pack_roundtrip_and_layout_for_every_value(bits: int, length: int) -> None:
    g = _gen(bits * 1000 + length)
    every = torch.arange(2**bits, dtype=torch.uint8)  # all codes 0..2^b-1
    rand = torch.randint(0, 2**bits, (length,), generator=g, dtype=torch.uint8)
    values = torch.cat([every, rand])
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(values.numel() * bits / 8)
    assert bytes(packed.tolist()) == _reference_stream(values.tolist(), bits)
    assert torch.equal(unpack_bits(packed, bits, values.numel()), values)


def test_unpack_ignores_trailing_bytes_and_rejects_short_input() -> None:
    values = torch.tensor([5, 0, 31, 17, 2], dtype=torch.uint8)
    padded = torch.cat([pack_bits(values, 5), torch.zeros(3, dtype=torch.uint8)])  # P1573 group padding
    assert torch.equal(unpack_bits(padded, 5, 5), values)
    with pytest.raises(ValueError, match="need 4 bytes"):
        unpack_bits(pack_bits(values, 5)[:3], 5, 5)


def test_pack_rejects_out_of_range_values_naming_the_first() -> None:
    values = torch.tensor([0, 3, 31, 5, 32, 40], dtype=torch.int16)
    with pytest.raises(ValueError, match=r"value 32 at index 4 .* 5 bits"):
        pack_bits(values, 5)
    with pytest.raises(ValueError, match=r"value -1 at index 1"):
        pack_bits(torch.tensor([0, -1, 99]), 6)
    with pytest.raises(ValueError, match="integers"):
        pack_bits(torch.tensor([0.0, 1.0]), 5)
    with pytest.raises(ValueError, match="bits"):
        pack_bits(torch.tensor([0]), 9)


# ---------------------------------------------------------------- per-row quantization


@pytest.mark.parametrize("bits", [5, 6])
@pytest.mark.parametrize("extra_negative", [False, True])
def test_row_error_is_half_a_step_inside_the_clip(bits: int, extra_negative: bool) -> None:
    w = 0.05 * torch.randn(16, 300, generator=_gen(bits))
    q, scale, p = quantize_rows(w, bits, allow_extra_negative=extra_negative)
    c = 2 ** (bits - 1) - 1
    assert p == 1.0 and q.dtype == torch.int8 and scale.dtype == torch.float16 and scale.shape == (16,)
    assert int(q.max()) <= c and int(q.min()) >= (-(c + 1) if extra_negative else -c)
    step = scale.float()[:, None]
    # Every value is inside the clip (p = 1: the row max). q is rounded with the stored fp16
    # step, which may be up to 2**-11 below max/c, so the row max can exceed c*Δ by c*2**-11*Δ.
    err = (dequantize_rows(q, scale) - w).abs()
    assert bool((err <= step * (0.5 + c * 2**-11) + 1e-7).all())
    # The step is the row max over c, rounded to fp16 (T1: no floor).
    assert torch.equal(scale, (w.abs().amax(dim=1) / c).half())


def test_scale_floor_hand_checked() -> None:
    w = torch.tensor([[0.2, -0.12, 0.03, 0.0]])
    # Without a floor: Δ = fp16(0.2/15) = 0.013336181640625; W/Δ = [14.997, -8.998, 2.2495, 0].
    q, scale, _ = quantize_rows(w, 5)
    assert q.tolist() == [[15, -9, 2, 0]] and scale.item() == 0.013336181640625
    # P1573's floor 1/15: Δ = fp16(1/15) = 0.066650390625; W/Δ = [3.0007, -1.8004, 0.4501, 0].
    q, scale, _ = quantize_rows(w, 5, scale_floor=1 / 15)
    assert q.tolist() == [[3, -2, 0, 0]] and scale.item() == 0.066650390625


def test_clip_search_picks_the_brute_force_mse_best_percentile() -> None:
    g = _gen(7)
    w = 0.02 * torch.randn(8, 4000, generator=g)
    # One outlier (15 sigma) per row: with the row max as clip, Δ = 0.02 and most weights
    # round to 0; clipping the outlier costs less than that over 4000 columns.
    w[:, 17] = 0.3
    cands = (0.999, 0.9995, 0.9999, 1.0)
    q, scale, p = quantize_rows(w, 5, clip_percentiles=cands, scale_floor=None)
    errors = {}
    for cand in cands:
        clip = torch.quantile(w.abs(), cand, dim=1)
        step = (clip / 15).half()
        ref_q = torch.clamp(torch.round(w / step.float()[:, None]), -15, 15)
        errors[cand] = float((w - ref_q * step.float()[:, None]).pow(2).mean())
    best = min(cands, key=lambda c: errors[c])
    assert best < 1.0 and p == best
    assert errors[1.0] > 2 * errors[best]
    step = (torch.quantile(w.abs(), best, dim=1) / 15).half()
    assert torch.equal(scale, step)
    assert torch.equal(q.float(), torch.clamp(torch.round(w / step.float()[:, None]), -15, 15))


def test_baseline_rounding_clips_before_dividing_by_the_fp32_step() -> None:
    # Row max 0.5 with the 1/127 floor: Δ = max(0.5/127, 1/127) = 1/127 in fp32.
    # Clip at the 0.75 quantile of |w| = [0.1, 0.2, 0.3, 0.5] (rank 2.25): 0.3 + 0.25*0.2 = 0.35.
    w = torch.tensor([[0.1, -0.2, 0.3, 0.5]])
    q, scale, _ = quantize_rows(w, 8, clip_percentiles=(0.75,), scale_floor=1 / 127, baseline_rounding=True)
    # round([0.1, -0.2, 0.3, 0.35] * 127) = round([12.7, -25.4, 38.1, 44.45]) = [13, -25, 38, 44].
    assert q.tolist() == [[13, -25, 38, 44]]
    assert scale.item() == torch.tensor(1 / 127).half().item()
    # Without the pre-clip (P1573 style) the outlier keeps its level: round(0.5*127) = 64.
    q2, _, _ = quantize_rows(w, 8, clip_percentiles=(0.75,), scale_floor=1 / 127)
    assert q2[0, 3].item() == 64


@pytest.mark.parametrize("floor", [None, 1 / 15])
@pytest.mark.parametrize("baseline", [False, True])
def test_zero_rows_dequantize_to_zero(floor: float | None, baseline: bool) -> None:
    w = torch.zeros(3, 40)
    w[1] = torch.linspace(-1, 1, 40)
    q, scale, _ = quantize_rows(w, 5, scale_floor=floor, baseline_rounding=baseline)
    out = dequantize_rows(q, scale)
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(scale.float()).all())
    assert torch.equal(out[0], torch.zeros(40)) and torch.equal(out[2], torch.zeros(40))
    assert bool(((out[1] - w[1]).abs() <= scale[1].float() * 0.51).all())


def test_nan_weights_raise_with_the_name() -> None:
    w = torch.randn(4, 10, generator=_gen(3))
    w[2, 3] = float("nan")
    with pytest.raises(TrainingDiverged, match="blocks.1.mlp.fc.weight"):
        quantize_rows(w, 5, clip_percentiles=(0.999, 1.0), name="blocks.1.mlp.fc.weight")


# ---------------------------------------------------------------- QTensor encodings


def test_intn_encoding_packed_equals_unpacked_and_restores_shape_and_dtype() -> None:
    g = _gen(11)
    for t in (torch.randn(33, 70, generator=g).bfloat16(), torch.randn(5, 6, 7, generator=g)):
        a = encode_intn("t", t, 5, packed=True)
        b = encode_intn("t", t, 5, packed=False, allow_extra_negative=False)
        assert a.kind == "intn_packed" and b.kind == "intn"
        assert a.arrays["q"].numel() == math.ceil(t.numel() * 5 / 8)
        assert a.meta == {**b.meta, "offset": 15} and b.meta["shape"] == list(t.shape)
        out_a, out_b = decode_intn("t", a), decode_intn("t", b)
        assert torch.equal(out_a, out_b) and out_a.dtype == t.dtype and out_a.shape == t.shape
    # The 3-D tensor got one step for all of it.
    assert a.arrays["scale"].shape == (1,)


def test_intn_decoding_rejects_malformed_entries() -> None:
    qt = encode_intn("w", torch.randn(4, 8, generator=_gen(12)), 5, packed=True)
    short = QTensor(qt.kind, {"q": qt.arrays["q"][:-1], "scale": qt.arrays["scale"]}, qt.meta)
    with pytest.raises(ArtifactError, match="w: intn_packed needs 20 uint8 bytes"):
        decode_intn("w", short)
    with pytest.raises(ArtifactError, match="meta.bits"):
        decode_intn("w", QTensor(qt.kind, qt.arrays, {**qt.meta, "bits": 9}))
    with pytest.raises(ArtifactError, match="scale"):
        decode_intn("w", QTensor(qt.kind, {"q": qt.arrays["q"]}, qt.meta))
    with pytest.raises(ArtifactError, match="meta.offset"):
        decode_intn("w", QTensor(qt.kind, qt.arrays, {**qt.meta, "offset": 32}))


def test_passthrough_rules() -> None:
    t = torch.randn(6, generator=_gen(13))
    assert passthrough(t, keep_fp32=True).arrays["w"].dtype == torch.float32
    half = passthrough(t.bfloat16(), keep_fp32=False)
    assert half.arrays["w"].dtype == torch.float16 and half.meta == {"dtype": "bfloat16"}
    assert decode_passthrough("t", half).dtype == torch.bfloat16
    ids = passthrough(torch.arange(4), keep_fp32=False)
    assert torch.equal(decode_passthrough("i", ids), torch.arange(4))


def test_int8_plugin_qat_bits_agrees_with_its_quantize() -> None:
    # Lives here because tests/unit/test_int8.py stays as it was; int8 now runs on quantcore.
    g = _gen(14)
    sd = {
        "blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=g),  # int8_row
        "cube": torch.randn(40, 40, 50, generator=g),  # int8_tensor
        "blocks.0.attn_scale": torch.randn(64, generator=g),  # fp32 passthrough
        "small": torch.randn(8, 8, generator=g),  # fp16 passthrough
        "ids": torch.arange(70_000),  # non-float passthrough
    }
    quant = Int8Config().build()
    qts = quant.quantize(sd)
    got = {name: quant.qat_bits(name, t) for name, t in sd.items()}
    assert got == {
        "blocks.0.mlp.fc.weight": 8,
        "cube": 8,
        "blocks.0.attn_scale": None,
        "small": None,
        "ids": None,
    }
    for name in sd:
        assert (got[name] is None) == (qts[name].kind == "passthrough"), name
