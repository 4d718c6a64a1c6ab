"""plugins/compress/ans.py: lossless with and without a layout, within 1 % of the order-0 bound
(computed here from symbol counts by the textbook formula), selectable through the registry
and the artifact, and every malformed payload rejected with an ArtifactError."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from harness.api.bit_packing import pack_bits, unpack_bits
from harness.api.errors import ArtifactError, ConfigError
from harness.api.layout import Segment, layout_from_manifest
from harness.api.protocols import LayoutAwareCompressor
from harness.api.quantization import pack_nibbles, packed_nbytes
from harness.pipeline.artifact import load_state_dict, read_manifest
from harness.pipeline.entropy_report import entropy_report
from harness.pipeline.plugin_manager import full_manager
from plugins.compress.ans import MAGIC, AnsConfig
from plugins.quant.intn import IntNConfig
from tests.artifact_files import write_with_configs

PER_CLASS = AnsConfig(own_table_min_symbols=2**62)  # the tables the order-0 bound assumes


def _bound_bytes(*streams: np.ndarray) -> float:
    """Order-0 bound of each stream with its own table: sum of -c log2(c/n) over symbols, / 8."""
    total = 0.0
    for s in streams:
        counts = np.bincount(s.astype(np.int64))
        counts = counts[counts > 0]
        total += float(-(counts * np.log2(counts / counts.sum())).sum())
    return total / 8


def _int5_codes(n: int, seed: int, scale: float = 3.0) -> np.ndarray:
    """Heavy-tailed weights quantized to int5 levels 0..30 (code 15 = 0), like trained rows."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.standard_t(5, n) * scale) + 15, 0, 30).astype(np.int64)


def _packed(codes: np.ndarray, bits: int = 5) -> bytes:
    return pack_bits(torch.from_numpy(codes), bits).numpy().tobytes()


def _roundtrip(codec, data: bytes, layout=None) -> bytes:
    payload = codec.compress(data, layout=layout)
    assert codec.decompress(payload, max_output_size=len(data)) == data
    return payload


def test_registered_and_selectable():
    registry = full_manager(entrypoints=False).registry
    assert registry.get("compressor", "ans").config_cls is AnsConfig
    codec = AnsConfig().build()
    assert codec.name == "ans" and isinstance(codec, LayoutAwareCompressor)
    with pytest.raises(ConfigError, match="own_table_min_symbols"):
        AnsConfig(own_table_min_symbols=0)


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x07" * 5000, bytes(range(256)) * 3, np.random.default_rng(1).bytes(3000)]
)
def test_roundtrip_without_layout(data):
    payload = _roundtrip(AnsConfig().build(), data)
    assert payload.startswith(MAGIC)
    if data and len(set(data)) == 1:
        assert len(payload) < 64  # a one-symbol table costs no coded bits


def test_bytes_without_layout_meet_their_bound():
    rng = np.random.default_rng(2)
    data = rng.choice(256, size=200_000, p=np.r_[0.5, np.full(255, 0.5 / 255)]).astype(np.uint8).tobytes()
    payload = _roundtrip(AnsConfig().build(), data)
    bound = _bound_bytes(np.frombuffer(data, dtype=np.uint8))
    assert bound < len(payload) <= bound * 1.01 + 64  # 64 B: magic, lengths, 256-symbol table


def test_one_million_int5_symbols_within_one_percent_of_the_bound():
    """Default suite: ~1M packed int5 codes in two arrays of one class, plus fp16 scales."""
    a, b = _int5_codes(600_000, 3), _int5_codes(400_000, 4, scale=2.0)
    scales = np.random.default_rng(5).normal(0.01, 0.002, 2048).astype(np.float16).view(np.uint8)
    parts = [_packed(a), _packed(b), scales.tobytes()]
    offsets = np.cumsum([0] + [len(p) for p in parts])
    layout = [
        Segment(int(offsets[0]), len(parts[0]), 5, a.size, "mlp", "a"),
        Segment(int(offsets[1]), len(parts[1]), 5, b.size, "mlp", "b"),
        Segment(int(offsets[2]), len(parts[2]), 8, len(parts[2]), "scales", "s"),
    ]
    data = b"".join(parts)
    class_bound = _bound_bytes(np.concatenate([a, b]), scales)
    per_class = _roundtrip(PER_CLASS.build(), data, layout)
    assert class_bound < len(per_class) <= 1.01 * class_bound
    # Own tables for the two arrays: never worse than pooling them (beyond the table cost).
    own = _roundtrip(AnsConfig().build(), data, layout)
    assert len(own) <= 1.01 * _bound_bytes(a, b, scales) and len(own) <= len(per_class) + 64
    assert len(per_class) < 0.8 * len(data)  # the packed bytes themselves are near-incompressible


