"""`harness.pipeline.integrity`: what the run-time tamper checks catch (pgolf issue 11), on a scratch
module written to disk, so nothing of the harness itself is patched here."""

from __future__ import annotations

import dataclasses
import importlib
import sys

import pytest

from harness.api.errors import ConfigError
from harness.pipeline import integrity
from harness.pipeline.integrity import ScoringSnapshot, check_config_unchanged, config_fingerprint

SCRATCH = """
import functools


def count(x):
    return x + 1


def _wrap(fn):
    @functools.wraps(fn)
    def inner(*a):
        return fn(*a)
    return inner


@_wrap
def decorated(x):
    return x


class Scorer:
    def score(self, x):
        return count(x)
"""


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    (tmp_path / "pgolf_scratch_scoring.py").write_text(SCRATCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("pgolf_scratch_scoring")
    yield module
    sys.modules.pop("pgolf_scratch_scoring", None)


def test_an_untouched_module_has_no_changes_decorators_included(scratch):
    snap = ScoringSnapshot(("pgolf_scratch_scoring",))
    assert {"pgolf_scratch_scoring.count", "pgolf_scratch_scoring.Scorer.score"} <= set(snap.objects)
    assert snap.changes() == []


def test_replaced_function_method_and_swapped_code_are_named(scratch):
    snap = ScoringSnapshot(("pgolf_scratch_scoring",))
    scratch.count = lambda x: x
    scratch.Scorer.score = lambda self, x: 0
    scratch.decorated.__wrapped__.__code__ = (lambda x: 2 * x).__code__
    changes = "\n".join(snap.changes())
    assert (
        "pgolf_scratch_scoring.count was replaced (by function " in changes and f"from {__file__}:" in changes
    )
    assert "pgolf_scratch_scoring.Scorer.score was replaced" in changes
    assert "pgolf_scratch_scoring.decorated had its code swapped" in changes


def test_a_patch_made_before_the_snapshot_is_still_caught_by_its_file(scratch):
    def count(x):  # compiled from this test file, not from the scratch module's
        return 0

    count.__module__ = "pgolf_scratch_scoring"
    scratch.count = count
    changes = ScoringSnapshot(("pgolf_scratch_scoring",)).changes()
    assert changes == [
        f"pgolf_scratch_scoring.count runs code from {__file__}, not from the module that defines it"
    ]


def test_the_real_scoring_modules_are_clean_and_cover_count_bytes():
    assert integrity.SNAPSHOT.changes() == []
    assert "harness.pipeline.eval.count_bytes" in integrity.SNAPSHOT.objects
    assert "harness.pipeline.report.measure_budget" in integrity.SNAPSHOT.objects
    integrity.check_scoring_code("in the test")  # no error


def test_a_write_into_the_frozen_config_names_field_and_values(tiny_submission):
    from harness.pipeline.submission import build_submission_config

    config = build_submission_config(tiny_submission)
    frozen = config_fingerprint(config)
    check_config_unchanged(config, frozen, "now")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.eval.eval_stride = 32  # type: ignore[misc]
    object.__setattr__(config.eval, "eval_stride", 32)
    with pytest.raises(ConfigError, match=r"refused before export: .*eval\.eval_stride: 64 -> 32"):
        check_config_unchanged(config, frozen, "before export")
