"""Tests for harness.leaderboard.records: the shared upstream record folders (expected values computed by
hand from their submission.json and logs) and synthetic folders for every variant of
docs/protocol.md §8.3, size limits and malformed JSON (our own runs: tests/unit/test_pooling.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.leaderboard import records
from harness.leaderboard.entry import (
    FLAG_FEW_SEEDS,
    FLAG_NO_LOGS,
    FLAG_OVER_BUDGET,
    FLAG_SCORE_UNSUPPORTED,
    FLAG_SEEDS_WITHOUT_LOGS,
)
from harness.leaderboard.records import (
    FLAG_BAD_JSON,
    FLAG_JSON_DISAGREES,
    FLAG_LOG_TOO_LARGE,
    import_records,
)

RECORDS = Path(__file__).resolve().parents[2] / "../shared/data/records"

# folder -> (headline, protocol, seeds, bytes, JSON disagrees). Rule (records.py docstring): the
# headline is the mean over the seed logs of their final line of the best protocol every log has
# (hand-computed from the logs' _exact lines below); bytes = max(JSON sizes, each finished log's
# last Total submission size line); the JSON value is only compared.
EXPECTED = {
    "2026-03-17_NaiveBaseline": (1.2243657, "roundtrip", ["1337"], 15863489, False),
    # final_eval_mode:sliding_window precedes its final_int8_zlib_roundtrip lines
    "2026-03-19_SlidingWindowEval": (1.19250007, "sliding window", ["1337"], 15874829, False),
    "2026-03-20_10L_Int5MLP_MuonWD04_SWA50": (
        (1.14298416 + 1.14260369 + 1.14271194) / 3,
        "sliding window",
        ["42", "1337", "2024"],
        15965978,  # train_seed42.log; the JSON's 15,900,000 is a round figure
        False,
    ),
    "2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA": (
        (1.14597222 + 1.14656085 + 1.14491770) / 3,
        "sliding window",
        ["1337", "42", "7"],
        15944907,
        False,
    ),
    # The JSON's 1.12484502 is seed 2025 alone (the best seed), not the mean of the three.
    "2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248": (
        (1.12484502 + 1.12526734 + 1.12498291) / 3,
        "sliding window",
        ["42", "1337", "2025"],
        15639340,
        True,
    ),
    "2026-03-31_ParallelResiduals_MiniDepthRecurrence": (
        (1.10658225 + 1.10443581 + 1.10774252) / 3,
        "sliding window",
        ["1337", "42", "2024"],
        15946657,
        False,
    ),
    "2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT": (
        (1.08079352 + 1.08103103 + 1.08118408) / 3,
        "test-time training",
        ["42", "314", "999"],
        15993232,
        False,
    ),
    "2026-04-12_11L_4xMLP_RecycledCore_ParallelResid_Int5": (
        1.14643673,
        "sliding window",
        ["1337"],
        15925822,
        False,
    ),
    "2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3": (
        1.20737944,
        "roundtrip",
        ["1337"],
        15810161,
        False,
    ),
    "2026-03-23_Rohan_RTX6000_Blackwell_10L_Int5MLP_Bigram10240": (
        1.19349046,
        "roundtrip",
        [None],
        15691796,
        False,
    ),
}


@pytest.fixture(scope="module")
def shared() -> dict[str, object]:
    if not RECORDS.is_dir():
        pytest.skip(f"shared records not found at {RECORDS} (expected <repo>/../shared/data/records)")
    return {e.key: e for e in import_records(RECORDS)}


def test_every_shared_folder_imports_with_expected_headline(shared: dict) -> None:
    assert set(shared) == set(EXPECTED)
    for key, (score, protocol, seeds, size, disagrees) in EXPECTED.items():
        e = shared[key]
        assert e.score_bpb == pytest.approx(score, abs=1e-12), key
        assert e.score_source.startswith(f"logs: mean of the {protocol} final line"), key
        assert [s.seed for s in e.seeds] == seeds, key
        assert e.bytes_total == size, key
        assert (FLAG_JSON_DISAGREES in e.flags) is disagrees, key
        assert FLAG_SCORE_UNSUPPORTED not in e.flags and FLAG_NO_LOGS not in e.flags, key


def test_int5mlp_val_loss_holds_the_bpb(shared: dict) -> None:
    e = shared["2026-03-20_10L_Int5MLP_MuonWD04_SWA50"]
    # Mean of the three logs' final_int8_zlib_roundtrip_exact: (1.14298416+1.14260369+1.14271194)/3
    # JSON val_loss 1.14276 vs mean 1.1427666: equal to 5 decimals (the JSON truncated)
    assert "submission.json val_loss = 1.14276 holds the bpb" in e.summary
    assert {s.seed: s.val_loss for s in e.seeds} == {"42": 1.92941613, "1337": 1.92987577, "2024": 1.92923337}
    assert e.date == "2026-03-20" and e.track == "10min_16mb" and e.flags == []


def test_shared_flags_and_details(shared: dict) -> None:
    assert FLAG_FEW_SEEDS in shared["2026-03-17_NaiveBaseline"].flags  # one seed on the record track
    assert FLAG_FEW_SEEDS in shared["2026-04-12_11L_4xMLP_RecycledCore_ParallelResid_Int5"].flags
    assert shared["2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3"].flags == []  # non-record track
    xsa = shared["2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248"]
    assert len(xsa.seeds) == 3  # train.log is a copy of train_seed2025.log, not a 4th seed
    assert xsa.date == "2026-03-21"
    ttt = shared["2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT"]
    assert "test-time training" in ttt.score_source  # family B: mean of quantized_ttt = 1.08100288
    assert ttt.ms_per_step == pytest.approx((588047 / 4550 + 588119 / 4557 + 588014 / 4555) / 3)
    # 8-dp pair of the baseline log: tokens/byte = 1.2243657 * ln2 / 2.07269931
    assert shared["2026-03-17_NaiveBaseline"].tokens_per_byte == pytest.approx(
        1.2243657 * 0.6931471805599453 / 2.07269931
    )


def test_truncated_tail_log_is_not_the_score_and_not_over_budget(shared: dict) -> None:
    e = shared["2026-03-23_Rohan_RTX6000_Blackwell_10L_Int5MLP_Bigram10240"]
    # The 65-minute run (16,180,242 B) never finished its eval; the submitted run is 15,691,796 B.
    assert e.seeds[0].log_file == "train_rtx6000_45m_b131k_s64_tail.log"
    assert FLAG_OVER_BUDGET not in e.flags and e.track == "non-record-16mb"


# ----------------------------------------------------------------------------- synthetic


def _folder(
    root: Path, name: str, data: dict | str | None, logs: dict[str, str], track: str = "track_10min_16mb"
) -> Path:
    folder = root / track / name
    folder.mkdir(parents=True)
    if data is not None:
        (folder / "submission.json").write_text(data if isinstance(data, str) else json.dumps(data))
    for fname, text in logs.items():
        (folder / fname).parent.mkdir(parents=True, exist_ok=True)
        (folder / fname).write_text(text)
    return folder


def _log(bpb: str, loss: str = "1.90000000", total: int = 15_000_000, seed: int | None = None) -> str:
    head = f"seed:{seed}\n" if seed is not None else ""
    return (
        f"{head}step:100/200 train_loss:2.0000 train_time:1000ms step_avg:10.00ms\n"
        f"stopping_early: wallclock_cap train_time:1000ms step:100/200\n"
        f"Total submission size int6+zstd: {total} bytes\n"
        f"final_int6_sliding_window_exact val_loss:{loss} val_bpb:{bpb}\n"
    )


def _one(root: Path) -> object:
    (entry,) = import_records(root)
    return entry


def test_mean_of_logs_and_bytes_from_seed_results(tmp_path: Path) -> None:
    data = {
        "name": "x",
        "date": "2026-03-19T04:48:00Z",
        "mean_val_bpb": 1.2,
        "seed_results": {
            "1": {"val_bpb": 1.1, "artifact_bytes": 15_000_000},
            "2": {"val_bpb": 1.3, "artifact_bytes": 15_500_000},
        },
        "artifact_bytes": 1,
    }
    _folder(
        tmp_path,
        "2026-03-01_X",
        data,
        {"train_seed1.log": _log("1.10000000"), "train_seed2.log": _log("1.30000000")},
    )
    e = _one(tmp_path)
    # (1.1 + 1.3) / 2 = 1.2 from the logs; bytes max(15,500,000 JSON seed 2, 15,000,000 logs)
    assert (e.score_bpb, e.bytes_total, e.date) == (1.2, 15_500_000, "2026-03-19")
    assert e.score_source.startswith("logs: mean of the sliding window final line over 2 run(s)")
    assert FLAG_FEW_SEEDS in e.flags and FLAG_JSON_DISAGREES not in e.flags


@pytest.mark.parametrize(
    ("extra", "want", "over"),
    [
        (
            {"artifact_bytes_max": 15_200_000, "artifact_bytes": 15_100_000, "artifact_size_bytes": 1},
            15_200_000,
            False,
        ),
        ({"artifact_bytes_mean": 15_000_000}, 15_123_456, False),  # the log's last Total line is larger
        ({"bytes_total": 16_000_000}, 16_000_000, False),  # the cap itself is allowed
        ({"bytes_total": 16_000_001}, 16_000_001, True),
        ({}, 15_123_456, False),
    ],
)
def test_bytes_are_the_max_of_json_and_logs(tmp_path: Path, extra: dict, want: int, over: bool) -> None:
    log = "Total submission size: 67272625 bytes\n" + _log("1.50000000", total=15_123_456)
    _folder(tmp_path, "2026-03-02_B", {"val_bpb": 1.5} | extra, {"train.log": log})
    e = _one(tmp_path)
    assert e.bytes_total == want and (FLAG_OVER_BUDGET in e.flags) is over


def test_seed_dicts_and_per_seed_mean(tmp_path: Path) -> None:
    data = {
        "seeds": {
            "42": {"val_bpb": 1.0, "val_loss": 2.0, "bytes_total": 10},
            "7": {"val_bpb": 1.2, "val_loss": 2.2, "bytes_total": 30},
        }
    }
    _folder(
        tmp_path,
        "2026-04-01_S",
        data,
        {"logs/train_seed42.txt": _log("1.00000000"), "logs/train_seed7.txt": _log("1.20000000")},
    )
    e = _one(tmp_path)
    assert e.score_bpb == pytest.approx(1.1, abs=1e-12) and e.bytes_total == 15_000_000
    assert [s.seed for s in e.seeds] == ["42", "7"] and e.seeds[0].log_file == "logs/train_seed42.txt"
    assert e.name == "2026-04-01_S" and e.date == "2026-04-01" and e.track == "10min_16mb"


def test_over_budget_disagreeing_json_and_missing_seed_logs(tmp_path: Path) -> None:
    # DGAttention-like: 16,638,468 B, a claimed score the log does not show, 3 seeds, 1 log.
    data = {"val_bpb": 1.1898, "bytes_total": 16_638_468, "seeds": [1, 2, 3]}
    _folder(tmp_path, "2026-04-02_D", data, {"train_seed1.log": _log("1.23530000")})
    e = _one(tmp_path)
    assert e.score_bpb == 1.2353 and e.bytes_total == 16_638_468
    assert FLAG_OVER_BUDGET in e.flags and FLAG_JSON_DISAGREES in e.flags
    assert FLAG_SEEDS_WITHOUT_LOGS in e.flags and FLAG_FEW_SEEDS in e.flags  # 1 seed has a score
    assert [(s.seed, s.val_bpb) for s in e.seeds] == [("1", 1.2353), ("2", None), ("3", None)]


def test_prequant_line_is_never_the_score(tmp_path: Path) -> None:
    log = (
        "final_prequant val_loss:2.0 val_bpb:1.18980000\n"
        "final_int6_roundtrip_exact val_loss:2.1 val_bpb:1.25000000\n"
    )
    _folder(tmp_path, "2026-04-03_P", {"val_bpb": 1.1898}, {"train.log": log}, track="track_non_record_16mb")
    e = _one(tmp_path)
    assert e.score_bpb == 1.25 and e.flags == [FLAG_JSON_DISAGREES, "bytes_missing"]
    only_prequant = tmp_path / "q"
    _folder(
        only_prequant,
        "2026-04-03_Q",
        {"val_bpb": 1.1898, "bytes_total": 1},
        {"train.log": log.splitlines()[0]},
    )
    e = _one(only_prequant)
    assert e.score_bpb == 1.1898 and e.flags == [FLAG_SCORE_UNSUPPORTED, FLAG_FEW_SEEDS]
    assert e.score_source == "submission.json val_bpb (no score line in any log)"


def test_no_logs_and_val_loss_without_logs(tmp_path: Path) -> None:
    _folder(
        tmp_path, "2026-03-20_V", {"val_loss": 1.14276, "run_name": "r"}, {}, track="track_non_record_16mb"
    )
    e = _one(tmp_path)
    assert e.flags == [FLAG_NO_LOGS, "bytes_missing"]
    assert (e.score_bpb, e.name, e.track) == (1.14276, "r", "non_record_16mb")


def test_val_loss_is_not_compared_when_it_is_a_loss(tmp_path: Path) -> None:
    _folder(
        tmp_path,
        "2026-03-20_W",
        {"val_loss": 1.3},
        {"train.log": _log("1.20000000", loss="1.30000000")},
        track="track_x",
    )
    e = _one(tmp_path)
    assert e.score_bpb == 1.2 and FLAG_JSON_DISAGREES not in e.flags and "holds the bpb" not in e.summary


def test_malformed_and_oversized_files_become_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _folder(tmp_path, "2026-03-01_Bad", '{"val_bpb": 1.2,', {"train.log": _log("1.20000000")})
    _folder(tmp_path, "2026-03-02_List", "[1, 2]", {})
    big = _folder(tmp_path, "2026-03-03_Big", {"val_bpb": 1.2}, {"train.log": _log("1.20000000")})
    (big / "huge.log").write_text("x" * 2000)
    monkeypatch.setattr(records, "MAX_LOG_BYTES", 1000)
    bad, lst, huge = import_records(tmp_path)
    assert FLAG_BAD_JSON in bad.flags and "submission.json: invalid JSON" in bad.summary
    assert FLAG_BAD_JSON in lst.flags and "expected a JSON object" in lst.summary
    assert FLAG_LOG_TOO_LARGE in huge.flags and "huge.log" in huge.summary and huge.score_bpb == 1.2


def test_json_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "submission.json"
    path.write_text(json.dumps({"blurb": "x" * 2000}))
    with pytest.raises(
        records.RecordReadError, match="submission.json: 20.. bytes, over the 1000-byte limit"
    ):
        records.read_json_limited(path, limit=1000)
