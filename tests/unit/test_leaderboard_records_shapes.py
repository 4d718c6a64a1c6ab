"""The score rule of harness.leaderboard.records (module docstring, docs/protocol.md §10.3) on the
hand-written record folders of tests/fixtures/records_shapes/, one per shape the real upstream
folders come in. Every expected number is computed by hand from the fixture files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.leaderboard.entry import FLAG_FEW_SEEDS, FLAG_NO_LOGS, FLAG_OVER_BUDGET
from harness.leaderboard.records import (
    FLAG_BYTES_INVALID,
    FLAG_BYTES_MISSING,
    FLAG_JSON_DISAGREES,
    FLAG_NO_JSON,
    FLAG_SEED_CONFLICT,
    RecordReadError,
    import_records,
)
from harness.leaderboard.render import render
from harness.leaderboard.runlogs import agrees, decimal_mean
from harness.tools.cli import main as cli_main

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "records_shapes"
RECORDS = SHAPES / "records"
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def entries() -> dict:
    return {e.key: e for e in import_records(RECORDS)}


def test_every_fixture_folder_is_imported_once(entries: dict) -> None:
    assert sorted(entries) == sorted(p.name for p in RECORDS.glob("*/*") if p.is_dir())


def test_json_best_seed_is_replaced_by_the_mean_and_flagged(entries: dict) -> None:
    e = entries["2026-03-21_BestSeedJson"]
    # sliding-window exact lines of train_seed1/2/3.log; train.log is a copy of seed 2's log
    assert e.score_bpb == pytest.approx((1.10012345 + 1.10312345 + 1.10612345) / 3, abs=1e-12)
    assert [s.seed for s in e.seeds] == ["1", "2", "3"]
    assert [s.log_file for s in e.seeds] == ["train_seed1.log", "train_seed2.log", "train_seed3.log"]
    assert FLAG_JSON_DISAGREES in e.flags
    assert "val_bpb = 1.10012345 disagrees with the logs' mean 1.10312345" in e.summary
    assert e.score_source.startswith("logs: mean of the sliding window final line over 3 run(s)")
    # bytes: max(JSON 15,900,000; last Total lines 15,900,000 / 15,950,000 / 15,990,000)
    assert e.bytes_total == 15_990_000 and FLAG_OVER_BUDGET not in e.flags
    ratios = [(1.10012345, 1.899), (1.10312345, 1.904), (1.10612345, 1.909)]
    assert e.tokens_per_byte == pytest.approx(sum(b * LN2 / lo for b, lo in ratios) / 3)


def test_ttt_line_is_the_headline_and_a_3_decimal_json_agrees(entries: dict) -> None:
    e = entries["2026-04-09_TTTMean"]
    assert e.score_bpb == pytest.approx(1.081, abs=1e-12)  # (1.08 + 1.081 + 1.082) / 3
    assert "test-time training" in e.score_source and e.flags == []
    assert [(s.seed, s.val_bpb) for s in e.seeds] == [("42", 1.08), ("314", 1.081), ("999", 1.082)]
    assert e.bytes_total == 15_993_232
    assert e.ms_per_step == pytest.approx(588_000 / 4500)  # family B: train_time / steps


def test_ttt_in_one_seed_only_uses_the_common_sliding_line(entries: dict) -> None:
    e = entries["2026-04-04_TTTPartial"]
    assert e.score_bpb == pytest.approx((1.089 + 1.09 + 1.091) / 3, abs=1e-12)
    assert "sliding window" in e.score_source and FLAG_JSON_DISAGREES not in e.flags
    assert "test-time training line missing in train_seed314.log, train_seed999.log" in e.summary


def test_original_runs_are_reported_not_the_compliance_reruns(entries: dict) -> None:
    e = entries["2026-04-29_ComplianceRerun"]
    assert e.score_bpb == pytest.approx((1.06112345 + 1.06212345 + 1.06312345) / 3, abs=1e-12)
    assert [s.log_file for s in e.seeds] == [
        "train_seed1_pr99_original.log",
        "train_seed2_original.log",
        "train_seed3_original.log",
    ]
    assert "train_seed*_original.log; shows the most per-seed values of submission.json" in e.score_source
    assert "not reported: train_seed*_rerun.log (3 run(s), mean 1.06154321)" in e.summary
    assert "seed 1 taken from train_seed1_pr99_original.log" in e.summary
    assert e.flags == []  # JSON 1.06212 agrees with 1.06212345 at 5 decimals


def test_folder_without_submission_json_is_scored_from_its_logs(entries: dict) -> None:
    e = entries["2026-04-10_LogsOnly"]
    assert e.score_bpb == pytest.approx((1.0725 + 1.0732 + 1.0743) / 3, abs=1e-12)
    # logs/train<k>.txt carry no seed in their name: seeds come from "<epoch>   seed: k"
    assert [(s.seed, s.log_file) for s in e.seeds] == [
        ("0", "logs/train0.txt"),
        ("1", "logs/train1.txt"),
        ("2", "logs/train2.txt"),
    ]
    assert e.flags == [FLAG_NO_JSON] and e.date == "2026-04-10" and e.name == "2026-04-10_LogsOnly"
    assert e.bytes_total == 15_996_664


def test_logs_over_the_cap_flag_over_budget_whatever_the_json_says(entries: dict) -> None:
    e = entries["2026-04-06_OverBudgetLogs"]
    assert e.bytes_total == 16_059_704  # train_seed2.log; the JSON says 15,978,121
    assert FLAG_OVER_BUDGET in e.flags and "train_seed2.log Total submission size" in e.summary


def test_negative_and_missing_sizes_are_flagged(entries: dict) -> None:
    e = entries["2026-03-23_BadBytes"]
    assert e.bytes_total is None
    assert FLAG_BYTES_INVALID in e.flags and FLAG_BYTES_MISSING in e.flags
    assert "submission.json bytes_total = '-5': expected a whole number of bytes >= 0" in e.summary
    assert e.score_bpb == 1.2353 and [s.seed for s in e.seeds] == [None]


def test_seed_from_file_name_wins_and_a_conflict_is_flagged(entries: dict) -> None:
    e = entries["2026-04-18_SeedConflict"]
    assert [s.seed for s in e.seeds] == ["0", "42", "1234"] and FLAG_SEED_CONFLICT in e.flags
    assert "train_seed0.log: file name says seed 0, its seed line says 1337" in e.summary
    assert FLAG_NO_LOGS not in e.flags  # requirements.txt is read and ignored, the logs count
    assert e.score_bpb == pytest.approx(1.068, abs=1e-12)


def test_sliding_json_key_is_compared_not_the_standard_val_bpb(entries: dict) -> None:
    e = entries["2026-04-30_SlidingJsonKey"]
    assert e.score_bpb == pytest.approx((1.197 + 1.1966 + 1.1969) / 3, abs=1e-12)
    # val_bpb 1.2184 is the standard eval (it would disagree); sliding_val_bpb 1.1968 agrees
    assert e.flags == [] and "sliding window" in e.score_source
    assert [s.seed for s in e.seeds] == ["42", "1337", "2026"]


def test_an_interrupted_run_does_not_count_for_bytes(entries: dict) -> None:
    e = entries["2026-03-23_InterruptedTail"]
    assert e.bytes_total == 15_691_796 and FLAG_OVER_BUDGET not in e.flags  # not the 65m run's 16,180,242
    assert e.seeds[0].log_file == "train_45m_tail.log" and e.score_bpb == 1.193
    assert FLAG_FEW_SEEDS not in e.flags  # non-record track


def test_readme_prints_the_recomputed_mean_half_up(entries: dict, tmp_path: Path) -> None:
    readme = render(list(entries.values()), tmp_path, title="t")[0].read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| Best seed in JSON "))
    assert "| 1.1031 |" in row and "json\\_disagrees" in row  # 1.10312345 -> 1.1031, not the JSON's 1.1001


def test_decimal_mean_and_half_up() -> None:
    # fmean gives 1.0978500000000002 here and 1.0978499999999999 for other pairs; the printed
    # decimals are averaged exactly, so the README rule (half-up) sees 1.09785 -> 1.0979.
    assert decimal_mean([1.0978, 1.0979]) == 1.09785
    assert decimal_mean([]) is None


@pytest.mark.parametrize(
    ("claim", "value", "places", "expected"),
    [
        (1.14276, 1.1427666, 8, True),  # truncated to 5 decimals: within 1e-5
        (1.12484502, 1.12503176, 8, False),  # the best seed, not the mean
        (1.14730259, 1.1473, 4, True),  # the log printed only 4 decimals
        (1.081, 1.0810029, 8, True),
        (1.2184, 1.2181667, 8, False),
        (1.3, 1.2, 8, False),  # one whole unit of the last decimal apart
        (1.1, 1.103, 8, True),
    ],
)
def test_agrees_within_one_unit_of_the_coarser_precision(
    claim: float, value: float, places: int, expected: bool
) -> None:
    assert agrees(claim, value, places) is expected


# ----------------------------------------------------------------------------- wrong folders


def test_track_folder_is_refused_naming_it() -> None:
    with pytest.raises(RecordReadError, match=r"track_10min_16mb: this is a track folder .*pass its parent"):
        import_records(RECORDS / "track_10min_16mb")


def test_folder_without_record_folders_is_refused() -> None:
    with pytest.raises(
        RecordReadError, match=r"not_records: no record folders found \(subfolders: logs, tokenizers\)"
    ):
        import_records(SHAPES / "not_records")


def test_single_record_folder_is_refused() -> None:
    with pytest.raises(
        RecordReadError, match=r"2026-04-09_TTTMean: this is a record folder .*pass .*records_shapes.records"
    ):
        import_records(RECORDS / "track_10min_16mb" / "2026-04-09_TTTMean")


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        (RECORDS / "track_10min_16mb", "this is a track folder"),
        (SHAPES / "not_records", "no record folders found"),
        (SHAPES / "missing", "not a directory"),
    ],
)
def test_cli_exits_2_with_the_folder_in_the_message(
    folder: Path, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = cli_main(["leaderboard", "--records", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and str(folder) in err and message in err and "<DIR>/<track>/<record>/" in err
    assert not (tmp_path / "out").exists()


def test_cli_renders_the_fixture_records(tmp_path: Path) -> None:
    assert cli_main(["leaderboard", "--records", str(RECORDS), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    by_key = {e["key"]: e for e in data["entries"]}
    assert set(by_key) == {p.name for p in RECORDS.glob("*/*")}
    assert by_key["2026-04-06_OverBudgetLogs"]["bytes_total"] == 16_059_704
    assert "over_budget" in by_key["2026-04-06_OverBudgetLogs"]["flags"]
