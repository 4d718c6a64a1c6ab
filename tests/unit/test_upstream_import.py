"""``pgolf import`` + ``rescore`` of upstream checkpoints.

The parity fixture ``tests/fixtures/upstream_int8`` was written by upstream's own baseline
code (``benchmarks/upstream_parity/int8_fixture.py``: its GPT, ``quantize_state_dict_int8``,
``torch.save``, zlib-9) and ``expected.json`` holds upstream ``eval_val``'s score of it on CPU.
Our import and rescore must reproduce that score to 1e-6. The format tests build upstream's
``int8_clean_per_row_v1`` layout by hand with values whose dequantization is worked out here.
"""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api.errors import ArtifactError, PgolfError
from harness.pipeline.artifact import load_state_dict, read_manifest
from harness.pipeline.plugin_manager import full_manager
from harness.pipeline.shards import write_shard
from harness.tools.cli import main as cli_main
from harness.tools.rescore import rescore
from harness.tools.upstream_import import import_upstream, upstream_qtensors
from harness.tools.upstream_pickle import read_torch_file
from plugins.arch.gpt import GPTConfig

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_int8"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))

SUBMISSION = '''
"""The fixture's shape as a submission: the baseline's components at 2 layers x 32 wide."""
from harness.api.config import RunConfig
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config


def build_config() -> RunConfig:
    return RunConfig(
        name="tiny_upstream",
        model=GPTConfig(num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2.0),
        optimizer=MuonConfig(),
        quantizer=Int8Config(),
        compressor=ZlibConfig(level=9),
    )
'''


def _val_tokens() -> np.ndarray:
    # Same integer formula as benchmarks/upstream_parity/int8_fixture.py (no RNG anywhere).
    count = EXPECTED["num_seqs"] * EXPECTED["seq_len"] + 1
    return np.array([((i * i * 7 + i * 13 + 5) % 9973) % 1024 for i in range(count)], dtype=np.uint16)


@pytest.fixture
def submission(tmp_path) -> Path:
    folder = tmp_path / "tiny_upstream"
    folder.mkdir()
    (folder / "train_gpt.py").write_text(textwrap.dedent(SUBMISSION), encoding="utf-8")
    return folder


@pytest.fixture
def val_data(tmp_path, shared_data) -> tuple[Path, Path]:
    tokenizer = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    if not tokenizer.is_file():
        pytest.skip(f"official tokenizer not found at {tokenizer}")
    folder = tmp_path / "val"
    folder.mkdir()
    write_shard(folder / "fineweb_val_000000.bin", _val_tokens(), 1024)
    return folder, tokenizer


def _score(artifact: Path, val_data: tuple[Path, Path]) -> dict[str, float]:
    # Upstream's eval on CPU has no autocast (its autocast is for "cuda"); bf16 comes from
    # the embedding's dtype, which is what upstream_numerics reproduces.
    return rescore(
        artifact,
        data_path=val_data[0],
        tokenizer_path=val_data[1],
        seq_len=EXPECTED["seq_len"],
        stride=0,
        batch_seqs=8,
        autocast_dtype=None,
    )


def test_fixture_is_what_expected_json_describes():
    assert EXPECTED["ptz_sha256"] == hashlib.sha256((FIXTURE / "tiny.int8.ptz").read_bytes()).hexdigest()


def test_rescore_matches_upstream_eval_val_to_1e6(submission, val_data, tmp_path):
    out = tmp_path / "imported.pgolf"
    import_upstream(FIXTURE / "tiny.int8.ptz", submission, out)
    scored = _score(out, val_data)
    assert scored["tokens"] == EXPECTED["num_seqs"] * EXPECTED["seq_len"]
    assert abs(scored["val_loss"] - EXPECTED["val_loss"]) <= 1e-6
    assert abs(scored["val_bpb"] - EXPECTED["val_bpb"]) <= 1e-6
    extras = read_manifest(out)["extras"]
    assert [c["_class"] for c in extras["arch_config"]["components"]] == [
        "plugins.arch.upstream_numerics.UpstreamNumericsConfig"
    ]
    assert extras["imported_from"]["format"] == "int8_clean_per_row_v1"
    assert extras["imported_from"]["sha256"] == EXPECTED["ptz_sha256"]


def test_harness_numerics_score_differently(submission, val_data, tmp_path):
    # Without the switch (fp32 embedding and RoPE, no autocast) the same weights score
    # measurably differently: the switch is what makes the match above.
    out = tmp_path / "fp32.pgolf"
    import_upstream(FIXTURE / "tiny.int8.ptz", submission, out, upstream_numerics=False)
    assert abs(_score(out, val_data)["val_loss"] - EXPECTED["val_loss"]) > 1e-4


def test_imported_weights_are_upstreams_dequantization(submission, tmp_path):
    obj = read_torch_file((FIXTURE / "tiny.int8.ptz").read_bytes(), "fixture")
    out = tmp_path / "imported.pgolf"
    import_upstream(FIXTURE / "tiny.int8.ptz", submission, out)
    state, _ = load_state_dict(out, full_manager().registry)
    assert sorted(obj["quantized"]) == EXPECTED["quantized"]
    for name, q in obj["quantized"].items():  # q * per-row step, in the recorded dtype
        step = obj["scales"][name].float()[:, None]
        want = (q.float() * step).to(getattr(torch, obj["dtypes"][name]))
        assert state[name].dtype == want.dtype and torch.equal(state[name], want), name
    for name, kept in obj["passthrough"].items():
        assert torch.equal(state[name].float(), kept.float()), name
    assert state["tok_emb.weight"].dtype == torch.bfloat16  # upstream keeps its embedding bf16


