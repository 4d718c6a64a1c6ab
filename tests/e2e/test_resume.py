"""Checkpoint + ``--resume`` end to end on CPU: a run interrupted after step k and resumed
from its checkpoint logs the same train losses at steps k+1..N as an uninterrupted run,
with Muon, SWA and EMA state carried over, and ends with a byte-identical artifact."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api.errors import ConfigError
from harness.pipeline.checkpoint import CHECKPOINT_NAME, read_checkpoint
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from tests.conftest import ROOT, TINY_SUBMISSION

RUN_PY = ROOT / "harness" / "run.py"

# The tiny submission, with a step-based schedule (no wallclock dependence), no cap, and
# both averagers on: SWA snapshots every step once the LR multiplier is below 0.9, EMA
# tracks every step (SWA is applied at the end, EMA yields to it); late QAT switches on at
# the same step, so the resumed process must start with fake quantization already on.
RESUMABLE = (
    textwrap.dedent(TINY_SUBMISSION)
    .replace("GRAD_ACCUM", "1")
    .replace("iterations=6,", "iterations=8,")
    .replace("max_wallclock_seconds=600.0", "max_wallclock_seconds=0.0")
    .replace("val_loss_every=3", "val_loss_every=4")
    .replace(
        "        cpu_profile={},\n",
        "        cpu_profile={},\n"
        "        schedule=StepWarmdownConfig(warmdown_iters=5),\n"
        "        plugins=(SWAConfig(start_frac=0.9, every=1), EMAConfig(decay=0.9), "
        "LateQATConfig(threshold=0.9)),\n",
    )
    .replace(
        "from plugins.arch.gpt import GPTConfig\n",
        "from plugins.arch.gpt import GPTConfig\n"
        "from plugins.averaging.ema import EMAConfig\n"
        "from plugins.averaging.swa import SWAConfig\n"
        "from plugins.algorithms.late_qat import LateQATConfig\n"
        "from plugins.schedule.step_warmdown import StepWarmdownConfig\n",
    )
)


def _losses(run_dir: Path) -> dict[int, str]:
    text = (run_dir / "train.log").read_text(encoding="utf-8")
    return {int(s): loss for s, loss in re.findall(r"^step:(\d+)/\d+ train_loss:(\S+)", text, flags=re.M)}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def submission(tmp_path_factory, default_dataset) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "tiny_resume"
    folder.mkdir()
    (folder / "train_gpt.py").write_text(RESUMABLE, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(submission) -> Path:
    assert run(build_submission_config(submission), submission_dir=submission, run_id="a") is not None
    return submission / "runs" / "a"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_resume_matches_the_uninterrupted_run(submission, uninterrupted, tmp_path):
    config = build_submission_config(submission)
    # Interrupted after step 5, when SWA has its first snapshot (LR multiplier 0.8 < 0.9)
    # and EMA 5 updates; the resume runs in a fresh process, as after a crash.
    sets = {"train.checkpoint_every_minutes": "1e-9", "train.stop_after_step": "5"}
    assert run(config, submission_dir=submission, run_id="b", sets=sets) is None
    b = submission / "runs" / "b"
    assert not (b / "submission.json").exists() and not list(b.glob("*.pgolf"))
    state, meta = read_checkpoint(b / CHECKPOINT_NAME)
    assert meta["step"] == 5 and state["trainer"]["step"] == 5
    swa = next(v for k, v in state["observers"].items() if k.endswith("SWA"))
    ema = next(v for k, v in state["observers"].items() if k.endswith("EMA"))
    assert swa["count"] == 1 and ema["updates"] == 5  # the averagers' state is in the file
    assert sorted(_losses(b)) == [1, 2, 3, 4, 5]

    # Refusals leave the folder untouched (checked before anything is written).
    files = {p.name: _sha(p) for p in b.iterdir()}
    with pytest.raises(ConfigError, match=r"train\.seed: 1337 -> 7"):
        run(config, submission_dir=submission, resume=b, sets={"train.seed": "7"})
    with pytest.raises(ConfigError, match="already finished"):
        run(config, submission_dir=submission, resume=uninterrupted)
    with pytest.raises(ConfigError, match="no checkpoint.pgck"):
        run(config, submission_dir=submission, resume=tmp_path)
    assert {p.name: _sha(p) for p in b.iterdir()} == files

    cmd = [sys.executable, str(RUN_PY), str(submission), "--resume", str(b)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a_losses, b_losses = _losses(uninterrupted), _losses(b)
    assert sorted(a_losses) == list(range(1, 9))
    assert b_losses == a_losses  # steps 6..8 come from the resumed process
    log = (b / "train.log").read_text(encoding="utf-8")
    assert "resume: step:5 " in log and log.count("resume:") == 1
    assert "swa:applying averaged 4 checkpoints" in log
    a_rec = json.loads((uninterrupted / "submission.json").read_text())
    b_rec = json.loads((b / "submission.json").read_text())
    assert b_rec["run_id"] == "b" and b_rec["steps"] == 8 == a_rec["steps"]
    assert b_rec["swa_snapshots"] == a_rec["swa_snapshots"] == 4
    assert b_rec["late_qat_step"] == a_rec["late_qat_step"] == 5
    assert b_rec["artifact_sha256"] == a_rec["artifact_sha256"]
    assert _sha(b / "final_model.int8.zlib.pgolf") == _sha(uninterrupted / "final_model.int8.zlib.pgolf")
    assert b_rec["val_bpb"] == a_rec["val_bpb"]
