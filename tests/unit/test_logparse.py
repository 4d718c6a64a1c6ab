"""Tests for harness.leaderboard.logparse: both upstream log families, timestamps, source-code templates,
truncated logs, our own pgolf lines and the half-up support rule (docs/protocol.md §9, §10.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.leaderboard.logparse import (
    classify,
    final_score,
    matches,
    parse_log,
    protocols,
    round_half_up,
    support,
)

RECORDS = Path(__file__).resolve().parents[2] / "../shared/data/records"

FAMILY_A = """\
logs/run.txt
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")
    log0(f"step:{step}/{args.iterations} train_loss:{loss:.4f}")
W0320 05:30:00.000000 123 torch/distributed/run.py:793] Setting OMP_NUM_THREADS
| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |
model_params:17059912
seed:7
step:1/20000 train_loss:6.9000 train_time:50ms step_avg:50.00ms
step:200/20000 train_loss:3.1000 train_time:9000ms step_avg:45.00ms
step:250/20000 val_loss:3.0000 val_bpb:1.7000 train_time:11000ms step_avg:44.00ms
stopping_early: wallclock_cap train_time:11000ms step:250/20000
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
"""

FAMILY_B_TS = """\
1776142719.001 Hyperparameters:
1776142719.002   seed: 314
1776142719.003   quantized_model_path: final_model.int6.ptz
1776142719.100 model_params:35944536
1776142720.000 1/20000 train_loss: 9.0000 train_time: 0.0m tok/s: 1000
1776142800.000 500/20000 train_loss: 3.0000 train_time: 1.1m tok/s: 7000000 looping:True
1776142900.000 4000/20000 val_loss: 2.8741 val_bpb: 1.1127
1776142901.000 stopping_early: wallclock_cap train_time: 588136ms step: 4986/20000
1776142902.000 pre-quantization post-ema val_loss:2.80977929 val_bpb:1.08775313 eval_time:7438ms
1776142903.000 Code size (uncompressed): 120000 bytes
1776142903.001 Code size (compressed): 26000 bytes
1776142903.002 Total submission size quantized+brotli: 15992919 bytes
1776142904.000 quantized val_loss:2.84004242 val_bpb:1.09946892 eval_time:25390ms
1776142905.000 quantized_ttt_phased val_loss:2.79241542 val_bpb:1.08103103 eval_time:368074ms
"""


def test_family_a_ignores_templates_warnings_and_takes_last_total() -> None:
    s = parse_log(FAMILY_A)
    assert s.family == "A"
    assert s.finals == {
        "final_int8_zlib_roundtrip": (2.0727, 1.2244),
        "final_int8_zlib_roundtrip_exact": (2.07269931, 1.2243657),
    }
    assert (s.steps, s.iterations, s.train_time_ms, s.ms_per_step) == (250, 20000, 11000.0, 44.0)
    assert s.total_bytes == 15863489  # not the raw 67,272,625 line before it
    assert (s.code_bytes, s.model_params, s.seed, s.truncated) == (47642, 17059912, "7", False)


def test_family_b_with_epoch_timestamps() -> None:
    s = parse_log(FAMILY_B_TS)
    assert s.family == "B"
    assert (s.steps, s.train_time_ms) == (4986, 588136.0)
    assert s.ms_per_step == pytest.approx(588136 / 4986)  # 117.96 ms, docs/protocol.md §9.3
    assert s.seed == "314" and s.model_params == 35944536
    assert s.code_bytes == 26000 and s.total_bytes == 15992919
    assert s.finals["quantized_ttt_phased"] == (2.79241542, 1.08103103)
    assert "pre-quantization" not in " ".join(s.finals)


def test_truncated_log_has_no_final_line() -> None:
    text = (
        FAMILY_A.split("final_int8_zlib_roundtrip val_loss")[0]
        + "  sliding_eval [ 11.9%] running_bpb=1.195432\n"
    )
    s = parse_log(text)
    assert s.truncated and s.finals == {} and s.total_bytes == 15863489


def test_variant_final_line_shapes() -> None:
    text = "\n".join(
        [
            "final_sliding_window_eval_exact stride:64 val_loss:1.90000000 val_bpb:1.12500000",
            "final_int8_zlib_roundtrip_exact sliding val_loss:1.80000000 sliding val_bpb:1.11111111",
            "final_sliding val_loss:1.7 val_bpb:1.5392 (stride=16, T=0.90) time:100ms",
            "legal_ttt_exact val_loss:1.60000000 val_bpb:1.10000000",
            "final_eval_mode:sliding_window stride:64 batch_seqs:1024",
        ]
    )
    s = parse_log(text)
    assert s.finals == {
        "final_sliding_window_eval_exact": (1.9, 1.125),
        "final_int8_zlib_roundtrip_exact": (1.8, 1.11111111),
        "final_sliding": (1.7, 1.5392),
        "legal_ttt_exact": (1.6, 1.1),
    }


def test_pgolf_train_log_lines() -> None:
    text = "\n".join(
        [
            "run_id:h run_dir:/tmp/x/runs/h",
            "step:4/4 train_loss:7.1000 train_time:308ms step_avg:77.00ms",
            "final_prequant val_loss:7.18010532 val_bpb:3.81832657",
            "Total submission size int8+zlib: 326855 bytes",
            "final_int8_zlib_roundtrip_exact val_loss:7.18016012 val_bpb:3.81835570",
            "final_int8_zlib_roundtrip_sliding_window_exact stride:64 window:128 "
            "val_loss:7.17980770 val_bpb:3.81816829",
        ]
    )
    s = parse_log(text)
    assert s.family == "pgolf" and s.steps == 4 and s.ms_per_step == 77.0
    assert s.finals["final_int8_zlib_roundtrip_sliding_window_exact"] == (7.1798077, 3.81816829)
    assert support(3.81816829, s)
    assert not support(3.81832657, s)  # the pre-quant number is never a score


def test_half_up_rounding_and_support() -> None:
    assert str(round_half_up(1.09785, 4)) == "1.0979"  # docs/protocol.md §10.1: half-up on the decimal text
    assert matches(1.081, 1.08103103)  # 3-dp JSON value vs 8-dp log line
    assert matches(1.1464, 1.14643673)
    assert not matches(1.1248, 1.12526734)
    assert not matches(1.12484502, 1.1248)  # a 4-dp line cannot show an 8-dp score
    s = parse_log(FAMILY_A)
    assert support(1.2243657, s) and support(1.2244, s) and not support(1.2245, s)


def test_real_logs_parse() -> None:
    if not RECORDS.is_dir():
        pytest.skip(f"shared records not found at {RECORDS}")
    folder = RECORDS / "track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT"
    s = parse_log((folder / "train_seed314.log").read_text())
    # Values read by eye from the log's own lines.
    assert s.family == "B" and s.seed == "314" and (s.steps, s.train_time_ms) == (4557, 588119.0)
    assert s.finals["quantized_ttt"] == (2.79241542, 1.08103103) and s.total_bytes == 15992919
    tail = RECORDS / "track_non_record_16mb/2026-03-23_Rohan_RTX6000_Blackwell_10L_Int5MLP_Bigram10240"
    cut = parse_log((tail / "train_rtx6000_65m_b131k_s32_eb512_tail.log").read_text())
    assert cut.truncated and cut.total_bytes == 16180242 and cut.steps == 20330


PROTOCOL_LINES = """\
final_prequant val_loss:2.0 val_bpb:1.10000000
final_int6_roundtrip val_loss:1.9400 val_bpb:1.1500 eval_time:6000ms
final_int6_roundtrip_exact val_loss:1.94000000 val_bpb:1.15000000
final_int6_sliding_window val_loss:1.8990 val_bpb:1.1200 stride:64 eval_time:72000ms
final_int6_sliding_window_exact val_loss:1.89900000 val_bpb:1.12000000
final_int8_zlib_roundtrip_exact val_loss:1.89900000 val_bpb:1.12000000
final_int8_zlib_roundtrip val_loss:1.8800 val_bpb:1.1100 eval_mode:online_ttt eval_time:0ms
final_int8_zlib_roundtrip_exact val_loss:1.88000000 val_bpb:1.11000000
"""


def test_score_lines_carry_their_protocol() -> None:
    s = parse_log(PROTOCOL_LINES)
    got = [(x.name, x.protocol, x.bpb, x.decimals) for x in s.scores]
    assert got == [  # the prequant line is never a score
        ("final_int6_roundtrip", "roundtrip", 1.15, 4),
        ("final_int6_roundtrip_exact", "roundtrip", 1.15, 8),
        ("final_int6_sliding_window", "sliding", 1.12, 4),
        ("final_int6_sliding_window_exact", "sliding", 1.12, 8),
        ("final_int8_zlib_roundtrip_exact", "roundtrip", 1.12, 8),  # a legacy reprint, name kept
        ("final_int8_zlib_roundtrip", "ttt", 1.11, 4),  # eval_mode:online_ttt
        ("final_int8_zlib_roundtrip_exact", "ttt", 1.11, 8),  # the _exact twin inherits ttt
    ]
    assert protocols(s) == ["ttt", "sliding", "roundtrip"]
    assert final_score(s, "ttt").decimals == 8 and final_score(s, "sliding").bpb == 1.12


def test_legacy_eval_mode_and_sliding_words_make_sliding_lines() -> None:
    legacy = parse_log(
        "final_eval_mode:sliding_window stride:64 batch_seqs:32\n"
        "final_int8_zlib_roundtrip val_loss:1.9299 val_bpb:1.1430 eval_time:168222ms\n"
        "final_int8_zlib_roundtrip_exact val_loss:1.92987577 val_bpb:1.14298416\n"
    )
    assert [x.protocol for x in legacy.scores] == ["sliding", "sliding"]
    worded = parse_log("final_int8_zlib_roundtrip_exact sliding val_loss:2.021 sliding val_bpb:1.19700000\n")
    assert [(x.protocol, x.bpb, x.loss) for x in worded.scores] == [("sliding", 1.197, 2.021)]
    b = parse_log(
        "quantized val_loss:2.84 val_bpb:1.0990\nquantized_ttt_phased val_loss:2.79 val_bpb:1.0800\n"
    )
    assert [x.protocol for x in b.scores] == ["roundtrip", "ttt"]
    assert classify("final_sliding", " val_loss:2.98 val_bpb:1.1568 (stride=16, T=0.90)") == "sliding"
    assert classify("legal_ttt_exact", " val_bpb:1.1") == "ttt" and classify("final_prequant", "") is None


def test_final_score_prefers_the_last_exact_line_of_a_protocol() -> None:
    two_runs = parse_log(
        "final_sliding_window_eval_exact stride:256 val_loss:2.04 val_bpb:1.20840424\n"
        "final_sliding_window_eval stride:64 val_loss:1.9637 val_bpb:1.1630\n"
        "final_sliding_window_eval_exact stride:64 val_loss:1.96369923 val_bpb:1.16301431\n"
        "final_sliding_window_eval stride:32 val_loss:1.9600 val_bpb:1.1600\n"
    )
    assert final_score(two_runs, "sliding").bpb == 1.16301431 and final_score(two_runs, "ttt") is None
