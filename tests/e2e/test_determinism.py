"""Same seed, same data, same device (CPU): two runs of the tiny submission in two fresh
processes log identical train losses and produce byte-identical artifacts and equal scores."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, write_tiny_submission

RUN_PY = ROOT / "harness" / "run.py"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


# Opt-in: every submission's shipped-file test (tests/e2e/test_submissions_e2e.py) already compares
# two runs in two processes (the harness's and the shipped file's) line for line and byte for byte.
@pytest.mark.slow
def test_two_runs_are_identical(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "tiny")
    for rid, hashseed in (("x", "1"), ("y", "2")):  # a different str hash order must not matter
        env = _env() | {"PYTHONHASHSEED": hashseed}
        proc = subprocess.run(
            [sys.executable, str(RUN_PY), str(sub), "--run-id", rid],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    x, y = sub / "runs" / "x", sub / "runs" / "y"
    pattern = r"^step:\d+/\d+ (?:train_loss|val_loss):\S+(?: val_bpb:\S+)?"
    lx = re.findall(pattern, (x / "train.log").read_text(), flags=re.M)
    ly = re.findall(pattern, (y / "train.log").read_text(), flags=re.M)
    assert len(lx) == 6 + 3 and lx == ly  # 6 train lines, val at steps 0, 3 and 6
    rx, ry = (json.loads((d / "submission.json").read_text()) for d in (x, y))
    art = "final_model.int8.zlib.pgolf"
    assert hashlib.sha256((x / art).read_bytes()).digest() == hashlib.sha256((y / art).read_bytes()).digest()
    assert rx["artifact_sha256"] == ry["artifact_sha256"]
    for key in (
        "val_bpb",
        "val_loss",
        "pre_quant_val_bpb",
        "roundtrip_val_bpb",
        "sliding_val_bpb",
        "bytes_total",
    ):
        assert rx[key] == ry[key], key
    assert (x / "train_gpt.py").read_bytes() == (y / "train_gpt.py").read_bytes()  # the shipped code too
