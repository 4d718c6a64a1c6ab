"""A rank that raises or dies mid-training brings the whole 2-process gloo run down promptly,
and the output names the failed rank and the cause (torchrun ``--max-restarts=0``: one
failure ends the job, as upstream's launch command does).

The failure is injected by an observer plugin written into the tiny submission: on rank 1,
after step 2, it records the time and then raises ``RuntimeError("injected failure")`` or
calls ``os._exit(3)`` (a hard death: no Python cleanup, no message of ours).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from harness.api.errors import ConfigError
from harness.pipeline.distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, collective_timeout
from tests.conftest import ROOT, write_tiny_submission

RUN_PY = ROOT / "harness" / "run.py"
EXIT_BOUND_S = 30.0
"""Seconds allowed from the injected failure to torchrun's exit."""

INJECTOR = '''

import os
import time
from dataclasses import dataclass
from harness.api.hooks import hookimpl


@dataclass(frozen=True, kw_only=True)
class FailRankConfig:
    mode: str = "raise"
    """"raise" (RuntimeError) or "exit" (os._exit(3))."""
    stamp: str = ""
    """File that receives the time of the failure."""

    def build(self):
        return FailRank(self.mode, self.stamp)


class FailRank:
    def __init__(self, mode, stamp):
        self.mode, self.stamp = mode, stamp

    @hookimpl
    def pg_step_end(self, ctx):
        if ctx.dist.rank == 1 and ctx.step == 2:
            with open(self.stamp, "w") as fh:
                fh.write(repr(time.time()))
            if self.mode == "exit":
                os._exit(3)
            raise RuntimeError("injected failure")
'''


def _submission(folder, mode: str, stamp) -> object:
    sub = write_tiny_submission(folder)
    src = (sub / "train_gpt.py").read_text()
    src = src.replace("def build_config()", INJECTOR + "\n\ndef build_config()", 1)
    src = src.replace(
        "cpu_profile={},",
        f"cpu_profile={{}}, plugins=(FailRankConfig(mode={mode!r}, stamp={str(stamp)!r}),),",
    )
    (sub / "train_gpt.py").write_text(src)
    return sub


def _torchrun(sub, timeout_s: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", ITERATIONS="50")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=0",
        str(RUN_PY),
        str(sub),
        "--run-id",
        "f",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    return proc, time.time()


def _seconds_to_exit(stamp, ended: float) -> float:
    assert stamp.exists(), "the failure was never injected (rank 1 did not reach step 2)"
    return ended - float(stamp.read_text())


@pytest.mark.dist
def test_raising_rank_stops_the_job_and_is_named(tmp_path, default_dataset):
    stamp = tmp_path / "failed_at"
    proc, ended = _torchrun(_submission(tmp_path / "sub", "raise", stamp))
    elapsed = _seconds_to_exit(stamp, ended)
    print(
        f"[rank-failure raise] exit code {proc.returncode}, "
        f"{elapsed:.1f} s from the failure to the job's exit"
    )
    assert proc.returncode != 0
    assert elapsed < EXIT_BOUND_S, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: rank 1/2 failed:")]
    assert lines == ["error: rank 1/2 failed: RuntimeError: injected failure"], proc.stderr[-3000:]
    assert not (tmp_path / "sub" / "runs" / "f" / "submission.json").exists()


@pytest.mark.dist
def test_rank_dying_hard_stops_the_job_and_is_named(tmp_path, default_dataset):
    stamp = tmp_path / "failed_at"
    proc, ended = _torchrun(_submission(tmp_path / "sub", "exit", stamp))
    elapsed = _seconds_to_exit(stamp, ended)
    print(
        f"[rank-failure exit] exit code {proc.returncode}, {elapsed:.1f} s from the death to the job's exit"
    )
    assert proc.returncode != 0
    assert elapsed < EXIT_BOUND_S, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # torchrun's failure summary names the dead worker and its exit code.
    assert re.search(r"rank\s*:\s*1\b", out) and re.search(r"exitcode\s*:\s*3\b", out), out[-3000:]
    assert not (tmp_path / "sub" / "runs" / "f" / "submission.json").exists()


def test_collective_timeout_from_environment():
    assert collective_timeout({}).total_seconds() == DEFAULT_TIMEOUT_S
    assert collective_timeout({TIMEOUT_ENV: "12.5"}).total_seconds() == 12.5
    for bad in ("0", "-3", "abc", "nan", "inf"):
        with pytest.raises(ConfigError, match=TIMEOUT_ENV):
            collective_timeout({TIMEOUT_ENV: bad})
