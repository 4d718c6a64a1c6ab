"""The mixed quantizer: T1's routing name by name (blocks.8 quirk included), T1's intN
arithmetic, the P1573 preset, qat_bits, and the artifact roundtrip.

References: the T1/P560 rules of docs/techniques.md §8.4 re-implemented literally in
`expected_t1`, T1's row formula (Δ = fp16(rowmax/c), q = clamp(round(W/Δ), -(c+1), c))
computed here with plain torch, the baseline int8 quantizer, and the intn quantizer for
the P1573 preset.
"""

from __future__ import annotations

import pytest
import torch

import plugins.compress.zlib as zlib_plugin
import plugins.quant.mixed as mixed_plugin
from harness.api.errors import ArtifactError, ConfigError
from harness.api.protocols import QTensor
from harness.api.registry import Registry
from harness.pipeline.artifact import config_from_json, load_state_dict
from plugins.compress.zlib import ZlibConfig
from plugins.quant.int8 import Int8Config
from plugins.quant.intn import IntNConfig
from plugins.quant.mixed import MixedConfig
from tests.artifact_files import write_with_configs
from tests.unit.test_intn import p1573_state

BIG = (96, 96)  # 9,216 elements: over T1's 8,192 passthrough limit
T1_CONTROL = (
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
    "smear",
    "bigram.scale",
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def t1_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Upstream T1 names (10 layers, blocks 0, 7, 8, 9 shown), large matrices shrunk to 96x96."""
    g = torch.Generator().manual_seed(seed)

    def big(scale: float = 0.05) -> torch.Tensor:
        return scale * torch.randn(*BIG, generator=g)

    sd = {
        "tok_emb.weight": big(0.005).bfloat16(),
        "bigram.embed.weight": big(0.01).bfloat16(),
        "bigram.proj.weight": big(),
        "bigram.scale": torch.tensor(0.05),
        "smear.gate": torch.zeros(512),
        "skip_weights": torch.ones(5, 512),
        "lm_head.weight": big(),  # untied head: not in T1's run, routed to int8
        "wide.skip_weights": big(),  # a large control-named tensor (none in T1's model)
        "rotary.positions": torch.arange(10_000),  # large, not float
    }
    for i in (0, 7, 8, 9):
        for part in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj"):
            sd[f"blocks.{i}.{part}.weight"] = big()
        sd[f"blocks.{i}.attn.q_gain"] = torch.full((8,), 1.5)
        sd[f"blocks.{i}.attn_scale"] = torch.ones(512)
        sd[f"blocks.{i}.mlp_scale"] = torch.ones(512)
        sd[f"blocks.{i}.resid_mix"] = torch.stack((torch.ones(512), torch.zeros(512)))
    return sd


def expected_t1(name: str, t: torch.Tensor) -> str:
    """T1 routing (docs/techniques.md §8.4), in check order."""
    if not t.is_floating_point():
        return "raw"
    if t.numel() <= 8192:
        return "fp16"
    if any(p in name for p in T1_CONTROL):
        return "fp32"
    if "tok_emb" in name or "blocks.8.attn.c_k" in name:
        return "fp16"
    if ".mlp." in name:
        return "int5"
    if ".attn." in name or "bigram" in name:
        return "int6"
    return "int8"


def _encoding(qt: QTensor) -> str:
    if qt.kind == "passthrough":
        w = qt.arrays["w"]
        return {torch.float16: "fp16", torch.float32: "fp32"}.get(w.dtype, "raw")
    if qt.kind.startswith("int8"):
        return "int8"
    return f"int{qt.meta['bits']}"


def test_t1_routing_name_by_name() -> None:
    sd = t1_state()
    quant = MixedConfig.t1().build()
    qts = quant.quantize(sd)
    got = {name: _encoding(qt) for name, qt in qts.items()}
    assert got == {name: expected_t1(name, t) for name, t in sd.items()}
    # The quirk, spelled out: only block 8's key projection stays fp16.
    assert got["blocks.8.attn.c_k.weight"] == "fp16"
    assert [got[f"blocks.{i}.attn.c_k.weight"] for i in (0, 7, 9)] == ["int6"] * 3
    assert got["blocks.8.attn.c_q.weight"] == "int6" and got["blocks.8.mlp.fc.weight"] == "int5"
    assert qts["rotary.positions"].arrays["w"].dtype == torch.int64
    assert MixedConfig() == MixedConfig.t1()
    assert quant.name == "int5int6"


def test_t1_int_arithmetic_matches_the_record_formula() -> None:
    sd = t1_state(1)
    qts = MixedConfig.t1().build().quantize(sd)
    for name, bits in (
        ("blocks.0.mlp.fc.weight", 5),
        ("blocks.7.attn.c_v.weight", 6),
        ("bigram.embed.weight", 6),
    ):
        qt, w, c = qts[name], sd[name].float(), 2 ** (bits - 1) - 1
        step = (w.abs().amax(dim=1) / c).half().clamp_min(torch.finfo(torch.float16).tiny)
        q = torch.clamp(torch.round(w / step.float()[:, None]), -(c + 1), c).to(torch.int8)
        # One value per int8 byte (not packed), exactly T1's q and scale.
        assert (
            qt.kind == "intn" and torch.equal(qt.arrays["q"], q) and torch.equal(qt.arrays["scale"], step)
        ), name
    # "int8" is the baseline's encoding, array for array.
    ref = Int8Config(passthrough_max_numel=0).build().quantize({"lm_head.weight": sd["lm_head.weight"]})
    for key in ("q", "scale"):
        assert torch.equal(qts["lm_head.weight"].arrays[key], ref["lm_head.weight"].arrays[key])


def test_extra_negative_level_is_used_only_when_allowed() -> None:
    w = torch.randn(*BIG, generator=torch.Generator().manual_seed(2))
    sd = {"blocks.0.mlp.fc.weight": w}
    # A median clip leaves many weights beyond it, so the clamp bounds are reached.
    on = MixedConfig(clip_percentiles=(0.5,)).build().quantize(sd)["blocks.0.mlp.fc.weight"].arrays["q"]
    off = MixedConfig(clip_percentiles=(0.5,), allow_extra_negative=False).build().quantize(sd)
    assert int(on.min()) == -16 and int(on.max()) == 15
    assert int(off["blocks.0.mlp.fc.weight"].arrays["q"].min()) == -15


@pytest.mark.parametrize("cfg", [MixedConfig.t1(), MixedConfig.p1573()], ids=["t1", "p1573"])
def test_qat_bits_agrees_with_quantize_for_every_tensor(cfg: MixedConfig) -> None:
    sd = {**t1_state(3), **p1573_state(3)}
    quant = cfg.build()
    qts = quant.quantize(sd)
    for name, t in sd.items():
        enc = _encoding(qts[name])
        assert quant.qat_bits(name, t) == (int(enc[3:]) if enc.startswith("int") else None), name


def test_p1573_preset_decodes_like_the_intn_quantizer() -> None:
    sd = p1573_state(4)
    mixed = MixedConfig.p1573().build()
    intn = IntNConfig.p1573().build()
    assert mixed.name == "int5"
    a, b = mixed.dequantize(mixed.quantize(sd)), intn.dequantize(intn.quantize(sd))
    for name in sd:
        assert torch.equal(a[name], b[name]), name
    qt = mixed.quantize({"blocks.0.mlp.proj.weight": sd["blocks.0.mlp.proj.weight"]})[
        "blocks.0.mlp.proj.weight"
    ]
    assert qt.kind == "intn_packed" and qt.meta["offset"] == 15


def test_dtypes_and_shapes_are_restored() -> None:
    sd = t1_state(5)
    quant = MixedConfig().build()
    out = quant.dequantize(quant.quantize(sd))
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
        # Worst case: half an int5 step (row max / 30) or half the int8 floor step (1/254).
        bound = max(float(t.float().abs().max()) / 30 * 1.01, 1 / 254) + 1e-6
        assert float((out[name].float() - t.float()).abs().max()) <= bound, name


def test_artifact_roundtrip_through_a_registry(tmp_path) -> None:
    registry = Registry()
    mixed_plugin.pg_register_components(registry=registry)
    zlib_plugin.pg_register_components(registry=registry)
    sd = t1_state(6)
    for i, cfg in enumerate((MixedConfig.t1(), MixedConfig.p1573())):
        quant = cfg.build()
        qts = quant.quantize(sd)
        path = tmp_path / f"m{i}.pgolf"
        write_with_configs(path, qts, ("mixed", cfg), ("zlib", ZlibConfig()))
        back, manifest = load_state_dict(path, registry)
        # JSON turns the rule pairs into lists; the Config turns them back into tuples.
        assert config_from_json(MixedConfig, manifest["quantizer"]["config"]) == cfg
        expected = quant.dequantize(qts)
        for name, t in sd.items():
            assert back[name].dtype == t.dtype and torch.equal(back[name], expected[name]), name


def test_name_without_narrow_rules_is_mixed() -> None:
    assert MixedConfig(rules=((".mlp.", "fp16"),)).build().name == "mixed"
    assert MixedConfig(rules=((".mlp.", "int6"), (".attn.", "int8"))).build().name == "int6"


def test_unknown_kind_is_refused() -> None:
    bad = QTensor("int4_row", {"q": torch.zeros(2, dtype=torch.int8)}, {"dtype": "float32"})
    with pytest.raises(ArtifactError, match="int4_row"):
        MixedConfig().build().dequantize({"w": bad})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rules", ((".mlp.", "int9"),)),
        ("rules", ((".mlp.", "bf16"),)),
        ("rules", (("", "int5"),)),
        ("rules", ((".mlp.",),)),
        ("rules", [(".mlp.", "int5")]),
        ("default_encoding", "int1"),
        ("passthrough_max_numel", -1),
        ("control_patterns", ("",)),
        ("keep_fp16_patterns", ["tok_emb"]),
        ("packed", "yes"),
        ("allow_extra_negative", 0),
        ("clip_percentiles", ()),
        ("scale_floor", 0.0),
        ("int8_clip_quantile", 1.5),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        MixedConfig(**{field: value})


def test_registers_as_mixed() -> None:
    registry = Registry()
    mixed_plugin.pg_register_components(registry=registry)
    assert registry.names("quantizer") == ["mixed"]
    assert registry.get("quantizer", "mixed").config_cls is MixedConfig
