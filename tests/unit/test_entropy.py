"""harness.pipeline.entropy_report: symbol reading, tensor classes, order-0 bounds checked against
hand-computed entropies, the layout handed to compressors, and the report a run logs and writes."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from harness.api.bit_packing import pack_bits
from harness.api.layout import layout_from_manifest, read_symbols, reading
from harness.api.protocols import QTensor
from harness.api.quantization import pack_nibbles
from harness.api.tensor_classes import CLASSES, tensor_class
from harness.pipeline.artifact import config_to_json, read_manifest, write_artifact
from harness.pipeline.entropy_report import entropy_report, order0_bits
from plugins.compress.zlib import ZlibConfig


def _h_bits(counts: list[int]) -> float:
    """n * H by the textbook formula, independent of the code under test."""
    n = sum(counts)
    return sum(-c * math.log2(c / n) for c in counts if c)


def _hand_state() -> dict[str, QTensor]:
    """Four tensors whose symbols are known byte by byte (see the test below)."""
    one = torch.tensor([1.0, 1.0], dtype=torch.float16)  # fp16 1.0 = bytes 00 3C
    half = torch.tensor([0.5, 0.5], dtype=torch.float16)  # fp16 0.5 = bytes 00 38
    codes = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])  # 3-bit codes: H = 1.75 bits
    return {
        "blocks.0.mlp.fc.weight": QTensor(
            "intn_packed",
            {"q": pack_bits(codes, 3), "scale": one},
            {"dtype": "float32", "bits": 3, "shape": [2, 4], "offset": 3},
        ),
        "tok_emb.weight": QTensor(
            "int8_row",
            {"q": torch.tensor([[1, -1], [1, 1]], dtype=torch.int8), "scale": half},
            {"dtype": "float32"},
        ),
        "blocks.0.attn.c_q.weight": QTensor(  # q = [1, 1, -1] -> nibbles 9, 9, 7 and the pad nibble 8
            "int4_channel",
            {"codes": pack_nibbles(torch.tensor([[1, 1, -1]])), "scale": torch.tensor([1.0])},
            {"dtype": "float32", "shape": [1, 3]},
        ),
        "norm.weight": QTensor(
            "passthrough", {"w": torch.tensor([1.0])}, {"dtype": "float32"}
        ),  # 00 00 80 3F
    }


def test_order0_bits_matches_hand_values():
    assert order0_bits(np.array([1, 1, 2])) == pytest.approx(6.0)  # 4 symbols x 1.5 bits
    assert order0_bits(np.array([0, 3, 0, 1])) == pytest.approx(4 * 0.8112781244591328)
    assert order0_bits(np.array([7])) == 0.0 and order0_bits(np.array([], dtype=np.int64)) == 0.0


@pytest.mark.parametrize(
    ("name", "kind", "key", "cls"),
    [
        ("tok_emb.weight", "int8_row", "q", "embed"),
        ("ve_shared.embed.weight", "intn", "q", "embed"),
        ("blocks.3.attn.c_k.weight", "intn_packed", "q", "attn"),
        ("blocks.3.mlp.proj.weight", "intn_packed", "q", "mlp"),
        ("lm_head.weight", "int8_tensor", "q", "other_quant"),
        ("experts.0.weight", "int4_channel", "codes", "other_quant"),
        ("blocks.3.mlp.proj.weight", "intn_packed", "scale", "scales"),
        ("blocks.3.mlp_scale", "passthrough", "w", "float"),
        ("blocks.3.mlp.fc.weight", "some_new_kind", "q", "float"),
    ],
)
def test_tensor_class(name, kind, key, cls):
    assert tensor_class(name, kind, key) == cls and cls in CLASSES


def test_reading_unpacks_only_consistent_packed_streams():
    meta = {"bits": 5, "shape": [4, 8]}
    assert reading("intn_packed", meta, "q", 20) == (5, 32)  # 32 x 5 bits = 20 bytes
    assert reading("intn_packed", meta, "q", 21) == (8, 21)  # size does not match the meta: bytes
    assert reading("intn_packed", {"bits": "5", "shape": [4]}, "q", 3) == (8, 3)
    assert reading("int4_channel", {}, "codes", 7) == (4, 14)
    assert reading("intn", {"bits": 5}, "q", 9) == (8, 9)
    assert reading("passthrough", {}, "w", 6) == (8, 6)


def test_read_symbols_falls_back_when_padding_bits_are_set():
    packed = pack_bits(torch.tensor([1, 2, 3]), 5).numpy()  # 15 bits in 2 bytes, bit 15 is padding
    assert read_symbols(packed.copy(), 5, 3).tolist() == [1, 2, 3]
    dirty = packed.copy()
    dirty[1] |= 0x80
    assert read_symbols(dirty, 5, 3) is None  # re-packing would lose the bit: read as bytes


def test_report_on_hand_made_tensors():
    rep = entropy_report(_hand_state(), compressed_bytes=10)
    got = {c.cls: c for c in rep.classes}
    assert list(got) == ["embed", "attn", "mlp", "scales", "float"]  # CLASSES order, empty ones left out
    # mlp: codes 0,0,0,0,1,1,2,3 -> 1.75 bits each.
    assert (got["mlp"].symbols, got["mlp"].alphabet) == (8, 4)
    assert got["mlp"].bits_per_symbol == pytest.approx(1.75)
    assert got["mlp"].bound_bytes == pytest.approx(1.75)
    # embed: int8 bytes 01 FF 01 01.
    assert (got["embed"].symbols, got["embed"].alphabet) == (4, 2)
    assert got["embed"].bound_bytes == pytest.approx(_h_bits([3, 1]) / 8)
    # attn: nibbles 9, 9, 7, 8 (the pad nibble is a symbol).
    assert (got["attn"].symbols, got["attn"].alphabet) == (4, 3)
    assert got["attn"].bound_bytes == pytest.approx(_h_bits([2, 1, 1]) / 8)
    # scales, pooled: 00 3C 00 3C | 00 38 00 38 | 00 00 80 3F.
    assert (got["scales"].symbols, got["scales"].alphabet) == (12, 5)
    assert got["scales"].bound_bytes == pytest.approx(_h_bits([6, 2, 2, 1, 1]) / 8)
    # float: 00 00 80 3F.
    assert got["float"].bound_bytes == pytest.approx(_h_bits([2, 1, 1]) / 8)
    total = (8 * 1.75 + _h_bits([3, 1]) + _h_bits([2, 1, 1]) * 2 + _h_bits([6, 2, 2, 1, 1])) / 8
    assert rep.bound_bytes == pytest.approx(total)
    assert rep.ratio == pytest.approx(10 / total)


def test_log_lines_and_record():
    rep = entropy_report(_hand_state(), compressed_bytes=10)
    lines = rep.log_lines({"mlp": 2})
    assert len(lines) == len(rep.classes) + 1
    pattern = (
        r"entropy class:(\w+) symbols:\d+ alphabet:\d+ bits_per_symbol:\d+\.\d{4} "
        r"bound_bytes:\d+( coded_bytes:\d+)?"
    )
    assert all(re.fullmatch(pattern, line) for line in lines[:-1])
    assert "class:mlp" in lines[2] and lines[2].endswith("coded_bytes:2")
    assert re.fullmatch(
        r"entropy total symbols:32 bound_bytes:\d+ compressed_bytes:10 ratio:\d+\.\d{4}", lines[-1]
    )
    record = json.loads(json.dumps(rep.as_record({"mlp": 2})))  # plain JSON
    assert set(record) == {"classes", "bound_bytes", "compressed_bytes", "ratio"}
    assert record["classes"]["mlp"] == {
        "symbols": 8,
        "alphabet": 4,
        "bits_per_symbol": 1.75,
        "bound_bytes": 1.8,
        "coded_bytes": 2,
    }
    assert "coded_bytes" not in record["classes"]["embed"]
    assert record["ratio"] == pytest.approx(10 / rep.bound_bytes, rel=1e-5)


def test_layout_tiles_the_written_payload(tmp_path):
    path = tmp_path / "a.pgolf"
    cfg = ZlibConfig()
    info = write_artifact(
        path,
        _hand_state(),
        quantizer_name="mixed",
        quantizer_config={},
        compressor=cfg.build(),
        compressor_name="zlib",
        compressor_config=config_to_json(cfg),
    )
    segs = layout_from_manifest(read_manifest(path)["tensors"])
    # Payload order (artifact format 2): codes, then scales, then the rest, each by name.
    assert [s.name for s in segs] == [
        "blocks.0.attn.c_q.weight.codes",
        "blocks.0.mlp.fc.weight.q",
        "tok_emb.weight.q",
        "blocks.0.attn.c_q.weight.scale",
        "blocks.0.mlp.fc.weight.scale",
        "tok_emb.weight.scale",
        "norm.weight.w",
    ]
    assert segs[0].offset == 0 and all(
        a.offset + a.nbytes == b.offset for a, b in zip(segs[:-1], segs[1:], strict=True)
    )
    assert segs[-1].offset + segs[-1].nbytes == info.raw_bytes
    by_name = {s.name: s for s in segs}
    assert (by_name["blocks.0.mlp.fc.weight.q"].bits, by_name["blocks.0.mlp.fc.weight.q"].count) == (3, 8)
    assert (
        by_name["blocks.0.attn.c_q.weight.codes"].bits,
        by_name["blocks.0.attn.c_q.weight.codes"].count,
    ) == (4, 4)
    assert by_name["tok_emb.weight.q"].bits == 8 and by_name["tok_emb.weight.q"].cls == "embed"


def test_run_logs_and_reports_the_bound(tmp_path, default_dataset):
    """A tiny run with the ans coder: entropy lines in train.log, an ``entropy`` dict in
    submission.json whose compressed bytes are the artifact's size and whose mlp class counts
    exactly the model's MLP weights."""
    from harness.pipeline.runner import run
    from harness.pipeline.submission import build_submission_config
    from tests.conftest import write_tiny_submission

    sub = write_tiny_submission(tmp_path / "tiny")
    src = (sub / "train_gpt.py").read_text()
    src = src.replace(
        "from plugins.compress.zlib import ZlibConfig", "from plugins.compress.ans import AnsConfig"
    )
    src = src.replace("ZlibConfig(level=9)", "AnsConfig()").replace(
        "Int8Config()", "Int8Config(passthrough_max_numel=1024)"
    )
    (sub / "train_gpt.py").write_text(src)
    config = build_submission_config(sub)
    record = run(config, submission_dir=sub, run_id="r1")
    run_dir = sub / "runs" / "r1"
    saved = json.loads((run_dir / "submission.json").read_text())["entropy"]
    assert saved == record["entropy"]
    assert (
        saved["compressed_bytes"]
        == record["bytes_model"]
        == (run_dir / record["artifact_file"]).stat().st_size
    )
    assert saved["bound_bytes"] == pytest.approx(
        sum(c["bound_bytes"] for c in saved["classes"].values()), abs=1
    )
    model = config.model.build(config.data.vocab_size)
    mlp = sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n and p.numel() > 1024)
    assert saved["classes"]["mlp"]["symbols"] == mlp
    assert {"embed", "attn", "mlp", "scales", "float"} <= set(saved["classes"])
    assert all("coded_bytes" in c for c in saved["classes"].values())  # the ans coder reports them
    log = (run_dir / "train.log").read_text()
    assert len(re.findall(r"^entropy class:\w+ ", log, re.M)) == len(saved["classes"])
    total = re.search(
        r"^entropy total symbols:\d+ bound_bytes:\d+ compressed_bytes:(\d+) ratio:(\S+)$", log, re.M
    )
    assert total and int(total.group(1)) == record["bytes_model"]
    assert float(total.group(2)) == pytest.approx(saved["ratio"], abs=1e-4)
