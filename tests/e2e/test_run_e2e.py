"""End to end on CPU: a tiny submission trains, exports, reloads from disk, is scored and
reported; its bundle reproduces the same losses; bad input fails with one clear message;
the 2-process gloo path runs."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from harness.pipeline import budget
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from harness.pipeline.submission_json import REQUIRED_KEYS
from harness.tools.bundle_wrapper import unwrap
from harness.tools.rescore import rescore
from tests.conftest import ROOT, write_tiny_submission

RUN_PY = ROOT / "harness" / "run.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _losses(log: str) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:(\S+)", log, flags=re.M)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, default_dataset):
    """One in-process run of the tiny submission, shared by the checks below."""
    sub = write_tiny_submission(tmp_path_factory.mktemp("e2e") / "tiny")
    record = run(build_submission_config(sub), submission_dir=sub, run_id="r1")
    return sub / "runs" / "r1", record


def test_run_writes_every_output(finished_run):
    run_dir, record = finished_run
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "train.log",
        "metrics.jsonl",
        "train_gpt.py",
        "submission.json",
        "config.json",
        "final_model.int8.zlib.pgolf",
    } <= names
    saved = json.loads((run_dir / "submission.json").read_text())
    assert saved["val_bpb"] == pytest.approx(record["val_bpb"])
    assert set(REQUIRED_KEYS) <= set(saved)
    assert saved["protocol"] == "smoke" and saved["world_size"] == 1 and saved["steps"] == 6
    assert saved["quantizer"] == "int8" and saved["compressor"] == "zlib"
    assert len(saved["dataset_sha256"]) == 64 and len(saved["tokenizer_sha256"]) == 64
    base = saved["baselines"]
    assert base["uniform_ce"] == pytest.approx(6.931471805599453)  # ln 1024
    assert base["model_ce"] == pytest.approx(saved["roundtrip_val_loss"])
    assert base["shuffle_seed"] == 1337 and base["unigram_tokens"] > 0
    assert base["beats_all"] == (
        base["model_ce"] < min(base["uniform_ce"], base["unigram_ce"], base["shuffled_ce"]) - 1e-4
    )
    if not base["beats_all"]:  # six steps of a tiny model: flagged loudly
        assert "!!! BASELINE CHECK FAILED" in (run_dir / "train.log").read_text()
    tele = saved["telemetry"]
    assert tele["gpu_util_mean"] == "n/a" and tele["mfu"] == "n/a"  # CPU: the same fields say n/a
    assert tele["train_tokens_per_s"] == pytest.approx(6 * 1024 / (saved["train_time_ms"] / 1000.0))
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {
        "start",
        "model",
        "train",
        "val",
        "artifact",
        "roundtrip",
        "sliding",
        "baselines",
        "telemetry",
        "budget",
        "done",
    } <= kinds


def test_log_lines_follow_upstream_format(finished_run):
    run_dir, record = finished_run
    log = (run_dir / "train.log").read_text()
    first = log.splitlines()[0]
    assert first.startswith("device:cpu no CUDA device found")
    assert re.search(r"^model_params:\d+$", log, re.M)
    assert re.search(r"^step:1/6 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$", log, re.M)
    assert re.search(
        r"^step:6/6 val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} train_time:\d+ms step_avg:", log, re.M
    )
    assert re.search(
        r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$", log, re.M
    )
    m = re.search(
        r"^final_int8_zlib_roundtrip_sliding_window_exact stride:64 window:128 "
        r"val_loss:(\d+\.\d{8}) val_bpb:(\d+\.\d{8})$",
        log,
        re.M,
    )
    assert m and float(m.group(2)) == pytest.approx(record["val_bpb"], abs=1e-8)
    assert "warmup_step:2/2" in log


def test_bytes_come_from_the_shipped_files(finished_run):
    run_dir, record = finished_run
    assert record["bytes_code"] == os.path.getsize(run_dir / "train_gpt.py")
    assert record["bytes_model"] == os.path.getsize(run_dir / "final_model.int8.zlib.pgolf")
    assert record["bytes_total"] == record["bytes_code"] + record["bytes_model"]
    assert not record["over_budget"] and record["valid"]
    shipped = unwrap((run_dir / "train_gpt.py").read_bytes(), 10**8)
    assert shipped is not None and shipped.encoding == "latin1"  # compress_code=True by default
    inner = shipped.inner
    readable = (run_dir / "train_gpt_readable.py").read_text()

    def marker(text: str) -> dict:
        return ast.literal_eval(re.search(r"^__pgolf_bundle__ = (\{.*\})$", text, flags=re.M).group(1))

    # The shipped bundle embeds the minified sources of exactly the code the readable one shows
    # (its marker leaves the module list to the keys of its sources).
    readable_marker = marker(readable)
    modules = readable_marker.pop("modules")
    assert marker(inner) == {**readable_marker, "minified": True}
    assert all(f"'{m.replace('.', '/')}" in inner for m in modules)
    docstring = "One run of a submission, end to end"  # harness/pipeline/runner.py's first line
    assert docstring in readable and docstring not in inner and len(inner) < len(readable) / 2


def test_every_target_scored_once_and_headline_is_sliding(finished_run):
    _, record = finished_run
    assert record["val_tokens"] == 1024
    assert record["val_bpb"] == record["sliding_val_bpb"]
    assert record["eval_stride"] == 64
    assert record["val_bpb"] == pytest.approx(
        record["val_loss"] / 0.6931471805599453 * record["val_tokens"] / record["val_bytes"]
    )


def test_artifact_rescored_from_file_alone(finished_run, default_dataset):
    run_dir, record = finished_run
    out = rescore(
        run_dir / "final_model.int8.zlib.pgolf",
        data_path=default_dataset.data_path,
        tokenizer_path=default_dataset.tokenizer_path,
        seq_len=128,
        stride=64,
        batch_seqs=8,
        val_max_tokens=1024,
    )
    assert out["val_bpb"] == pytest.approx(record["roundtrip_val_bpb"], abs=1e-4)
    assert out["sliding_val_bpb"] == pytest.approx(record["sliding_val_bpb"], abs=1e-4)


def test_over_budget_is_loud_and_deletes_nothing(tmp_path, default_dataset, monkeypatch):
    sub = write_tiny_submission(tmp_path / "tiny")
    monkeypatch.setattr(budget, "BYTE_LIMIT", 1000)
    record = run(
        build_submission_config(sub),
        submission_dir=sub,
        run_id="over",
        sets={"train.iterations": "2", "train.warmup_steps": "0"},
    )
    run_dir = sub / "runs" / "over"
    assert record["over_budget"] and not record["valid"] and record["byte_limit"] == 1000
    assert "OVER BUDGET" in (run_dir / "train.log").read_text()
    assert (run_dir / "final_model.int8.zlib.pgolf").exists() and (run_dir / "train_gpt.py").exists()


# Opt-in: tests/e2e/test_submissions_e2e.py runs every submission's shipped file alone and compares
# its losses, artifact and scores with the harness run's.
@pytest.mark.slow
def test_bundle_reproduces_the_harness_losses(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "tiny")
    env = _env(ITERATIONS="4")
    first = subprocess.run(
        [sys.executable, str(RUN_PY), str(sub), "--run-id", "h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(sub / "runs" / "h" / "train_gpt.py", elsewhere / "train_gpt.py")
    second = subprocess.run(
        [sys.executable, "train_gpt.py"],
        cwd=elsewhere,
        env=_env(ITERATIONS="4", RUN_ID="b"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    log_h = (sub / "runs" / "h" / "train.log").read_text()
    log_b = (elsewhere / "runs" / "b" / "train.log").read_text()
    assert "code:bundle_self" in log_b
    assert _losses(log_h) and _losses(log_h) == _losses(log_b)
    # the bundle ships itself unchanged: same bytes counted
    assert (elsewhere / "runs" / "b" / "train_gpt.py").read_bytes() == (
        sub / "runs" / "h" / "train_gpt.py"
    ).read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{empty}"], "has no train_gpt.py"),
        (["{sub}", "--set", "train.iteratons=3"], "unknown config key 'train.iteratons'"),
        (["{sub}", "--set", "data.vocab_size=512"], "512"),
        (
            [
                "{sub}",
                "--set",
                "data.data_path=/nonexistent/data",
                "--set",
                "data.tokenizer_path=/nonexistent/tok.model",
            ],
            "/nonexistent/tok.model",
        ),
    ],
)
def test_bad_input_gives_one_clear_message(tmp_path, default_dataset, args, message):
    sub = write_tiny_submission(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    argv = [a.format(sub=sub, empty=tmp_path / "empty") for a in args]
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), *argv], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.dist
def test_two_process_gloo_matches_single_process(tmp_path, default_dataset):
    """torchrun with 2 gloo ranks and grad_accum 1 sees the same global batch as 1 rank with
    grad_accum 2, so the first training losses agree."""
    single = write_tiny_submission(tmp_path / "single", grad_accum=2)
    double = write_tiny_submission(tmp_path / "double", grad_accum=1)
    env = _env(ITERATIONS="3")
    p1 = subprocess.run(
        [sys.executable, str(RUN_PY), str(single), "--run-id", "s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p1.returncode == 0, p1.stderr[-3000:]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(RUN_PY),
        str(double),
        "--run-id",
        "d",
    ]
    p2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p2.returncode == 0, p2.stderr[-3000:]
    rec = json.loads((double / "runs" / "d" / "submission.json").read_text())
    assert rec["world_size"] == 2 and rec["grad_accum_steps"] == 1
    log_s = (single / "runs" / "s" / "train.log").read_text()
    log_d = (double / "runs" / "d" / "train.log").read_text()
    assert "backend:gloo" in log_d
    first_s, first_d = float(_losses(log_s)[0]), float(_losses(log_d)[0])
    assert first_d == pytest.approx(first_s, abs=2e-3)
    assert (
        rec["val_tokens"] == json.loads((single / "runs" / "s" / "submission.json").read_text())["val_tokens"]
    )


@pytest.mark.gpu
def test_cuda_run_compiles_and_reports_the_device(tmp_path, default_dataset):
    """On CUDA: the compiled model trains, the log names the GPU, and scores are finite."""
    sub = write_tiny_submission(tmp_path / "tiny")
    record = run(
        build_submission_config(sub), submission_dir=sub, run_id="gpu", sets={"train.iterations": "4"}
    )
    log = (sub / "runs" / "gpu" / "train.log").read_text()
    assert log.startswith("device:cuda name:")
    assert "peak memory allocated:" in log
    assert record["protocol"] == "smoke"  # the built-in dataset is never the full protocol
    assert 0 < record["val_bpb"] < 20


def test_eval_only_reload_scores_the_same_artifact(finished_run, tmp_path, default_dataset):
    """LOAD_MODEL_PATH (PR #560): no training, the artifact shipped byte for byte, same scores."""
    run_dir, record = finished_run
    sub = write_tiny_submission(tmp_path / "tiny")
    again = run(
        build_submission_config(sub),
        submission_dir=sub,
        run_id="eval_only",
        sets={"train.load_model_path": str(run_dir)},
    )
    out_dir = sub / "runs" / "eval_only"
    assert again["steps"] == 0 and again["train_time_ms"] == 0.0
    assert (out_dir / "final_model.int8.zlib.pgolf").read_bytes() == (
        run_dir / "final_model.int8.zlib.pgolf"
    ).read_bytes()
    assert again["roundtrip_val_bpb"] == record["roundtrip_val_bpb"]
    assert again["sliding_val_bpb"] == record["sliding_val_bpb"]
    assert "eval_only: loaded" in (out_dir / "train.log").read_text()
    with pytest.raises(Exception, match="does not exist"):
        run(
            build_submission_config(sub),
            submission_dir=sub,
            run_id="missing",
            sets={"train.load_model_path": str(tmp_path / "nope.pgolf")},
        )
