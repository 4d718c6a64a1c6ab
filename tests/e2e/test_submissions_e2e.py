"""Every submission in submissions/ trains a few steps on CPU at a tiny width, bundles, and
its bundled train_gpt.py (run from another folder, with the same --set flags) reproduces the
harness run: training losses line for line, the artifact's sha256 and every score. The bundle
leaves the reporting phases out (`harness.pipeline.unshipped`) and says so."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from harness.pipeline.submission import build_submission_config
from tests.conftest import ROOT

RUN_PY = ROOT / "harness" / "run.py"
SUBMISSIONS = sorted(p.name for p in (ROOT / "submissions").iterdir() if (p / "train_gpt.py").is_file())
# Shrink width and data but keep the depth, so layer-indexed components (VE on 10-11, XSA on
# the last 4, recycled 3-4) stay what the submission says.
TINY = [
    "model.model_dim=128",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "train.iterations=3",
    "train.train_batch_tokens=512",
    "train.train_seq_len=128",
    "train.grad_accum_steps=1",
    "train.warmup_steps=1",
    "train.val_loss_every=0",
    "train.train_log_every=1",
    "eval.eval_seq_len=128",
    "eval.val_batch_size=512",
    "eval.val_max_tokens=512",
    "eval.eval_batch_seqs=8",
]
# Submissions whose model Config has other field names: these model overrides replace TINY's
# (GPT) ones. Heads before width: each --set is validated on its own.
TINY_MODEL = {
    "byte_gpt": ["model.n_heads=4", "model.d_model=64"],
    # Its stride (256) is longer than the 128-token window used here.
    "conv_moe": ["model.d_model=64", "model.trunk_layers=2", "eval.eval_stride=64"],
}


def tiny_sets(name: str) -> list[str]:
    """The --set overrides that shrink submission ``name`` for a CPU run."""
    if name not in TINY_MODEL:
        return TINY
    return TINY_MODEL[name] + [item for item in TINY if not item.startswith("model.")]


README = ROOT / "README.md"
# model_params of each record's logs (sp8192_recur_ttt: PR #1493's train_seed42/314/999.log).
UPSTREAM_PARAMS = {
    "baseline": 17_059_912,
    "10L_int5mlp": 25_517_137,
    "12L_recycled": 29_406_940,
    "sp8192_recur_ttt": 35_944_536,
}


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _losses(text: str) -> list[str]:
    return re.findall(r"^step:(\d+/\d+ train_loss:\S+)", text, flags=re.M)


SCORE_KEYS = (
    "val_bpb",
    "val_loss",
    "pre_quant_val_bpb",
    "pre_quant_val_loss",
    "roundtrip_val_bpb",
    "roundtrip_val_loss",
    "sliding_val_bpb",
    "sliding_val_loss",
    "ttt_val_bpb",
    "ttt_val_loss",
    "artifact_sha256",
    "bytes_model",
    "bytes_code",
    "code_sha256",
    "model_params",
    "steps",
)


def _param_count(name: str) -> int:
    config = build_submission_config(ROOT / "submissions" / name)
    with torch.device("meta"):
        model = config.model.build(config.data.vocab_size)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(UPSTREAM_PARAMS))
def test_submission_param_count_matches_upstream(name):
    assert _param_count(name) == UPSTREAM_PARAMS[name]


def _readme_params() -> dict[str, int]:
    """The params column of the README's submissions table."""
    rows = re.findall(
        r"^\| `submissions/([^`]+)` \|[^|]*\| ([\d,]+) \|", README.read_text(encoding="utf-8"), re.M
    )
    return {name: int(count.replace(",", "")) for name, count in rows}


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_submission_param_count_matches_the_readme(name):
    """Every submission, the byte models included (they have no upstream count), builds the
    parameter count the README's table states."""
    documented = _readme_params()
    assert name in documented, f"the README's submissions table has no row for {name}"
    assert _param_count(name) == documented[name]


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_submission_trains_bundles_and_bundle_reproduces(name, tmp_path, default_dataset):
    sub = tmp_path / name
    shutil.copytree(ROOT / "submissions" / name, sub, ignore=shutil.ignore_patterns("runs", "dist"))
    flags = [x for item in tiny_sets(name) for x in ("--set", item)]
    first = subprocess.run(
        [sys.executable, str(RUN_PY), str(sub), "--run-id", "h", *flags],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = sub / "runs" / "h"
    record = json.loads((run_dir / "submission.json").read_text())
    assert record["steps"] == 3 and record["valid"]
    assert record["bytes_code"] == os.path.getsize(run_dir / "train_gpt.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(run_dir / "train_gpt.py", elsewhere / "train_gpt.py")
    second = subprocess.run(
        [sys.executable, "train_gpt.py", "--run-id", "b", *flags],
        cwd=elsewhere,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    log_h = (run_dir / "train.log").read_text()
    log_b = (elsewhere / "runs" / "b" / "train.log").read_text()
    assert len(_losses(log_h)) == 3 and _losses(log_h) == _losses(log_b)
    # The shipped file ships itself unchanged: the same bytes are counted again.
    assert "code:bundle_self" in log_b
    shipped_again = (elsewhere / "runs" / "b" / "train_gpt.py").read_bytes()
    assert shipped_again == (run_dir / "train_gpt.py").read_bytes()
    rec_b = json.loads((elsewhere / "runs" / "b" / "submission.json").read_text())
    assert {k: rec_b[k] for k in SCORE_KEYS} == {k: record[k] for k in SCORE_KEYS}
    # The harness run reports every phase; the shipped file skips the unshipped ones, loudly.
    assert "baselines" in record and "telemetry" in record and "entropy" in record
    assert "baselines" not in rec_b and "telemetry" not in rec_b and "entropy" not in rec_b
    for phase in ("preflight", "code_origin", "integrity", "baselines", "telemetry", "entropy"):
        assert not re.search(rf"^{phase}: skipped", log_h, re.M)
        assert re.search(rf"^{phase}: skipped \(not shipped", log_b, re.M), phase
