"""Unit tests of `harness.tools.bench` (``pgolf bench``): the comparison table, the compare-fail
rule on a doctored copy of the stored baseline, clear errors for missing or corrupt result
files and for ``--gpu`` without CUDA, the window count, and shrinking every submission."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from harness.api.errors import ConfigError
from harness.pipeline.eval import sliding_windows
from harness.pipeline.submission import build_submission_config
from harness.tools import bench
from harness.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
SUBMISSIONS = sorted(p.parent.name for p in (ROOT / "submissions").glob("*/train_gpt.py"))


def _doc(**medians: float) -> dict:
    """A minimal pytest-benchmark JSON document: one benchmark per keyword, mean = 1.1 x median."""
    return {
        "machine_info": {},
        "benchmarks": [
            {"name": name, "stats": {"median": m, "mean": 1.1 * m}, "extra_info": {}}
            for name, m in medians.items()
        ],
    }


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_ratio_table_from_two_json_files(tmp_path):
    base = _write(tmp_path / "base.json", _doc(a=0.010, b=0.020, edge=0.5, gone=1.0))
    now = _write(tmp_path / "now.json", _doc(a=0.012, b=0.030, edge=0.625, fresh=2.0))
    rows = {r.name: r for r in bench.compare_results(bench.load_results(base), bench.load_results(now), 25.0)}
    assert rows["a"].ratio == pytest.approx(1.2) and rows["a"].status == "ok"
    assert rows["b"].ratio == pytest.approx(1.5) and rows["b"].status == "REGRESSED"
    assert rows["b"].mean_ratio == pytest.approx(1.5)
    # pytest-benchmark's rule fails only when the growth EXCEEDS the threshold: +25.0% exactly passes.
    assert rows["edge"].ratio == 1.25 and rows["edge"].status == "ok"
    assert rows["gone"].status == "missing" and rows["gone"].ratio is None
    assert rows["fresh"].status == "new" and rows["fresh"].ratio is None
    assert [r.name for r in bench.regressions(list(rows.values()))] == ["b"]
    table = bench.format_table(list(rows.values())).splitlines()
    assert [cell.strip() for cell in table[0].split(" | ")][:4] == ["benchmark", "baseline", "now", "ratio"]
    line_b = next(line for line in table if line.startswith("b "))
    assert "20.000 ms" in line_b and "30.000 ms" in line_b and "1.500" in line_b and "REGRESSED" in line_b


def test_doctored_baseline_is_caught_and_exits_1(tmp_path, monkeypatch, capsys):
    stored = bench.load_results(bench.BASELINE_PATH)
    doc = json.loads(bench.BASELINE_PATH.read_text(encoding="utf-8"))
    victim = sorted(stored)[0]
    doctored = copy.deepcopy(doc)
    for item in doctored["benchmarks"]:
        if item["name"] == victim:
            item["stats"]["median"] *= 2.0
            item["stats"]["mean"] *= 2.0
    rows = bench.compare_results(stored, bench.load_results(_write(tmp_path / "now.json", doctored)), 25.0)
    assert [(r.name, r.ratio) for r in bench.regressions(rows)] == [(victim, pytest.approx(2.0))]
    assert all(r.ratio == pytest.approx(1.0) for r in rows if r.name != victim)

    def fake_suite(json_out: Path, pytest_args=()) -> int:  # the suite's output, without the 2-minute run
        _write(json_out, doctored)
        return 0

    monkeypatch.setattr(bench, "run_suite", fake_suite)
    assert bench.bench_cpu(None, save=False, threshold=25.0) == 1
    out = capsys.readouterr().out
    assert victim in out and "REGRESSED" in out and "1 of" in out
    assert bench.bench_cpu(None, save=False, threshold=150.0) == 0  # a doubling is within +150%
    assert main(["bench"]) == 1  # the CLI's default threshold (50%) catches a doubling ...
    for item in doctored["benchmarks"]:
        if item["name"] == victim:
            item["stats"]["median"] *= 0.7  # ... but not +40%, unless asked to be stricter
    assert main(["bench"]) == 0
    assert main(["bench", "--threshold", "25"]) == 1


def test_save_rewrites_the_baseline_and_refuses_unreadable_output(tmp_path, monkeypatch):
    target = _write(tmp_path / "baseline.json", _doc(a=1.0))
    produced = _doc(a=0.5, b=0.25)
    monkeypatch.setattr(bench, "run_suite", lambda json_out, pytest_args=(): _write(json_out, produced) and 0)
    assert bench.bench_cpu(target, save=True, threshold=25.0) == 0
    assert json.loads(target.read_text(encoding="utf-8")) == produced
    monkeypatch.setattr(
        bench, "run_suite", lambda json_out, pytest_args=(): json_out.write_text('{"benchmarks": 3}') and 1
    )
    with pytest.raises(ConfigError, match="'benchmarks' list"):
        bench.bench_cpu(target, save=True, threshold=25.0)
    assert json.loads(target.read_text(encoding="utf-8")) == produced  # untouched


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "do not exist.*pgolf bench --save"),
        ("{not json", "not readable JSON"),
        ('["a list"]', "'benchmarks' list"),
        (
            '{"benchmarks": [{"name": "x", "stats": {"median": 0, "mean": 1}}]}',
            r"benchmarks\[0\].*positive 'median'",
        ),
        (
            (
                '{"benchmarks": [{"name": "x", "stats": {"median": 1, "mean": 1}}, '
                '{"name": "x", "stats": {"median": 1, "mean": 1}}]}'
            ),
            "'x' appears twice",
        ),
    ],
)
def test_missing_or_corrupt_results_name_the_file(tmp_path, content, message):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        bench.load_results(path)
    assert str(path) in str(info.value)


def test_cli_missing_baseline_exits_2_before_running_the_suite(tmp_path, monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the suite ran although the baseline is missing")

    monkeypatch.setattr(bench, "run_suite", must_not_run)
    missing = tmp_path / "nowhere.json"
    assert main(["bench", "--compare", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err


def test_cli_gpu_without_cuda_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--gpu"]) == 2
    err = capsys.readouterr().err
    assert "--gpu needs a CUDA device" in err and err.count("\n") == 1


def test_cli_rejects_a_non_positive_threshold(monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_suite", lambda *a, **k: pytest.fail("suite ran"))
    assert main(["bench", "--threshold", "0"]) == 2
    assert "--threshold must be a positive percentage" in capsys.readouterr().err


def test_window_count_matches_the_window_list_and_the_full_split():
    for total, window, stride in [
        (1, 8, 4),
        (8, 8, 4),
        (9, 8, 4),
        (12, 8, 4),
        (13, 8, 4),
        (100, 16, 16),
        (100, 16, 40),
        (5000, 128, 64),
    ]:
        assert bench.sliding_window_count(total, window, stride) == len(
            sliding_windows(total, window, stride)
        )
    # (62,021,632 - (2048 - 64)) / 64 = 969,057 exactly: starts 0 and 64 k for k = 1 .. 969,056.
    assert bench.sliding_window_count() == 969_057
    assert bench.sliding_window_count(0, 2048, 64) == 0


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_every_submission_shrinks_to_the_small_shape(name):
    config = bench.shrink_config(build_submission_config(ROOT / "submissions" / name))
    m = config.model
    depth = next(getattr(m, f) for f in ("num_layers", "n_layers", "trunk_layers") if hasattr(m, f))
    width = next(getattr(m, f) for f in ("model_dim", "d_model") if hasattr(m, f))
    assert (depth, width) == (bench.SMALL_LAYERS, bench.SMALL_WIDTH)
    assert (config.train.train_seq_len, config.train.train_batch_tokens, config.train.iterations) == (
        128,
        2048,
        1,
    )
    torch.manual_seed(0)
    model = m.build(config.data.vocab_size)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # the full shapes have 17M-29M
    x = torch.randint(0, config.data.vocab_size, (1, 16))
    assert model(x).shape == (1, 16, config.data.vocab_size)


def test_unknown_architecture_cannot_be_shrunk():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class OddConfig:
        depth: int = 3

    with pytest.raises(ConfigError, match="OddConfig.*teach harness.tools.bench.model_sets"):
        bench.model_sets(OddConfig())


def test_bench_without_pytest_benchmark_says_which_extra_to_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytest_benchmark" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pytest_benchmark .*pip install -e '\.\[test\]'"):
        bench.run_suite(tmp_path / "now.json")
