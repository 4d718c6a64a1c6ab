"""pgolf issue 11, items 2-3: the attacks that once went through, each refused at run time or failed
by `pgolf verify`, the reason named.

Each attack is a tiny submission (2 layers x 64 wide, 2 steps). Where the run-time check refuses
it, the same attack is also run with that check switched off (an attacker who found a way around
it) to show that `pgolf verify`'s trusted scorer, which never runs submission code, still fails it.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

import harness.pipeline.eval as heval
import harness.pipeline.report as hreport
from harness.api.errors import ConfigError
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from harness.tools.verify import VerifyReport, verify_run
from tests.conftest import write_tiny_submission

SETS = {"train.iterations": "2", "train.warmup_steps": "0", "train.val_loss_every": "0"}

PATCH_COUNT_BYTES = """
import harness.pipeline.eval as _heval
_real_count = _heval.count_bytes
_heval.count_bytes = lambda luts, prev, tgt: 2 * _real_count(luts, prev, tgt)  # twice the bytes: half the BPB
"""

HOOK = """
from dataclasses import dataclass
from harness.api.hooks import hookimpl


@dataclass(frozen=True, kw_only=True)
class CheatConfig:
    def build(self):
        return Cheat()


class Cheat:
    @hookimpl
    def pg_train_start(self, ctx):
        ACTION


@hookimpl
def pg_register_components(registry):
    registry.register("callback", "cheat", CheatConfig)
