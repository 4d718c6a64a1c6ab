"""Statistics over comparable, honest runs only (`harness.leaderboard.pooling`, `ourruns`,
`runfolder`): `pgolf leaderboard` and `pgolf compare` pool valid runs of one submission with the
same resolved config apart from the seed, the same fingerprints and code, one run per seed;
everything else is listed with its reason and never averaged in.

The attacks themselves are in tests/unit/test_pooling_attacks.py. Run folders are written in the
real shape by `tests.unit.run_folders`; the committed smoke runs are checked as they are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.leaderboard.entry import FLAG_BASELINES, FLAG_FEW_SEEDS
from harness.leaderboard.ourruns import pool_runs
from harness.leaderboard.pooling import config_sha256
from harness.leaderboard.runfolder import read_run_folder
from tests.unit.run_folders import DATASET, edit_json, write_run

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- the rule's parts


def test_config_hash_drops_the_seed_and_nothing_else() -> None:
    text = '{"eval":{"eval_stride":64},"train":{"iterations":40}}'  # sorted keys, no spaces
    want = hashlib.sha256(text.encode()).hexdigest()
    config = {"train": {"seed": 1337, "iterations": 40}, "eval": {"eval_stride": 64}}
    assert config_sha256(config) == want
    assert config_sha256({**config, "train": {"seed": 7, "iterations": 40}}) == want
    assert config_sha256({**config, "eval": {"eval_stride": 32}}) != want
    assert config["train"]["seed"] == 1337  # the run's config is not changed


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seed", 42, "submission.json seed 42 but the logged config has 7"),
        ("protocol", "smoke", "submission.json protocol 'smoke' but train.log says full"),
        ("dataset_sha256", "ee" * 32, "submission.json dataset_sha256 'eeeeeeeeeeeeeeee'"),
        ("tokenizer_sha256", "ee" * 32, "submission.json tokenizer_sha256 'eeeeeeeeeeeeeeee'"),
        ("bytes_code", 10, "submission.json bytes_code 10 but train.log Code size is 21"),
        ("eval_stride", 32, "submission.json eval_stride 32 but the logged config has 64"),
        ("val_bpb", 1.23456789, "submission.json val_bpb 1.23456789 but train.log shows 1.30000000"),
    ],
)
def test_each_hand_edited_field_is_caught(tmp_path: Path, field: str, value: object, message: str) -> None:
    folder = write_run(tmp_path, "a", "r", seed=7, bpb=1.3)
    assert read_run_folder(folder / "submission.json").problems == []
    edit_json(folder, **{field: value})
    problems = read_run_folder(folder / "submission.json").problems
    assert any(message in p for p in problems), problems


def test_a_non_record_stride_is_labelled_without_the_json_field_and_despite_an_edit(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    write_run(subs, "old", "r", seed=1, bpb=1.3, stride=32, nonrecord_field=False)
    edited = write_run(subs, "edited", "r", seed=1, bpb=1.3, stride=32)
    edit_json(edited, nonrecord_reasons=[])
    pooled = pool_runs(subs)
    (entry,) = pooled.entries
    assert entry.name == "old" and entry.non_record == "eval stride 32, records use 64"
    (left,) = pooled.excluded
    assert left.name == "edited"
    assert "nonrecord_reasons is empty but the logged config scores at stride 32" in left.reason


def test_local_config_json_must_match_the_logged_config(tmp_path: Path) -> None:
    folder = write_run(tmp_path, "a", "r", seed=7, bpb=1.3, local_files=True)
    assert read_run_folder(folder / "submission.json").problems == []
    config = json.loads((folder / "config.json").read_text())
    config["optimizer"]["matrix_lr"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    assert read_run_folder(folder / "submission.json").problems == [
        "config.json differs from the config line of train.log"
    ]


def test_a_log_cut_before_its_closing_line_is_left_out(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "submissions", "a", "r", seed=1, bpb=1.3)
    log = folder / "train.log"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))
    pooled = pool_runs(tmp_path / "submissions")
    assert pooled.entries == []
    (left,) = pooled.excluded
    assert "no closing submission line" in left.reason and left.run == "r" and left.seed == "1"


def test_seeds_flags_and_ratio_of_a_group(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    write_run(subs, "a", "r1", seed=1, bpb=1.2)
    write_run(subs, "a", "r2", seed=2, bpb=1.4, beats_all=False)
    write_run(subs, "a", "r3", seed=1, bpb=3.0, protocol="smoke")
    full, smoke = sorted(pool_runs(subs).entries, key=lambda e: e.protocol)
    assert full.key.startswith("a[full:abababab:cdcdcdcd:") and smoke.key.startswith("a[smoke:")
    assert full.score_bpb == pytest.approx(1.3) and [s.seed for s in full.seeds] == ["1", "2"]
    assert full.flags == [FLAG_BASELINES, FLAG_FEW_SEEDS] and smoke.flags == []
    assert full.tokens_per_byte == pytest.approx(8192 / 19660)
    assert full.dataset_sha256 == DATASET


def test_a_multi_seed_summary_is_not_counted_as_a_run(tmp_path: Path) -> None:
    """`pgolf run --seeds` writes runs/<base>_summary/submission.json; the leaderboard counts
    the seed runs themselves, once each, and the summary not at all."""
    write_run(tmp_path, "a", "s_seed1", seed=1, bpb=1.2)
    write_run(tmp_path, "a", "s_seed2", seed=2, bpb=1.4)
    summary = tmp_path / "a" / "runs" / "s_summary"
    summary.mkdir(parents=True)
    (summary / "submission.json").write_text(
        json.dumps({"name": "a", "val_bpb": 1.3, "seeds": [1, 2], "seed_results": {"1": {}, "2": {}}})
    )
    pooled = pool_runs(tmp_path)
    (entry,) = pooled.entries
    assert entry.key == "a" and entry.score_bpb == pytest.approx(1.3) and len(entry.seeds) == 2
    assert pooled.excluded == []


def test_the_committed_runs_pass_every_check() -> None:
    """The published smoke runs (real logs written by the harness) agree with their JSON."""
    paths = sorted((REPO / "submissions").glob("*/runs/*/submission.json"))
    if not paths:
        pytest.skip("no committed runs under submissions/*/runs/")
    for path in paths:
        assert read_run_folder(path).problems == [], path
