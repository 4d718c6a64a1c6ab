"""`pgolf run SUB --seeds A,B`: one run per seed (own process, ``train.seed`` set, run id
``<base>_seed<S>``), then a summary in upstream's multi-seed submission.json schema; bad seed
lists and conflicting flags are refused before anything runs; a failing seed stops the series."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys

import pytest

from harness.tools.cli import main
from harness.tools.seeds import summarize
from tests.conftest import ROOT, write_tiny_submission


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _pgolf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.tools.cli", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, default_dataset):
    """`pgolf run tiny --seeds 5,6 --run-id ms` in a fresh process, shared by the checks below."""
    sub = write_tiny_submission(tmp_path_factory.mktemp("seeds") / "tiny")
    proc = _pgolf("run", str(sub), "--seeds", "5,6", "--run-id", "ms", "--set", "train.iterations=4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sub / "runs", proc.stdout


def test_each_seed_is_its_own_run(two_seeds):
    runs, _ = two_seeds
    assert sorted(p.name for p in runs.iterdir()) == ["ms_seed5", "ms_seed6", "ms_summary"]
    losses = {}
    for seed in (5, 6):
        rec = json.loads((runs / f"ms_seed{seed}" / "submission.json").read_text())
        assert rec["seed"] == seed and rec["run_id"] == f"ms_seed{seed}"
        assert rec["steps"] == 4  # the other --set flags reach every seed's run
        log = (runs / f"ms_seed{seed}" / "train.log").read_text()
        losses[seed] = re.findall(r"^step:\d+/\d+ train_loss:(\S+)", log, flags=re.M)
        assert len(losses[seed]) == 4
    assert losses[5] != losses[6]  # a different seed trains differently


def test_summary_matches_the_runs(two_seeds):
    runs, stdout = two_seeds
    recs = {s: json.loads((runs / f"ms_seed{s}" / "submission.json").read_text()) for s in (5, 6)}
    summary = json.loads((runs / "ms_summary" / "submission.json").read_text())
    a, b = recs[5]["val_bpb"], recs[6]["val_bpb"]
    mean = (a + b) / 2
    std = (((a - mean) ** 2 + (b - mean) ** 2) / (2 - 1)) ** 0.5  # sample std by hand
    assert a != b
    assert summary["val_bpb"] == pytest.approx(mean, rel=0, abs=1e-12)
    assert summary["val_bpb_std"] == pytest.approx(std, rel=1e-9)
    assert summary["val_loss"] == pytest.approx((recs[5]["val_loss"] + recs[6]["val_loss"]) / 2, abs=1e-12)
    assert summary["seeds"] == [5, 6]
    assert summary["seed_results"] == {
        str(s): {
            "val_bpb": recs[s]["val_bpb"],
            "val_loss": recs[s]["val_loss"],
            "bytes_total": recs[s]["bytes_total"],
            "run_id": f"ms_seed{s}",
        }
        for s in (5, 6)
    }
    assert summary["bytes_total"] == max(recs[5]["bytes_total"], recs[6]["bytes_total"])
    for key in ("name", "author", "github_id", "date", "track", "blurb"):
        assert summary[key] == recs[5][key]
    assert summary["name"] == "tiny"
    assert summary["valid"] is (recs[5]["valid"] is True and recs[6]["valid"] is True)
    # the printed table: one row per seed, then the mean and std
    assert re.search(rf"^5 +\| ms_seed5 +\| {a:.8f} ", stdout, flags=re.M)
    assert re.search(rf"^6 +\| ms_seed6 +\| {b:.8f} ", stdout, flags=re.M)
    assert f"mean val_bpb:{mean:.8f} std:{std:.8f}" in stdout


def test_summary_validity_and_one_seed():
    def rec(bpb: float, valid: bool, size: int) -> dict:
        return {"name": "x", "val_bpb": bpb, "val_loss": bpb * 2, "bytes_total": size, "valid": valid}

    out = summarize([(1, rec(1.0, True, 10)), (2, rec(1.2, False, 30)), (3, rec(1.4, True, 20))])
    assert out["valid"] is False and out["bytes_total"] == 30
    assert out["val_bpb"] == pytest.approx(1.2) and out["val_bpb_std"] == pytest.approx(0.2)
    assert out["val_bpb_std"] == pytest.approx(statistics.stdev([1.0, 1.2, 1.4]))
    one = summarize([(7, rec(1.1, True, 10))])
    assert one["valid"] is True and one["val_bpb"] == 1.1 and one["val_bpb_std"] is None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seeds", ""], "empty seed list"),
        (["--seeds", " , "], "empty seed list"),
        (["--seeds", "1,1"], "seed 1 is given twice"),
        (["--seeds", "1,+1"], "seed 1 is given twice"),
        (["--seeds", "1,x"], "'x' is not an integer"),
        (["--seeds", "1.5"], "'1.5' is not an integer"),
        (["--seeds", "1,,2"], "'' is not an integer"),
        (["--seeds", "1,2", "--set", "train.seed=3"], "--set train.seed"),
        (["--seeds", "1,2", "--resume", "somewhere"], "--resume"),
    ],
)
def test_refusals_run_nothing(tmp_path, capsys, extra, needle):
    sub = write_tiny_submission(tmp_path / "tiny")
    assert main(["run", str(sub), "--run-id", "r", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --seeds") and needle in err
    assert not (sub / "runs").exists()


def test_existing_run_folder_is_refused_up_front(tmp_path, capsys):
    sub = write_tiny_submission(tmp_path / "tiny")
    (sub / "runs" / "r_seed2").mkdir(parents=True)
    assert main(["run", str(sub), "--run-id", "r", "--seeds", "1,2"]) == 2
    assert "r_seed2" in capsys.readouterr().err
    assert sorted(p.name for p in (sub / "runs").iterdir()) == ["r_seed2"]  # seed 1 never ran


def test_a_failing_seed_stops_the_series(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "tiny")
    script = sub / "train_gpt.py"
    script.write_text(  # this submission refuses to build for seed 9 only
        script.read_text().replace(
            "def build_config() -> RunConfig:\n",
            "def build_config() -> RunConfig:\n"
            "    import sys\n"
            "    from harness.api.errors import ConfigError\n"
            "    if 'train.seed=9' in sys.argv:\n"
            "        raise ConfigError('seed 9 is broken on purpose')\n",
        )
    )
    proc = _pgolf("run", str(sub), "--run-id", "f", "--seeds", "8,9,10", "--set", "train.iterations=2")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "seed 9 is broken on purpose" in proc.stderr
    assert "error: --seeds: seed 9 failed" in proc.stderr and "finished runs kept: f_seed8" in proc.stderr
    assert "=== seed 10" not in proc.stdout  # stopped: the third seed never ran
    assert sorted(p.name for p in (sub / "runs").iterdir()) == ["f_seed8"]
    assert json.loads((sub / "runs" / "f_seed8" / "submission.json").read_text())["seed"] == 8
