"""Our artifact container is never larger than upstream's for the same int8 model.

Upstream's baseline ships ``zlib.compress(torch.save(export_dict), 9)``; ours ships the same
codes and steps in the pickle-free container (docs/formats.md §2) with the same zlib-9. The
upstream file is built by `tests/unit/upstream_container.py` from upstream's documented dict
layout, on seeded random weights of a trained-like scale (std 0.02 matrices; per-block gains
near 1), so the comparison runs on codes spread over many levels, not on an init's zeros.
The baseline's full shape is measured by ``benchmarks/container_vs_upstream.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.pipeline.artifact import read_artifact
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.quant.int8 import Int8Config
from tests.artifact_files import write_with_configs
from tests.unit.upstream_container import trained_like, upstream_container_bytes, upstream_export_dict


def _trained_like_state(num_layers: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    model = GPTConfig(num_layers=num_layers, model_dim=width, num_heads=4, num_kv_heads=2).build(1024)
    return trained_like(model.state_dict(), seed)


def _ours(path: Path, state: dict, cfg: Int8Config) -> int:
    extras = {"arch": "gpt", "vocab_size": 1024, "harness_version": "0.1.0"}
    info = write_with_configs(
        path, cfg.build().quantize(state), ("int8", cfg), ("zlib", ZlibConfig(level=9)), extras=extras
    )
    return info.bytes_on_disk


@pytest.mark.parametrize(
    ("num_layers", "width", "passthrough_max_numel"),
    [(2, 128, 65_536), (4, 128, 65_536), (4, 128, 4096)],  # 4096: every matrix goes int8 per row
)
def test_our_container_is_not_larger_than_upstreams(tmp_path, num_layers, width, passthrough_max_numel):
    torch.set_num_threads(1)
    state = _trained_like_state(num_layers, width, seed=num_layers)
    cfg = Int8Config(passthrough_max_numel=passthrough_max_numel)
    qtensors = cfg.build().quantize(state)
    theirs = upstream_container_bytes(state, qtensors)
    ours = _ours(tmp_path / "a.pgolf", state, cfg)
    assert ours <= theirs, f"ours {ours} bytes > upstream's {theirs} bytes"
    # Same content: the file holds exactly the codes and steps upstream's dict holds.
    back, _ = read_artifact(tmp_path / "a.pgolf", compressor_for=lambda _n, c: ZlibConfig(**c).build())
    obj = upstream_export_dict(state, qtensors)
    assert obj["quantized"] and set(obj["quantized"]) | set(obj["passthrough"]) == set(state)
    for name, q in obj["quantized"].items():
        assert torch.equal(back[name].arrays["q"], q) and torch.equal(
            back[name].arrays["scale"], obj["scales"][name]
        )


def test_upstream_dict_follows_upstreams_layout():
    state = _trained_like_state(1, 128, seed=0)
    state["extra.weight"] = torch.ones(8, 8, dtype=torch.bfloat16)  # small, not a control name
    obj = upstream_export_dict(state, Int8Config(passthrough_max_numel=4096).build().quantize(state))
    keys = [
        "__quant_format__",
        "quantized",
        "scales",
        "dtypes",
        "passthrough",
        "qmeta",
        "passthrough_orig_dtypes",
    ]
    assert list(obj) == keys
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
    assert list(obj["quantized"]) == [n for n in state if n in obj["quantized"]]  # state-dict order
    assert obj["qmeta"]["tok_emb.weight"] == {"scheme": "per_row", "axis": 0}
    assert obj["dtypes"]["tok_emb.weight"] == "float32"
    # fp32 gains kept fp16 record their dtype; control tensors (attn_scale) stay fp32 and do not.
    assert obj["passthrough"]["blocks.0.attn_scale"].dtype == torch.float32
    assert "blocks.0.attn_scale" not in obj["passthrough_orig_dtypes"]
    assert obj["passthrough_orig_dtypes"] == {"extra.weight": "bfloat16"}
    assert obj["passthrough"]["extra.weight"].dtype == torch.float16
    assert (
        obj["scales"]["tok_emb.weight"].dtype == torch.float16
        and obj["quantized"]["tok_emb.weight"].dtype == torch.int8
    )
