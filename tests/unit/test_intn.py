"""The intn quantizer: P1573's routing name by name, qat_bits, packing, artifact roundtrip.

References: the routing of docs/techniques.md §8.3 (P1573's export) written out
per upstream parameter name, hand arithmetic for the packed sizes, and the artifact file
read back through a fresh registry.
"""

from __future__ import annotations

import math

import pytest
import torch

import plugins.compress.lzma as lzma_plugin
import plugins.quant.intn as intn_plugin
from harness.api.errors import ArtifactError, ConfigError, TrainingDiverged
from harness.api.protocols import QTensor
from harness.api.registry import Registry
from harness.pipeline.artifact import config_from_json, load_state_dict
from plugins.compress.lzma import LzmaConfig
from plugins.quant.int8 import Int8Config
from plugins.quant.intn import IntNConfig
from tests.artifact_files import write_with_configs

BIG = (257, 256)  # 65,792 elements: just over the 65,536 passthrough limit


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def p1573_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Upstream PR #1573 parameter names (unbanked), large matrices shrunk to just over 65,536."""
    g = torch.Generator().manual_seed(seed)
    sd = {
        "tok_emb.weight": (0.005 * torch.randn(*BIG, generator=g)).bfloat16(),
        "bigram.embed.weight": (0.01 * torch.randn(*BIG, generator=g)).bfloat16(),
        "bigram.proj.weight": 0.05 * torch.randn(512, 128, generator=g),  # exactly 65,536
        "bigram.scale": torch.tensor(0.05),
        "smear.gate": torch.zeros(512),
        "skip_weights": torch.ones(6, 512),
        "ve_shared.embed.weight": (0.01 * torch.randn(*BIG, generator=g)).bfloat16(),
        "ve_shared.proj.weight": 0.05 * torch.randn(256, 128, generator=g),
        "ve_shared.scale": torch.tensor(0.1),
    }
    for i in range(2):
        for part in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj"):
            sd[f"blocks.{i}.{part}.weight"] = 0.05 * torch.randn(*BIG, generator=g)
        sd[f"blocks.{i}.attn.q_gain"] = torch.full((8,), 1.5)
        sd[f"blocks.{i}.attn_scale"] = torch.ones(512)
        sd[f"blocks.{i}.resid_mix"] = torch.stack((torch.ones(512), torch.zeros(512)))
        sd[f"blocks.{i}.attn.attn_gate.weight"] = torch.zeros(8, 512)
    return sd


def expected_p1573(name: str) -> str:
    """docs/techniques.md §8.3, P1573's routing written out: passthrough / int8 / int5."""
    if name.startswith(
        ("bigram.proj", "bigram.scale", "smear", "skip_weights", "ve_shared.proj", "ve_shared.scale")
    ):
        return "fp16"
    if ".attn_scale" in name or ".resid_mix" in name or ".q_gain" in name or "attn_gate" in name:
        return "fp16"
    if name in ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"):
        return "int8"
    assert ".attn." in name or ".mlp." in name, name
    return "int5"


def _encoding(qt: QTensor) -> str:
    if qt.kind == "passthrough":
        return {torch.float16: "fp16", torch.float32: "fp32"}[qt.arrays["w"].dtype]
    return f"int{qt.meta['bits']}"


@pytest.mark.parametrize("cfg", [IntNConfig(), IntNConfig.p1573()], ids=["default", "p1573"])
def test_routing_matches_p1573_name_by_name(cfg: IntNConfig) -> None:
    sd = p1573_state()
    quant = cfg.build()
    assert quant.name == "int5"
    qts = quant.quantize(sd)
    got = {name: _encoding(qt) for name, qt in qts.items()}
    assert got == {name: expected_p1573(name) for name in sd}
    for name, qt in qts.items():
        if got[name] == "int5":
            # Packed: 65,792 values x 5 bits = 41,120 bytes, plus one fp16 step per row.
            assert qt.kind == "intn_packed" and qt.arrays["q"].shape == (41_120,)
            assert qt.arrays["scale"].shape == (257,) and qt.meta["shape"] == [257, 256]
        if got[name] == "int8":
            assert qt.kind == "intn" and qt.arrays["q"].dtype == torch.int8 and qt.meta["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    "cfg",
    [
        IntNConfig(),
        IntNConfig.p1573(),
        IntNConfig(bits=6, packed=False, embed_bits=6, passthrough_max_numel=70_000),
    ],
    ids=["default", "p1573", "int6-unpacked"],
)
def test_qat_bits_agrees_with_quantize_for_every_tensor(cfg: IntNConfig) -> None:
    sd = p1573_state(1)
    sd["buffer.ids"] = torch.arange(70_000)  # large but not float
    quant = cfg.build()
    qts = quant.quantize(sd)
    for name, t in sd.items():
        bits = quant.qat_bits(name, t)
        assert bits == (None if qts[name].kind == "passthrough" else qts[name].meta["bits"]), name


def test_embeddings_get_the_baseline_int8_rows() -> None:
    sd = p1573_state(5)
    qts = IntNConfig().build().quantize(sd)
    ref = Int8Config(passthrough_max_numel=0).build().quantize(sd)
    for name in ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"):
        assert qts[name].meta["bits"] == 8 and ref[name].kind == "int8_row"
        for key in ("q", "scale"):
            assert torch.equal(qts[name].arrays[key], ref[name].arrays[key]), (name, key)


