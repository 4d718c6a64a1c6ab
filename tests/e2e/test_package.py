"""`pgolf package`: three tiny seed runs become the folder upstream expects; it imports through
`pgolf leaderboard --records` with exactly its own numbers, `pgolf verify` passes on every run
it holds, and bad inputs (smoke runs without --allow-smoke, invalid, over budget, mixed
configs, repeated seeds, a log that disagrees) are refused before anything is written.
`pgolf compare <packaged> <upstream>` writes the significance into the packaged README."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest

from harness.leaderboard.significance import compare
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from harness.tools.cli import main
from harness.tools.package import load_runs
from harness.tools.record_code import reproducing_sets
from harness.tools.record_readme import SIGNIFICANCE_END, SIGNIFICANCE_START, folder_entry
from harness.tools.verify import verify_run
from tests.conftest import write_tiny_submission

SEEDS = (1337, 42, 2024)
UPSTREAM = "records/track_10min_16mb/2026-03-31_ParallelResiduals_MiniDepthRecurrence"


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, default_dataset) -> dict[str, Path]:
    """Three seeds of the tiny submission (4 steps)."""
    sub = write_tiny_submission(tmp_path_factory.mktemp("package") / "tiny")
    config = build_submission_config(sub)
    out = {}
    for seed in SEEDS:
        run(
            config,
            submission_dir=sub,
            run_id=f"r_seed{seed}",
            sets={"train.seed": str(seed), "train.iterations": "4"},
        )
        out[str(seed)] = sub / "runs" / f"r_seed{seed}"
    return out


@pytest.fixture(scope="module")
def packaged(seed_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("records")
    args = ["package", *(str(seed_runs[str(s)]) for s in SEEDS), "--out", str(out), "--allow-smoke"]
    assert main(args) == 0
    (folder,) = (out / "track_10min_16mb").iterdir()
    return folder


def _records(seed_runs) -> dict[int, dict]:
    return {s: json.loads((seed_runs[str(s)] / "submission.json").read_text()) for s in SEEDS}


def test_folder_has_upstreams_files(packaged, seed_runs):
    recs = _records(seed_runs)
    assert packaged.name == f"{recs[SEEDS[0]]['date'][:10]}_tiny"
    assert sorted(p.name for p in packaged.iterdir()) == sorted(
        ["README.md", "submission.json", "train_gpt.py", *(f"train_seed{s}.log" for s in SEEDS)]
    )
    largest = max(SEEDS, key=lambda s: recs[s]["bytes_code"])  # the bundles differ only in their seed
    shipped = (packaged / "train_gpt.py").read_bytes()
    assert shipped == (seed_runs[str(largest)] / "train_gpt.py").read_bytes()
    assert len(shipped) == max(r["bytes_code"] for r in recs.values())
    for s in SEEDS:  # each log byte for byte
        assert (packaged / f"train_seed{s}.log").read_bytes() == (
            seed_runs[str(s)] / "train.log"
        ).read_bytes()
    data = json.loads((packaged / "submission.json").read_text())
    assert data["bytes_code"] == len(shipped)
    for key in (
        "name",
        "author",
        "github_id",
        "date",
        "track",
        "val_bpb",
        "val_bpb_std",
        "seeds",
        "seed_results",
    ):
        assert key in data
    assert data["seeds"] == list(SEEDS) and data["compliance"]["three_seeds"] is True
    assert data["bytes_total"] == max(r["bytes_total"] for r in recs.values())


def test_imports_through_the_leaderboard_with_exactly_its_numbers(packaged, seed_runs, tmp_path):
    recs = _records(seed_runs)
    # Independent reference: the logs print each score to 8 decimals; the mean of those texts.
    printed = [Decimal(f"{recs[s]['val_bpb']:.8f}") for s in SEEDS]
    mean = float(sum(printed) / 3)
    std = statistics.stdev(float(x) for x in printed)
    data = json.loads((packaged / "submission.json").read_text())
    assert data["val_bpb"] == mean and data["val_bpb_std"] == std

    lb = tmp_path / "lb"
    assert main(["leaderboard", "--records", str(packaged.parent.parent), "--out", str(lb)]) == 0
    (row,) = json.loads((lb / "leaderboard.json").read_text())["entries"]
    assert row["score_bpb"] == mean and row["score_std"] == std
    assert [s["seed"] for s in row["seeds"]] == [str(s) for s in SEEDS]
    assert [s["val_bpb"] for s in row["seeds"]] == [float(x) for x in printed]
    assert row["bytes_total"] == data["bytes_total"]
    assert row["flags"] == ""  # no json_disagrees, no missing seeds, no size flags


def test_reproducing_command(packaged, seed_runs):
    (first,) = load_runs([seed_runs[str(SEEDS[0])]], allow_smoke=True)
    sets = reproducing_sets(first.path, first.record, first.config)
    assert sets == {"train.iterations": "4"}  # what the fixture passed, nothing else
    readme = (packaged / "README.md").read_text()
    for s in SEEDS:
        line = f"train_gpt.py --set train.seed={s} --set train.iterations=4"
        assert f"torchrun --standalone --nproc_per_node=1 {line}\n" in readme
    assert "pgolf run submissions/tiny --seeds 1337,42,2024 --set train.iterations=4" in readme
    assert "- [x] Bytes under 16,000,000" in readme and "- [x] At least 3 seeds (3)" in readme
    assert "**Smoke protocol.**" in readme


def test_verify_passes_on_each_run(seed_runs):
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
        for s in SEEDS:
            report = verify_run(seed_runs[str(s)], timeout_s=600)
            assert report.ok, [c.detail for c in report.failures()]


def _refused(capsys, out: Path, *args: str) -> str:
    assert main(["package", *args, "--out", str(out)]) == 2
    assert not out.exists() or not any(out.rglob("submission.json"))  # nothing written
    return capsys.readouterr().err


def _copy(run_dir: Path, tmp_path: Path, **changes) -> Path:
    target = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, target)
    path = target / "submission.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))
    return target


def test_refusals(seed_runs, tmp_path, capsys):
    out = tmp_path / "out"
    runs = [str(seed_runs[str(s)]) for s in SEEDS]
    err = _refused(capsys, out, *runs)
    assert "protocol is 'smoke'" in err and "--allow-smoke" in err
    other = _copy(seed_runs["42"], tmp_path / "o")  # the same run, as if trained for 3 steps
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "train": {**cfg["train"], "iterations": 3}}))
    err = _refused(capsys, out, runs[0], str(other), "--allow-smoke")
    assert "config differs" in err and "train.iterations: 4 -> 3" in err
    err = _refused(capsys, out, runs[0], runs[0], "--allow-smoke")
    assert "both ran seed 1337" in err
    bad = _copy(seed_runs["42"], tmp_path / "a", valid=False, invalid_reasons=["eval over time"])
    err = _refused(capsys, out, runs[0], str(bad), "--allow-smoke")
    assert "valid=False (eval over time)" in err
    big = _copy(seed_runs["42"], tmp_path / "b", bytes_total=16_000_001, over_budget=True)
    err = _refused(capsys, out, runs[0], str(big), "--allow-smoke")
    assert "bytes_total 16000001" in err
    rec = json.loads((seed_runs["42"] / "submission.json").read_text())
    summary = _copy(seed_runs["42"], tmp_path / "s", seed_results={"42": {}})
    (summary / "submission.json").write_text(
        json.dumps(
            {k: v for k, v in json.loads((summary / "submission.json").read_text()).items() if k != "seed"}
        )
    )
    err = _refused(capsys, out, runs[0], str(summary), "--allow-smoke")
    assert "a multi-seed summary, not a run" in err
    code = (seed_runs["42"] / "train_gpt.py").read_bytes() + b"# edited\n"
    edited = _copy(seed_runs["42"], tmp_path / "e", code_sha256=hashlib.sha256(code).hexdigest())
    (edited / "train_gpt.py").write_bytes(code)
    err = _refused(capsys, out, runs[0], str(edited), "--allow-smoke")
    assert "the shipped code differs" in err
    off = _copy(seed_runs["42"], tmp_path / "c", val_bpb=rec["val_bpb"] + 1e-3)
    err = _refused(capsys, out, runs[0], str(off), "--allow-smoke")
    assert "train.log's final sliding line says" in err


def test_existing_folder_is_never_touched(packaged, seed_runs, capsys):
    before = {p.name: p.read_bytes() for p in packaged.iterdir()}
    args = ["package", *(str(seed_runs[str(s)]) for s in SEEDS), "--out", str(packaged.parent.parent)]
    assert main([*args, "--allow-smoke"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in packaged.iterdir()} == before


def test_compare_writes_the_significance_into_the_readme(packaged, shared_data, tmp_path, capsys):
    upstream = shared_data / UPSTREAM
    if not upstream.is_dir():
        pytest.skip(f"{upstream} not found")
    ours = tmp_path / "records" / packaged.parent.name / packaged.name
    shutil.copytree(packaged, ours)
    expected = compare(folder_entry(ours), folder_entry(upstream))
    for _ in range(2):  # a second compare replaces the section, never adds one
        assert main(["compare", str(ours), str(upstream)]) == 0
        assert capsys.readouterr().out.startswith(expected)
    readme = (ours / "README.md").read_text()
    assert readme.count(SIGNIFICANCE_START) == 1 and readme.count(SIGNIFICANCE_END) == 1
    section = readme.split(SIGNIFICANCE_START)[1].split(SIGNIFICANCE_END)[0]
    assert expected.rstrip() in section and upstream.name in section
    assert "verdict: not significant" in section  # 3.8 bpb after 4 CPU steps does not beat 1.106
    assert (
        readme.split(SIGNIFICANCE_START)[0]
        == (packaged / "README.md").read_text().split(SIGNIFICANCE_START)[0]
    )