def _int8_export() -> dict:
    """A hand-made upstream int8 export: one per-row tensor, one per-tensor, two passthroughs."""
    return {
        "__quant_format__": "int8_clean_per_row_v1",
        "quantized": {
            "rows": torch.tensor([[1, -2], [127, 0]], dtype=torch.int8),
            "vec": torch.tensor([4, -8, 0], dtype=torch.int8),
        },
        "scales": {
            "rows": torch.tensor([0.5, 0.25], dtype=torch.float16),
            "vec": torch.tensor(0.125, dtype=torch.float32),
        },
        "dtypes": {"rows": "float32", "vec": "bfloat16"},
        "qmeta": {"rows": {"scheme": "per_row", "axis": 0}},
        "passthrough": {
            "gain": torch.tensor([1.5, 2.0], dtype=torch.float32),
            "small": torch.tensor([0.5, -1.0], dtype=torch.float16),
        },
        "passthrough_orig_dtypes": {"small": "bfloat16"},
    }


def test_int8_export_maps_to_our_kinds_and_decodes_by_hand():
    tensors, fmt = upstream_qtensors(_int8_export(), "x.ptz")
    assert fmt == "int8_clean_per_row_v1"
    assert {n: t.kind for n, t in tensors.items()} == {
        "rows": "int8_row",
        "vec": "int8_tensor",
        "gain": "passthrough",
        "small": "passthrough",
    }
    quantizer = full_manager().registry.get("quantizer", "int8").config_cls().build()
    state = quantizer.dequantize(tensors)
    assert state["rows"].tolist() == [[0.5, -1.0], [31.75, 0.0]] and state["rows"].dtype == torch.float32
    assert state["vec"].tolist() == [0.5, -1.0, 0.0] and state["vec"].dtype == torch.bfloat16
    assert state["gain"].tolist() == [1.5, 2.0] and state["gain"].dtype == torch.float32
    assert state["small"].tolist() == [0.5, -1.0] and state["small"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("mutate", "msg"),
    [
        (
            lambda o: o.update(__quant_format__="int6_mixed_v2"),
            "quant format 'int6_mixed_v2' is not supported",
        ),
        (lambda o: o["scales"].pop("rows"), r"quantized\['rows'\] needs an int8 tensor and a scales tensor"),
        (lambda o: o["dtypes"].update(rows="complex64"), r"dtypes\['rows'\] is 'complex64'"),
        (lambda o: o["scales"].update(rows=torch.ones(3)), "expected one per row"),
        (lambda o: o.update(passthrough=[1]), "'passthrough' must be a dict"),
        (lambda o: o["passthrough"].update(rows=torch.ones(2)), "both quantized and passed through"),
    ],
)
def test_malformed_exports_name_the_field(mutate, msg):
    obj = _int8_export()
    mutate(obj)
    with pytest.raises(ArtifactError, match=msg):
        upstream_qtensors(obj, "x.ptz")


def test_names_and_shapes_must_fit_the_submission(submission, tmp_path):
    src = tmp_path / "other.pt"
    buf = io.BytesIO()
    torch.save({"tok_emb.weight": torch.zeros(1024, 32), "stray": torch.zeros(2)}, buf)
    src.write_bytes(buf.getvalue())
    with pytest.raises(ArtifactError, match=r"missing \['blocks.0.attn.c_k.weight'.*unexpected \['stray'\]"):
        import_upstream(src, submission, tmp_path / "o.pgolf")
    assert not (tmp_path / "o.pgolf").exists()


def test_float_state_dict_imports_bit_for_bit(submission, tmp_path):
    cfg_model = GPTConfig(num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2.0)
    torch.manual_seed(0)
    sd = {k: torch.randn_like(v) for k, v in cfg_model.build(1024).state_dict().items()}
    src = tmp_path / "final_model.pt"
    src.write_bytes(zlib.compress(_torch_bytes(sd)))
    out = tmp_path / "f.pgolf"
    import_upstream(src, submission, out, upstream_numerics=False)
    state, manifest = load_state_dict(out, full_manager().registry)
    assert manifest["extras"]["imported_from"]["format"] == "state_dict"
    assert all(torch.equal(state[k], sd[k]) for k in sd)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_cli_import_writes_once_and_refuses_to_overwrite(submission, tmp_path, capsys):
    out = tmp_path / "cli.pgolf"
    argv = ["import", str(FIXTURE / "tiny.int8.ptz"), "--submission", str(submission), "-o", str(out)]
    assert cli_main(argv) == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert cli_main(argv) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_bad_source_is_a_pgolf_error(submission, tmp_path):
    bad = tmp_path / "bad.ptz"
    bad.write_bytes(b"\x78\x9c garbage")
    with pytest.raises(PgolfError, match="bad.ptz: corrupt zlib stream"):
        import_upstream(bad, submission, tmp_path / "x.pgolf")
    with pytest.raises(PgolfError, match="cannot read"):
        import_upstream(tmp_path / "missing.ptz", submission, tmp_path / "x.pgolf")