def test_p1573_settings_and_int5_range() -> None:
    cfg = IntNConfig.p1573()
    assert cfg.scale_floor == 1 / 15 and cfg.clip_percentiles == (0.999, 0.9995, 0.9999, 1.0)
    qt = cfg.build().quantize({"blocks.0.mlp.fc.weight": 0.05 * torch.randn(*BIG)})["blocks.0.mlp.fc.weight"]
    # Offset 15: the stored codes are q + 15 in 0..30 (P1573's pack_int5), 31 never occurs.
    assert qt.meta["offset"] == 15
    # Rows of N(0, 0.05) have max |w| < 1, so the 1/15 floor fixes every step at fp16(1/15).
    assert torch.equal(qt.arrays["scale"], torch.full((257,), 1 / 15).half())


def test_packed_and_one_per_byte_decode_identically() -> None:
    sd = p1573_state(2)
    a = IntNConfig(packed=True).build()
    b = IntNConfig(packed=False).build()
    qa, qb = a.quantize(sd), b.quantize(sd)
    for name in sd:
        assert torch.equal(a.dequantize({name: qa[name]})[name], b.dequantize({name: qb[name]})[name]), name
    name = "blocks.0.mlp.fc.weight"
    assert qb[name].kind == "intn" and qb[name].arrays["q"].shape == (257, 256)
    assert qa[name].arrays["q"].numel() == math.ceil(257 * 256 * 5 / 8)


def test_error_bound_and_dtypes_of_the_default() -> None:
    sd = p1573_state(3)
    quant = IntNConfig().build()
    qts = quant.quantize(sd)
    out = quant.dequantize(qts)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
        if qts[name].kind.startswith("intn"):
            c = 2 ** (qts[name].meta["bits"] - 1) - 1
            step = qts[name].arrays["scale"].float()[:, None]
            err = (out[name].float() - t.float()).abs()
            assert bool((err <= step * (0.5 + c * 2**-11) + 1e-6).all()), name


def test_non_2d_large_tensor_gets_one_step() -> None:
    t = torch.randn(4, 130, 130)
    qt = IntNConfig().build().quantize({"blocks.0.mlp.cube": t})["blocks.0.mlp.cube"]
    assert qt.arrays["scale"].shape == (1,) and qt.meta["shape"] == [4, 130, 130]
    assert qt.arrays["scale"].item() == (t.abs().max() / 15).half().item()


def test_passthrough_dtype_option() -> None:
    t = torch.randn(10)
    for dtype in ("float16", "bfloat16", "float32"):
        qt = IntNConfig(passthrough_dtype=dtype).build().quantize({"g": t})["g"]
        assert qt.arrays["w"].dtype == getattr(torch, dtype)


def test_artifact_roundtrip_through_a_registry(tmp_path) -> None:
    registry = Registry()
    intn_plugin.pg_register_components(registry=registry)
    lzma_plugin.pg_register_components(registry=registry)
    sd = p1573_state(4)
    for i, cfg in enumerate((IntNConfig(), IntNConfig.p1573())):
        quant = cfg.build()
        qts = quant.quantize(sd)
        path = tmp_path / f"m{i}.pgolf"
        write_with_configs(path, qts, ("intn", cfg), ("lzma", LzmaConfig()))
        back, manifest = load_state_dict(path, registry)
        assert manifest["quantizer"]["name"] == "intn"
        assert config_from_json(IntNConfig, manifest["quantizer"]["config"]) == cfg
        expected = quant.dequantize(qts)
        for name, t in sd.items():
            assert back[name].dtype == t.dtype and torch.equal(back[name], expected[name]), name


def test_nan_is_refused_with_the_name() -> None:
    t = torch.randn(*BIG)
    t[3, 3] = float("nan")
    with pytest.raises(TrainingDiverged, match="blocks.2.attn.c_v.weight"):
        IntNConfig().build().quantize({"blocks.2.attn.c_v.weight": t})


def test_unknown_kind_is_refused() -> None:
    bad = QTensor("int4_row", {"q": torch.zeros(2, dtype=torch.int8)}, {"dtype": "float32"})
    with pytest.raises(ArtifactError, match="int4_row"):
        IntNConfig().build().dequantize({"w": bad})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bits", 1),
        ("bits", 9),
        ("bits", 5.0),
        ("embed_bits", 1),
        ("clip_percentiles", ()),
        ("clip_percentiles", (0.0,)),
        ("clip_percentiles", (1.5,)),
        ("clip_percentiles", [1.0]),
        ("scale_floor", 0.0),
        ("scale_floor", -1.0),
        ("scale_floor", float("inf")),
        ("packed", 1),
        ("allow_extra_negative", "no"),
        ("passthrough_max_numel", -1),
        ("passthrough_dtype", "float64"),
        ("embed_patterns", ("",)),
        ("embed_patterns", ["tok_emb"]),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        IntNConfig(**{field: value})


def test_registers_as_intn_and_names_itself_by_width() -> None:
    registry = Registry()
    intn_plugin.pg_register_components(registry=registry)
    assert registry.names("quantizer") == ["intn"]
    assert registry.get("quantizer", "intn").config_cls is IntNConfig
    assert IntNConfig(bits=6).build().name == "int6"
