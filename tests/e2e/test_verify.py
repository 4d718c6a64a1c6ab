"""`pgolf verify`: a fresh tiny run verifies; each kind of tampering fails, naming the check.

One tiny training run is shared by every case (each case tampers with its own copy of the
run folder); a second, differently seeded run supplies a foreign artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from unittest import mock

import pytest

from harness.api.errors import ConfigError
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from harness.tools.verify import VerifyReport, verify_main, verify_run
from tests.conftest import write_tiny_submission

ARTIFACT = "final_model.int8.zlib.pgolf"


def _verify(run_dir: Path) -> VerifyReport:
    # One thread per re-run: the machine is shared; scores must not depend on it anyway.
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
        return verify_run(run_dir, timeout_s=600)


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _failed(report: VerifyReport) -> dict[str, str]:
    return {c.name: c.detail for c in report.failures()}


def _edit_record(run_dir: Path, **changes: object) -> None:
    path = run_dir / "submission.json"
    record = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    path.write_text(json.dumps(record, indent=2))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, default_dataset) -> dict[str, Path]:
    """The run under test (6 steps) and a foreign one (2 steps, another seed)."""
    sub = write_tiny_submission(tmp_path_factory.mktemp("verify") / "tiny")
    config = build_submission_config(sub)
    run(config, submission_dir=sub, run_id="main")
    run(
        config,
        submission_dir=sub,
        run_id="other",
        sets={"train.seed": "7", "train.iterations": "2", "train.warmup_steps": "0"},
    )
    return {"main": sub / "runs" / "main", "other": sub / "runs" / "other"}


@pytest.fixture
def copy_of(runs, tmp_path):
    """A private copy of the main run folder for one tampering case."""
    target = tmp_path / "run"
    shutil.copytree(runs["main"], target)
    return target


def test_fresh_run_verifies_without_touching_the_folder(runs):
    run_dir = runs["main"]
    before = _snapshot(run_dir)
    t0 = time.perf_counter()
    report = _verify(run_dir)
    wall = time.perf_counter() - t0
    print(f"verify wall time on the tiny run: {wall:.1f}s")
    assert report.ok, [c.line() for c in report.failures()]
    names = {c.name for c in report.checks}
    assert {
        "bytes_code",
        "bytes_model",
        "artifact_sha256",
        "code_sha256",
        "artifact_format",
        "rerun",
        "val_bpb",
        "sliding_val_bpb",
        "roundtrip_val_bpb",
        "val_tokens",
        "rerun_artifact_bytes",
        "rerun_code_bytes",
    } <= names
    assert _snapshot(run_dir) == before  # nothing written, nothing re-touched
    assert not (run_dir.parent / "runs").exists() and sorted(p.name for p in run_dir.parent.iterdir()) == [
        "main",
        "other",
    ]


def test_flipped_artifact_byte_fails_hash_and_format(copy_of):
    path = copy_of / ARTIFACT
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01  # the last byte lies in the compressed payload
    path.write_bytes(bytes(blob))
    failed = _failed(_verify(copy_of))
    assert "artifact_sha256" in failed and ARTIFACT in failed["artifact_sha256"]
    assert "payload sha256 mismatch" in failed["artifact_format"]
    assert "bytes_model" not in failed  # same size: only the content changed


def test_changed_bundle_byte_fails_code_checks(copy_of):
    code = copy_of / "train_gpt.py"
    size = os.path.getsize(code)
    with open(code, "a", encoding="utf-8") as fh:
        fh.write("\n")
    failed = _failed(_verify(copy_of))
    assert "code_sha256" in failed and "train_gpt.py" in failed["code_sha256"]
    assert f"claimed {size}, measured {size + 1}" in failed["bytes_code"]
    assert "bytes_total" in failed
    assert (
        "artifact_sha256" not in failed and "val_bpb" not in failed
    )  # the model itself still scores the same


def test_edited_val_bpb_fails_the_reevaluation(copy_of):
    claimed = json.loads((copy_of / "submission.json").read_text())["val_bpb"]
    _edit_record(copy_of, val_bpb=claimed + 1e-4)
    failed = _failed(_verify(copy_of))
    assert set(failed) == {"val_bpb", "rerun_val_bpb"}  # the trusted score and the bundle's re-run
    assert (
        f"claimed {claimed + 1e-4!r}" in failed["val_bpb"] and "submission.json val_bpb" in failed["val_bpb"]
    )


def test_edited_bytes_model_fails_with_the_cli_contract(copy_of):
    real = os.path.getsize(copy_of / ARTIFACT)
    _edit_record(copy_of, bytes_model=real - 1)
    lines: list[str] = []
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
        status = verify_main(copy_of, timeout_s=600, out=lines.append)
    assert status == 1
    assert (
        f"FAIL bytes_model: submission.json bytes_model: claimed {real - 1}, measured {real} "
        f"(size of {ARTIFACT} on disk)" in lines
    )
    assert "ok val_bpb:" in "\n".join(lines)


def test_swapped_artifact_without_hashes_is_caught_by_the_reevaluation(copy_of, runs):
    shutil.copyfile(runs["other"] / ARTIFACT, copy_of / ARTIFACT)
    size = os.path.getsize(copy_of / ARTIFACT)
    _edit_record(
        copy_of,
        artifact_sha256=None,
        code_sha256=None,
        bytes_model=size,
        bytes_total=size + os.path.getsize(copy_of / "train_gpt.py"),
    )
    report = _verify(copy_of)
    failed = _failed(report)
    assert {"val_bpb", "sliding_val_bpb", "roundtrip_val_bpb"} <= set(failed)
    assert not {"bytes_model", "bytes_total", "artifact_format", "artifact_sha256", "code_sha256"} & set(
        failed
    )
    assert "not recorded" in next(c.detail for c in report.checks if c.name == "artifact_sha256")


def test_not_a_run_folder_is_unusable_input(tmp_path):
    with pytest.raises(ConfigError, match="has no submission.json"):
        verify_main(tmp_path)
    with pytest.raises(ConfigError, match="is not a folder"):
        verify_run(tmp_path / "missing")