def test_full_size_12l_recycled_state_within_one_percent():
    """A 12L_recycled-shaped artifact (12 layers x (4 attn + 2 MLP) int5 matrices, 28.3M codes);
    about 5 s on one core, so it stays in the default suite."""
    shapes = [(512, 512), (256, 512), (256, 512), (512, 512), (1536, 512), (512, 1536)]
    codes = [_int5_codes(r * c, 100 + i) for i, (r, c) in enumerate(shapes * 12)]
    data = b"".join(_packed(c) for c in codes)
    layout, pos = [], 0
    for i, c in enumerate(codes):
        n = packed_nbytes(c.size, 5)
        layout.append(Segment(pos, n, 5, c.size, "mlp" if i % 6 >= 4 else "attn", str(i)))
        pos += n
    mlp = np.concatenate([c for i, c in enumerate(codes) if i % 6 >= 4])
    attn = np.concatenate([c for i, c in enumerate(codes) if i % 6 < 4])
    bound = _bound_bytes(mlp, attn)
    payload = _roundtrip(PER_CLASS.build(), data, layout)
    assert len(payload) <= 1.01 * bound


def test_artifact_with_the_real_int5_quantizer(tmp_path):
    """Through write_artifact: the harness hands the layout over, the file decodes to exactly
    the quantized tensors, and the payload is within 1 % of the bound of its own symbols."""
    torch.manual_seed(0)
    state = {
        "blocks.0.mlp.fc.weight": torch.randn(512, 256) * 0.02,
        "blocks.0.attn.c_q.weight": torch.randn(384, 256) * 0.02,
        "blocks.0.mlp_scale": torch.ones(256),
    }
    qcfg = IntNConfig()
    tensors = qcfg.build().quantize(state)
    path = tmp_path / "a.pgolf"
    info = write_with_configs(path, tensors, ("intn", qcfg), ("ans", PER_CLASS))
    loaded, manifest = load_state_dict(path, full_manager(entrypoints=False).registry)
    direct = qcfg.build().dequantize(tensors)
    assert all(torch.equal(loaded[k], direct[k]) for k in state)
    mlp = unpack_bits(tensors["blocks.0.mlp.fc.weight"].arrays["q"], 5, 512 * 256).numpy()
    attn = unpack_bits(tensors["blocks.0.attn.c_q.weight"].arrays["q"], 5, 384 * 256).numpy()
    scales = np.concatenate(
        [tensors[k].arrays["scale"].view(torch.uint8).numpy() for k in sorted(state) if k.endswith("weight")]
    )
    floats = tensors["blocks.0.mlp_scale"].arrays["w"].view(torch.uint8).numpy()
    bound = _bound_bytes(mlp, attn, scales, floats)
    assert entropy_report(tensors, info.bytes_on_disk).bound_bytes == pytest.approx(bound)
    payload = info.bytes_on_disk - _head_bytes(path)
    assert payload <= 1.01 * bound + 200  # + the 4 tables and 8 segment records
    assert manifest["compressor"] == {"name": "ans", "config": {"own_table_min_symbols": 2**62}}


def _head_bytes(path) -> int:
    """Bytes before the payload: magic (8), version (u16), manifest length (u32), manifest, sha256 (32)."""
    with open(path, "rb") as f:
        (mlen,) = struct.unpack("<I", f.read(14)[10:])
    return 14 + mlen + 32


def test_layout_hint_is_what_makes_packed_codes_small(tmp_path):
    codes = _int5_codes(80_000, 6)
    data = _packed(codes)
    codec = AnsConfig().build()
    with_layout = codec.compress(data, layout=[Segment(0, len(data), 5, codes.size, "mlp", "w")])
    assert len(with_layout) < 0.85 * len(codec.compress(data))  # ~4.0 coded bits vs ~5 in bytes


def test_odd_int4_nibbles_and_non_canonical_padding_stay_lossless():
    nibbles = (
        pack_nibbles(torch.tensor([[1, -7, 3], [0, 7, -1], [2, 2, 2]])).numpy().tobytes()
    )  # 9 codes + pad 8
    dirty = bytearray(_packed(np.array([1, 2, 3])))
    dirty[-1] |= 0x80  # a padding bit: unpack -> pack loses it, so the segment is coded as bytes
    data = nibbles + bytes(dirty) + b"tail"
    layout = [
        Segment(0, len(nibbles), 4, 2 * len(nibbles), "other_quant"),
        Segment(len(nibbles), len(dirty), 5, 3, "mlp"),
    ]
    _roundtrip(AnsConfig().build(), data, layout)


