"""Reporting and refusing phases stay out of every shipped bundle (`harness.pipeline.unshipped`),
and a missing phase is told apart from a broken one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.api.by_name import ADAPTATION_MODULE
from harness.pipeline import unshipped
from harness.pipeline.prepared_data import DEFAULT_DATASET_MODULE
from harness.tools.bundle import collect_modules

ROOT = Path(__file__).resolve().parents[2]
SUBMISSIONS = sorted(p.name for p in (ROOT / "submissions").iterdir() if (p / "train_gpt.py").is_file())


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_no_bundle_reaches_an_unshipped_module(name):
    reached = collect_modules(
        ROOT / "submissions" / name / "train_gpt.py",
        ROOT,
        extra=(ADAPTATION_MODULE,),
    )
    assert "harness.pipeline.runner" in reached  # the scan did follow the pipeline
    assert not set(unshipped.UNSHIPPED.values()) & set(reached)
    # Data preparation is reached by name only, like the unshipped phases.
    assert not {DEFAULT_DATASET_MODULE, "harness.datasets.byte_level"} & set(reached)


def test_every_unshipped_module_exists_in_the_repository():
    for phase, module in unshipped.UNSHIPPED.items():
        assert unshipped.unshipped_module(phase).__name__ == module


def test_a_missing_module_reads_as_not_shipped(monkeypatch):
    monkeypatch.setitem(unshipped.UNSHIPPED, "ghost", "harness.pipeline.no_such_phase_module")
    assert unshipped.unshipped_module("ghost") is None
    assert unshipped.skipped_line("ghost").startswith("ghost: skipped (not shipped")


def test_a_module_whose_own_import_fails_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "pgolf_broken_phase.py").write_text("import pgolf_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(unshipped.UNSHIPPED, "broken", "pgolf_broken_phase")
    with pytest.raises(ModuleNotFoundError, match="pgolf_module_that_does_not_exist"):
        unshipped.unshipped_module("broken")
    sys.modules.pop("pgolf_broken_phase", None)
