"""The .clm v0.2 export (plugins/arch/clm_export.py): the published d=768 offsets of
docs/formats.md §7 byte for byte, write -> read giving the int4 quantizer's values and identical
predictions, codes identical to the int4 quantizer's, the generalised (deeper, more experts)
layout, refusal of damaged files, and the observer in a run-shaped context."""

from __future__ import annotations

import hashlib
import struct
import types

import pytest
import torch

from harness.api.errors import ArtifactError, ConfigError
from plugins.arch.clm_export import ClmExportConfig, encode_clm, pg_configure, read_clm, write_clm
from plugins.arch.conv_moe import ConvMoEConfig
from plugins.arch.gpt import GPTConfig
from plugins.quant.int4 import Int4Config
from plugins.quant.int8 import Int8Config

V = 256


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def model(cfg: ConvMoEConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return cfg.build(V)


def test_published_shape_offsets_match_byte_lms():
    blob = encode_clm(model(ConvMoEConfig(d_model=768)).state_dict())
    assert blob[:5] == b"CLM\x01\x06"
    starts, pos = [], 5
    for _ in range(6):
        cout, rest = struct.unpack_from("<II", blob, pos)
        starts.append((pos, cout, rest))
        pos += 8 + (cout * rest + 1) // 2 + 4 * cout
    assert starts == [
        (5, 768, 2304),
        (887_821, 768, 2304),
        (1_775_637, 768, 2304),
        (2_663_453, 768, 2304),
        (3_551_269, 2, 768),
        (3_552_053, 256, 768),
    ]
    assert pos == 3_651_389 and blob[pos : pos + 5] == b"CLMX\x0b"
    pos += 5
    entries = []
    for _ in range(11):
        (n,) = struct.unpack_from("<I", blob, pos)
        entries.append((pos, n))
        pos += 4 + 4 * n
    assert entries == [
        (3_651_394, 196_608),
        (4_437_830, 768),
        (4_440_906, 768),
        (4_443_982, 768),
        (4_447_058, 768),
        (4_450_134, 2),
        (4_450_146, 256),
        (4_451_174, 768),
        (4_454_250, 768),
        (4_457_326, 768),
        (4_460_402, 768),
    ]
    assert pos == len(blob) == 4_463_478


def test_block_payload_is_the_int4_quantizers_codes_and_scales():
    state = model(ConvMoEConfig(d_model=5)).state_dict()  # 5·5·3 = 75 codes: odd tail
    blob = encode_clm(state)
    packed = Int4Config().build().quantize(state)["ec.weight"]
    codes, scale = (
        packed.arrays["codes"].numpy().tobytes(),
        packed.arrays["scale"].numpy().astype("<f4").tobytes(),
    )
    assert blob[5:13] == struct.pack("<II", 5, 15)
    assert blob[13 : 13 + len(codes)] == codes and len(codes) == 38
    assert blob[13 + 37] >> 4 == 8  # odd tail padded with nibble 8 (hexa's convention)
    assert blob[13 + 38 : 13 + 38 + 20] == scale


@pytest.mark.parametrize(
    "cfg", [ConvMoEConfig(d_model=8), ConvMoEConfig(d_model=6, experts=3, trunk_layers=2)]
)
def test_write_read_gives_the_quantized_state_and_same_predictions(cfg, tmp_path):
    net = model(cfg, seed=1)
    state = net.state_dict()
    info = write_clm(state, tmp_path / "m.clm")
    blob = (tmp_path / "m.clm").read_bytes()
    assert info.bytes == len(blob) and info.sha256 == hashlib.sha256(blob).hexdigest()
    assert blob[4] == 3 + cfg.trunk_layers + cfg.experts  # nblk
    back = read_clm(tmp_path / "m.clm")
    quant = Int4Config().build()
    expected = quant.dequantize(quant.quantize(state))
    assert set(back) == set(state)
    for name in state:
        assert back[name].dtype == torch.float32 and torch.equal(back[name], expected[name]), name
    rebuilt, reference = cfg.build(V), cfg.build(V)
    rebuilt.load_state_dict(back, strict=True)
    reference.load_state_dict(expected, strict=True)
    x = torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), reference(x))


def test_damaged_files_are_refused_with_path_and_offset(tmp_path):
    blob = encode_clm(model(ConvMoEConfig(d_model=4)).state_dict())
    cases = {
        "magic": b"CLM\x02" + blob[4:],
        "truncated at offset": blob[:-3],
        "unexpected bytes": blob + b"\x00",
        "CLMX": blob.replace(b"CLMX", b"CLMY"),
        "-8": blob[:13] + bytes([blob[13] & 0xF0]) + blob[14:],  # low nibble 0 in the first code byte
    }
    for what, data in cases.items():
        path = tmp_path / "bad.clm"
        path.write_bytes(data)
        with pytest.raises(ArtifactError, match=what) as err:
            read_clm(path)
        assert str(path) in str(err.value)


def test_state_dicts_that_do_not_fit_are_refused():
    state = model(ConvMoEConfig(d_model=4)).state_dict()
    with pytest.raises(ConfigError, match="no place for"):
        encode_clm({**state, "extra.weight": torch.zeros(2)})
    with pytest.raises(ConfigError, match="trunk.0.norm.bias"):
        encode_clm({k: v for k, v in state.items() if k != "trunk.0.norm.bias"})


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str, event: str | None = None, **fields) -> None:
        self.lines.append(line)


@pytest.mark.parametrize(("quantizer", "matches"), [(Int4Config(), True), (Int8Config(), False)])
def test_observer_writes_the_file_and_reports_it(quantizer, matches, tmp_path):
    net = model(ConvMoEConfig(d_model=8), seed=2)
    ctx = types.SimpleNamespace(
        model=net, run_dir=tmp_path, log=_Log(), config=types.SimpleNamespace(quantizer=quantizer)
    )
    record: dict = {}
    ClmExportConfig(filename="out.clm").build().pg_report(ctx=ctx, record=record)
    blob = (tmp_path / "out.clm").read_bytes()
    assert record == {
        "clm_file": "out.clm",
        "clm_bytes": len(blob),
        "clm_sha256": hashlib.sha256(blob).hexdigest(),
        "clm_matches_artifact": matches,
    }
    assert ctx.log.lines and "out.clm" in ctx.log.lines[0]


def test_configure_refuses_a_model_that_is_not_conv_moe():
    run = types.SimpleNamespace(model=GPTConfig(num_layers=2, model_dim=64), plugins=(ClmExportConfig(),))
    with pytest.raises(ConfigError, match="GPTConfig"):
        pg_configure(run=run)
    pg_configure(run=types.SimpleNamespace(model=ConvMoEConfig(), plugins=(ClmExportConfig(),)))
    with pytest.raises(ConfigError, match="filename"):
        ClmExportConfig(filename="../x.clm")