def test_layout_gaps_are_coded_as_bytes_and_overlaps_rejected():
    codes = _int5_codes(1000, 7)
    packed = _packed(codes)
    data = b"head" + packed + b"tail!"
    _roundtrip(AnsConfig().build(), data, [Segment(4, len(packed), 5, codes.size, "mlp")])
    codec = AnsConfig().build()
    with pytest.raises(ArtifactError, match="overlaps"):
        codec.compress(data, layout=[Segment(0, 10, 8, 10, "float"), Segment(5, 10, 8, 10, "float")])
    with pytest.raises(ArtifactError, match="past the data"):
        codec.compress(data, layout=[Segment(0, len(data) + 1, 8, len(data) + 1, "float")])
    with pytest.raises(ArtifactError, match="take"):
        codec.compress(data, layout=[Segment(4, len(packed), 5, codes.size + 9, "mlp")])


def test_coded_bytes_per_class_add_up_to_the_stream():
    a, b = _int5_codes(50_000, 8), _int5_codes(30_000, 9, scale=1.0)
    data = _packed(a) + _packed(b)
    codec = PER_CLASS.build()
    payload = codec.compress(
        data,
        layout=[
            Segment(0, len(_packed(a)), 5, a.size, "mlp"),
            Segment(len(_packed(a)), len(_packed(b)), 5, b.size, "attn"),
        ],
    )
    assert set(codec.coded_class_bytes()) == {"mlp", "attn"}
    assert codec.coded_class_bytes()["mlp"] == pytest.approx(_bound_bytes(a), rel=0.01)
    assert codec.coded_class_bytes()["attn"] == pytest.approx(_bound_bytes(b), rel=0.01)
    assert sum(codec.coded_class_bytes().values()) <= len(payload)


# ---------------------------------------------------------------- malformed payloads


def _sample_payload() -> tuple[bytes, bytes]:
    codes = _int5_codes(4000, 10)
    data = _packed(codes) + bytes(range(200))
    payload = PER_CLASS.build().compress(
        data, layout=[Segment(0, packed_nbytes(codes.size, 5), 5, codes.size, "mlp")]
    )
    return data, payload


def test_declared_size_over_the_bound_is_refused_before_decoding():
    data, payload = _sample_payload()
    with pytest.raises(
        ArtifactError, match=f"declares {len(data)} bytes, more than the bound {len(data) - 1}"
    ):
        AnsConfig().build().decompress(payload, max_output_size=len(data) - 1)


def test_bad_magic_and_every_truncation_raise_artifact_errors():
    data, payload = _sample_payload()
    codec = AnsConfig().build()
    with pytest.raises(ArtifactError, match="magic"):
        codec.decompress(b"ANS0" + payload[4:], len(data))
    for n in range(0, len(payload), max(1, len(payload) // 300)):
        with pytest.raises(ArtifactError):
            codec.decompress(payload[:n], len(data))
    with pytest.raises(ArtifactError):
        codec.decompress(payload + b"\x00", len(data))


def test_bad_table_frequencies_are_named():
    # One 8-bit table with symbols 0 and 1 at frequencies 1 and 1 (sum != 2**24), one segment.
    bitmap = bytes([0b11]) + bytes(31)
    payload = MAGIC + bytes([2, 1, 8]) + bitmap + bytes([1, 1]) + bytes([1, 0, 2, 0])
    with pytest.raises(ArtifactError, match="table 0 frequencies must be >= 1 and sum to 2\\*\\*24"):
        AnsConfig().build().decompress(payload, 2)
    with pytest.raises(ArtifactError, match="table 0 has bits 9"):
        AnsConfig().build().decompress(MAGIC + bytes([2, 1, 9]), 2)
    with pytest.raises(
        ArtifactError, match="names table 3"
    ):  # a one-symbol table, then a segment naming table 3
        AnsConfig().build().decompress(MAGIC + bytes([2, 1, 8, 1]) + bytes(31) + bytes([1, 3, 2, 0]), 2)


def test_flipped_bits_never_escape_as_other_errors():
    data, payload = _sample_payload()
    codec = AnsConfig().build()
    rng = np.random.default_rng(11)
    for _ in range(200):
        bad = bytearray(payload)
        i = int(rng.integers(len(bad)))
        bad[i] ^= 1 << int(rng.integers(8))
        try:
            out = codec.decompress(bytes(bad), len(data))
        except ArtifactError:
            continue
        assert len(out) == len(data)  # undetected here; the artifact's payload sha256 catches it


def test_layout_from_a_real_manifest_is_accepted(tmp_path):
    """write_artifact's layout (the same function the benchmark uses) drives the coder."""
    torch.manual_seed(1)
    qcfg = IntNConfig()
    tensors = qcfg.build().quantize({"blocks.0.mlp.fc.weight": torch.randn(300, 256) * 0.02})
    path = tmp_path / "b.pgolf"
    write_with_configs(path, tensors, ("intn", qcfg), ("ans", AnsConfig()))
    segs = layout_from_manifest(read_manifest(path)["tensors"])
    assert [(s.cls, s.bits) for s in segs] == [("mlp", 5), ("scales", 8)]
    assert math.isclose(segs[0].count, 300 * 256)
