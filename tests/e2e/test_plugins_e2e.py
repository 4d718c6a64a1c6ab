"""Observer plugins in a real run: an inline hookimpl class (tox's toxfile idea) sees every
optimizer step and adds report fields; a plugin that tries to overwrite a score is refused;
third-party plugins are found through the ``pgolf`` entry-point group."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from harness.api.errors import ConfigError
from harness.pipeline.plugin_manager import full_manager
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from tests.conftest import write_tiny_submission

OBSERVER = '''

from dataclasses import dataclass
from harness.api.hooks import hookimpl


@dataclass(frozen=True, kw_only=True)
class StepCounterConfig:
    report_key: str = "steps_seen"
    """Key this observer adds to submission.json."""

    def build(self):
        return StepCounter(self.report_key)


class StepCounter:
    def __init__(self, key):
        self.key, self.steps, self.ended = key, [], False

    @hookimpl
    def pg_step_end(self, ctx):
        self.steps.append(ctx.step)

    @hookimpl
    def pg_train_end(self, ctx):
        self.ended = True

    @hookimpl
    def pg_report(self, ctx, record):
        record[self.key] = {"steps": self.steps, "ended": self.ended}
'''


def _submission_with_observer(folder, key):
    sub = write_tiny_submission(folder)
    src = (sub / "train_gpt.py").read_text()
    src = src.replace("def build_config()", OBSERVER + "\n\ndef build_config()", 1)
    src = src.replace(
        "cpu_profile={},", f"cpu_profile={{}}, plugins=(StepCounterConfig(report_key={key!r}),),"
    )
    (sub / "train_gpt.py").write_text(src)
    return sub


def test_inline_observer_sees_every_step_and_reports(tmp_path, default_dataset):
    sub = _submission_with_observer(tmp_path / "obs", "steps_seen")
    record = run(
        build_submission_config(sub),
        submission_dir=sub,
        run_id="o",
        sets={"train.iterations": "3", "train.warmup_steps": "0"},
    )
    assert record["steps_seen"] == {"steps": [1, 2, 3], "ended": True}
    saved = json.loads((sub / "runs" / "o" / "submission.json").read_text())
    assert saved["steps_seen"]["steps"] == [1, 2, 3]


def test_report_plugin_cannot_overwrite_a_score(tmp_path, default_dataset):
    sub = _submission_with_observer(tmp_path / "cheat", "val_bpb")
    with pytest.raises(ConfigError, match="val_bpb"):
        run(
            build_submission_config(sub),
            submission_dir=sub,
            run_id="c",
            sets={"train.iterations": "2", "train.warmup_steps": "0"},
        )
    run_dir = sub / "runs" / "c"
    assert not (run_dir / "submission.json").exists()
    assert (run_dir / "final_model.int8.zlib.pgolf").exists()  # what the run wrote is kept
    assert '"event": "error"' in (run_dir / "metrics.jsonl").read_text()


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "pgolf_extra_codec-0.1.dist-info").mkdir(parents=True)
    (site / "pgolf_extra_codec-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pgolf-extra-codec\nVersion: 0.1\n"
    )
    (site / "pgolf_extra_codec-0.1.dist-info" / "entry_points.txt").write_text(
        "[pgolf]\nextra = pgolf_extra_codec\n"
    )
    (site / "pgolf_extra_codec.py").write_text(
        textwrap.dedent('''
        """A third-party codec plugin used by the tests."""
        from dataclasses import dataclass
        from harness.api.hooks import hookimpl

        @dataclass(frozen=True, kw_only=True)
        class IdentityConfig:
            def build(self):
                return None

        @hookimpl
        def pg_register_components(registry):
            registry.register("compressor", "identity", IdentityConfig)
    ''')
    )
    monkeypatch.syspath_prepend(str(site))
    assert "identity" in full_manager(entrypoints=True).registry.names("compressor")
    assert "identity" not in full_manager(entrypoints=False).registry.names("compressor")
    sys.modules.pop("pgolf_extra_codec", None)


def test_pgolf_list_and_rescore_cli(capsys, tmp_path, default_dataset):
    from harness.tools.cli import main

    assert main(["list", "--no-entrypoints"]) == 0
    out = capsys.readouterr().out
    for line in (
        "arch:",
        "gpt (plugins.arch.gpt.GPTConfig)",
        "muon",
        "int8",
        "zlib",
        "zstd",
        "lzma",
        "hooks: pg_register_components",
    ):
        assert line in out
    sub = write_tiny_submission(tmp_path / "tiny")
    record = run(
        build_submission_config(sub),
        submission_dir=sub,
        run_id="rs",
        sets={"train.iterations": "2", "train.warmup_steps": "0"},
    )
    capsys.readouterr()
    assert main(["rescore", str(sub / "runs" / "rs")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["val_bpb"] == pytest.approx(record["roundtrip_val_bpb"], abs=1e-4)
    assert scores["sliding_val_bpb"] == pytest.approx(record["sliding_val_bpb"], abs=1e-4)
