"""Attacks on the statistics of our runs, each through an entry point that existed before
`harness.leaderboard.pooling` (`render.regenerate` and its ``leaderboard.json``, ``pgolf
compare``), so each fails on a leaderboard that pools every run folder of a submission: 26
reruns of seed 1337 counted as 26 seeds; invalid, over-budget and hand-edited runs averaged in;
other configs, tokenizers and eval strides mixed into one row; sections keyed by the dataset
fingerprint alone. Run folders are written in the real shape by `tests.unit.run_folders`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from harness.leaderboard.render import regenerate
from harness.tools.cli import main
from tests.unit.run_folders import ARTIFACT, edit_json, write_run


def _leaderboard(repo: Path) -> dict:
    regenerate(repo, repo / "out")
    return json.loads((repo / "out" / "leaderboard.json").read_text())


def _rows(board: dict, name: str) -> list[dict]:
    return [e for e in board["entries"] if e["name"] == name]


def test_26_runs_of_seed_1337_count_as_one_seed(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    for i in range(26):
        write_run(subs, "a", f"r{i:02d}", seed=1337, bpb=1.30 - i / 1000, date=f"2026-11-22T05:{i:02d}:00Z")
    board = _leaderboard(tmp_path)
    (row,) = _rows(board, "a")
    assert row["n_seeds"] == 1
    assert row["score_bpb"] == pytest.approx(1.30 - 25 / 1000)  # r25, the newest run of the seed
    assert [s["seed"] for s in row["seeds"]] == ["1337"]
    left = board.get("excluded", [])
    assert len(left) == 25 and all("seed 1337 counted once: run r25 is newer" in x["reason"] for x in left)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Runs left out" in readme and readme.count("seed 1337 counted once") == 25


def test_compare_counts_a_repeated_seed_once(tmp_path: Path, monkeypatch, capsys) -> None:
    """26 reruns of seed 1337 are not 26 samples: A has one seed, so no Welch test is run."""
    subs = tmp_path / "submissions"
    for i in range(26):
        write_run(
            subs, "a", f"r{i:02d}", seed=1337, bpb=1.10 + (i % 5) / 1000, date=f"2026-11-22T05:{i:02d}:00Z"
        )
    for seed, bpb in ((1, 1.20), (2, 1.21), (3, 1.19)):
        write_run(subs, "b", f"s{seed}", seed=seed, bpb=bpb)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "not computable: A: 1 score(s)" in out and "verdict: undetermined" in out
    assert "runs left out of the statistics (25):" in out


def test_invalid_over_budget_and_edited_runs_are_left_out(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    for seed, bpb in ((1, 1.20), (2, 1.21), (3, 1.22)):
        write_run(subs, "a", f"good{seed}", seed=seed, bpb=bpb)
    write_run(
        subs,
        "a",
        "invalid",
        seed=4,
        bpb=0.90,
        valid=False,
        invalid_reasons=["evaluation took 700.0s > cap 600s"],
    )
    write_run(subs, "a", "over", seed=5, bpb=0.80, bytes_total=16_000_001, valid=False)
    edited = write_run(subs, "a", "edited_bpb", seed=6, bpb=1.25)
    edit_json(edited, val_bpb=0.5)
    artifact = write_run(subs, "a", "edited_artifact", seed=7, bpb=0.70, local_files=True)
    blob = artifact / "final_model.int8.zlib.pgolf"
    blob.write_bytes(ARTIFACT[:-1] + b"!")  # same size, other bytes: another model than was scored
    bytes_cut = write_run(subs, "a", "edited_bytes", seed=8, bpb=0.60, bytes_total=16_200_000, valid=False)
    edit_json(bytes_cut, bytes_total=15_900_000, over_budget=False, valid=True)
    board = _leaderboard(tmp_path)
    (row,) = _rows(board, "a")
    assert row["n_seeds"] == 3 and [s["seed"] for s in row["seeds"]] == ["1", "2", "3"]
    assert row["score_bpb"] == pytest.approx(statistics.fmean([1.20, 1.21, 1.22]))
    reasons = {x["run"]: x["reason"] for x in board.get("excluded", [])}
    assert set(reasons) == {"invalid", "over", "edited_bpb", "edited_artifact", "edited_bytes"}
    assert "invalid (evaluation took 700.0s > cap 600s)" in reasons["invalid"]
    assert "over budget (16000001 bytes > 16,000,000)" in reasons["over"]
    assert "submission.json val_bpb 0.5 but train.log shows 1.25000000" in reasons["edited_bpb"]
    assert "final_model.int8.zlib.pgolf sha256" in reasons["edited_artifact"]
    assert "but train.log Total submission size is 16200000" in reasons["edited_bytes"]
    assert "valid True but train.log says valid:False" in reasons["edited_bytes"]
    assert "over budget (16200000 bytes" in reasons["edited_bytes"]


def test_other_configs_tokenizers_and_strides_are_separate_groups(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    for seed in (1, 2, 3):
        write_run(subs, "a", f"base{seed}", seed=seed, bpb=1.20 + seed / 100)
    write_run(subs, "a", "lr", seed=4, bpb=1.10, config_changes={"optimizer": {"matrix_lr": 0.03}})
    write_run(subs, "a", "tok", seed=5, bpb=1.00, tokenizer="ef" * 32)
    write_run(subs, "a", "stride", seed=6, bpb=0.95, stride=32)
    board = _leaderboard(tmp_path)
    rows = _rows(board, "a")
    assert sorted(r["n_seeds"] for r in rows) == [1, 1, 1, 3]
    by_run = {r["summary"].split(";")[0]: r for r in rows}
    base = by_run["3 run(s): base1, base2, base3"]
    assert base["score_bpb"] == pytest.approx(statistics.fmean([1.21, 1.22, 1.23]))
    assert base["table"] == "full" and base["non_record"] == ""
    stride = by_run["1 run(s): stride"]
    assert (
        stride["table"] == "full:non-record-protocol"
        and stride["non_record"] == "eval.eval_stride=32: the record protocol scores at stride 64"
    )
    assert stride["protocol"] == "full_nonrecord"
    assert stride["rank"] == 1  # alone in its table: never ranked with records
    tok = by_run["1 run(s): tok"]
    assert tok["fingerprint"] == "abababababab / efefefefefef" and tok["rank"] == 1
    assert by_run["1 run(s): lr"]["fingerprint"] == base["fingerprint"] == "abababababab / cdcdcdcdcdcd"
    assert not board.get("excluded")


def test_sections_are_keyed_by_dataset_and_tokenizer(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    write_run(subs, "x", "r1", seed=1, bpb=1.2)
    write_run(subs, "y", "r1", seed=1, bpb=1.1, tokenizer="ef" * 32)
    board = _leaderboard(tmp_path)
    (x,) = _rows(board, "x")
    (y,) = _rows(board, "y")
    assert x["rank"] == y["rank"] == 1 and x["fingerprint"] != y["fingerprint"]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "### Dataset / tokenizer fingerprints abababababab / efefefefefef" in readme