"""


def _submission(folder: Path, prelude: str = "", plugin: str | None = None) -> Path:
    sub = write_tiny_submission(folder)
    src = (sub / "train_gpt.py").read_text()
    src = src.replace("def build_config()", prelude + "\n\ndef build_config()", 1)
    if plugin is not None:
        src = src.replace("def build_config()", HOOK.replace("ACTION", plugin) + "\n\ndef build_config()", 1)
        src = src.replace("cpu_profile={},", "cpu_profile={}, plugins=(CheatConfig(),),")
    (sub / "train_gpt.py").write_text(src)
    return sub


def _verify(run_dir: Path) -> VerifyReport:
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
        return verify_run(run_dir, timeout_s=600)


def _failed(report: VerifyReport) -> dict[str, str]:
    return {c.name: c.detail for c in report.failures()}


@pytest.fixture
def restore_scoring(monkeypatch):
    """Whatever an attack patches in the scoring modules is put back after the test."""
    monkeypatch.setattr(heval, "count_bytes", heval.count_bytes)
    monkeypatch.setattr(hreport, "measure_budget", hreport.measure_budget)


def test_count_bytes_patched_at_import_is_refused_before_training(tmp_path, default_dataset, restore_scoring):
    sub = _submission(tmp_path / "patch", PATCH_COUNT_BYTES)
    with pytest.raises(ConfigError, match=r"refused before training.*harness\.pipeline\.eval\.count_bytes"):
        run(build_submission_config(sub), submission_dir=sub, run_id="p", sets=SETS)
    assert not (sub / "runs" / "p" / "final_model.int8.zlib.pgolf").exists()


def test_count_bytes_patch_past_the_run_check_fails_verify(
    tmp_path, default_dataset, restore_scoring, monkeypatch
):
    sub = _submission(tmp_path / "patch", PATCH_COUNT_BYTES)
    monkeypatch.setattr("harness.pipeline.integrity.check_scoring_code", lambda when: None)
    record = run(build_submission_config(sub), submission_dir=sub, run_id="p", sets=SETS)
    report = _verify(sub / "runs" / "p")
    failed = _failed(report)
    # The shipped bundle carries no run-time check (an unshipped phase): re-run alone, it repeats
    # the claim, so only the trusted scorer, which never runs submission code, catches it.
    assert "rerun" not in failed
    assert {"val_bpb", "sliding_val_bpb", "roundtrip_val_bpb", "val_bytes"} <= set(failed)
    trusted = next(c for c in report.checks if c.name == "val_bpb").detail
    measured = float(trusted.split("trusted ")[1].split(" ")[0])
    assert measured == pytest.approx(2 * record["val_bpb"], rel=1e-9)  # the honest score: twice the claim


def test_hook_patching_measure_budget_is_refused(tmp_path, default_dataset, restore_scoring):
    action = "import harness.pipeline.report as r; r.measure_budget = lambda code, art: r.Budget(1, 1)"
    sub = _submission(tmp_path / "budget", plugin=action)
    with pytest.raises(
        ConfigError, match=r"refused before export.*harness\.pipeline\.report\.measure_budget"
    ):
        run(build_submission_config(sub), submission_dir=sub, run_id="b", sets=SETS)
    assert not (sub / "runs" / "b" / "submission.json").exists()


STRIDE_HACK = 'object.__setattr__(ctx.config.eval, "eval_stride", 32)'


def test_hook_writing_eval_stride_into_the_frozen_config_is_refused(tmp_path, default_dataset):
    sub = _submission(tmp_path / "stride", plugin=STRIDE_HACK)
    with pytest.raises(ConfigError, match=r"refused before export.*eval\.eval_stride: 64 -> 32"):
        run(build_submission_config(sub), submission_dir=sub, run_id="s", sets=SETS)


def test_stride_hack_past_the_run_check_fails_verify(tmp_path, default_dataset, monkeypatch):
    sub = _submission(tmp_path / "stride", plugin=STRIDE_HACK)
    monkeypatch.setattr("harness.pipeline.integrity.check_config_unchanged", lambda *a: None)
    run(build_submission_config(sub), submission_dir=sub, run_id="s", sets=SETS)
    failed = _failed(_verify(sub / "runs" / "s"))
    assert "sliding_val_bpb" in failed and "val_bpb" in failed  # scored at stride 32, config.json says 64
    assert "roundtrip_val_bpb" not in failed  # the standard pass does not use the stride


STASH_PLUGIN = '''
"""A compressor that keeps the payload in a file beside its own module (pgolf issue 11's attack)."""
from dataclasses import dataclass
from pathlib import Path
from harness.api.hooks import hookimpl

_STASH = Path(__file__).with_name("pgolf_stash_payload.bin")


@dataclass(frozen=True, kw_only=True)
class StashConfig:
    def build(self):
        return Stash()


class Stash:
    name = "stash"

    def compress(self, data):
        _STASH.write_bytes(data)
        return b"see beside"

    def decompress(self, data, max_output_size):
        return _STASH.read_bytes()


@hookimpl
def pg_register_components(registry):
    registry.register("compressor", "stash", StashConfig)
'''


def _install_stash_plugin(site: Path) -> None:
    dist = site / "pgolf_stash-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pgolf-stash\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pgolf]\nstash = pgolf_stash\n")
    (site / "pgolf_stash.py").write_text(textwrap.dedent(STASH_PLUGIN))


def test_payload_kept_beside_the_package_fails_the_file_audit(tmp_path, default_dataset, monkeypatch):
    site = tmp_path / "site"
    _install_stash_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    sub = _submission(tmp_path / "stash", "from pgolf_stash import StashConfig")
    src = (sub / "train_gpt.py").read_text().replace("ZlibConfig(level=9)", "StashConfig()")
    (sub / "train_gpt.py").write_text(src)
    try:
        record = run(build_submission_config(sub), submission_dir=sub, run_id="st", sets=SETS)
    finally:
        sys.modules.pop("pgolf_stash", None)
    assert record["bytes_model"] < 10_000 < 200_000 < (site / "pgolf_stash_payload.bin").stat().st_size
    failed = _failed(_verify(sub / "runs" / "st"))
    assert "file_access" in failed and str(site / "pgolf_stash_payload.bin") in failed["file_access"]
    saved = json.loads((sub / "runs" / "st" / "submission.json").read_text())
    assert saved["compressor"] == "stash"
