"""A submission script (or its bundle) run directly takes the same flags as harness/run.py,
and a multi-rank failure is printed once, with its rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.api.context import DistInfo
from harness.api.errors import ConfigError
from harness.pipeline.distributed import already_reported, report_rank_failure
from harness.pipeline.runner import script_flags


def test_script_flags_parse_set_run_id_and_resume():
    flags = script_flags(["--set", "train.iterations=5", "--run-id", "r1", "--resume", "runs/r1"])
    sets, run_id, resume = flags.sets, flags.run_id, flags.resume
    assert sets == {"train.iterations": "5"} and run_id == "r1" and resume == Path("runs/r1")
    empty = script_flags([])
    assert (empty.sets, empty.run_id, empty.resume) == ({}, None, None)
    # the flags survive a round trip through argv (pgolf run hands them to harness/run.py)
    assert script_flags(flags.argv()) == flags


def test_script_flags_reject_unknown_flags():
    with pytest.raises(SystemExit):
        script_flags(["--bogus"])


def _info(world: int) -> DistInfo:
    return DistInfo(rank=1, world_size=world, local_rank=1, device=torch.device("cpu"), backend="gloo")


def test_rank_failure_line_names_rank_and_marks_the_error(capsys):
    exc = ConfigError("bad value\n  on two lines")
    report_rank_failure(_info(2), exc)
    err = capsys.readouterr().err
    assert err == "error: rank 1/2 failed: ConfigError: bad value on two lines\n"
    assert already_reported(exc)


def test_single_process_failure_is_left_to_the_entry_point(capsys):
    exc = ConfigError("bad value")
    report_rank_failure(_info(1), exc)
    assert capsys.readouterr().err == "" and not already_reported(exc)


def test_record_bundles_leave_out_the_bundler_and_checkpointing():
    """Code bytes count: modules a shipped run never uses (the bundler, checkpoint/resume)
    are imported by name only, so no submission's bundle carries them."""
    from harness.tools.bundle import collect_modules
    from tests.conftest import ROOT

    for script in sorted((ROOT / "submissions").glob("*/train_gpt.py")):
        modules = collect_modules(script, ROOT)
        assert "harness.pipeline.runner" in modules, script
        left_out = ("harness.pipeline.checkpoint", "harness.pipeline.resume", "harness.tools.bundle")
        assert not set(left_out) & set(modules), script


def test_checkpointing_without_the_module_is_a_clear_error(monkeypatch):
    import importlib

    from harness.pipeline import setup

    real = importlib.import_module

    def missing(name, *args, **kwargs):
        if name == "harness.pipeline.resume":
            raise ModuleNotFoundError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(setup.importlib, "import_module", missing)
    with pytest.raises(ConfigError, match="run the submission from the repository"):
        setup.checkpoint_module()
