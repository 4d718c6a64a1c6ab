"""pgolf issue 11, item 1: code from outside harness/, plugins/ and the submission is refused before
training, naming the module; the declared runtime dependencies are the only third-party code a run uses."""

from __future__ import annotations

import re
import sys

import pytest
import tomllib

from harness.api.errors import ConfigError
from harness.pipeline.code_origin import RUNTIME_DEPENDENCIES, allowed_distributions, why_foreign
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from tests.conftest import ROOT, write_tiny_submission


def test_runtime_dependencies_are_pyprojects():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0] for d in declared]
    assert tuple(names) == RUNTIME_DEPENDENCIES


def test_the_harness_stdlib_and_dependencies_are_allowed():
    import numpy  # noqa: F401 - a declared dependency
    import torch  # noqa: F401

    for name in ("harness.pipeline.eval", "plugins.compress.zlib", "json", "torch", "numpy", "pluggy"):
        __import__(name)
        assert why_foreign(name, None) is None, name
    assert "torch" in allowed_distributions() and "pytest" not in allowed_distributions()

    assert "_pytest" in (why_foreign("_pytest", None) or "")  # installed, but no runtime dependency


def test_a_module_on_pythonpath_outside_the_repo_is_refused_before_training(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "pgolf_outside_helper.py").write_text("WIDTH = 64\n")
    monkeypatch.syspath_prepend(str(outside))
    sub = write_tiny_submission(tmp_path / "outside")
    src = (sub / "train_gpt.py").read_text()
    (sub / "train_gpt.py").write_text(
        src.replace("def build_config()", "import pgolf_outside_helper\n\n\ndef build_config()", 1)
    )
    try:
        with pytest.raises(ConfigError, match=r"refused before training.*pgolf_outside_helper \(.*elsewhere"):
            run(build_submission_config(sub), submission_dir=sub, run_id="o", sets={"train.iterations": "1"})
    finally:
        sys.modules.pop("pgolf_outside_helper", None)
    assert not (sub / "runs" / "o").exists() or not any((sub / "runs" / "o").glob("*.pgolf"))


XZ_PLUGIN = '''
"""A third-party compressor plugin (lzma in the xz container) installed through the pgolf entry point."""
import lzma
from dataclasses import dataclass

from harness.api.hooks import hookimpl


@dataclass(frozen=True, kw_only=True)
class XzConfig:
    def build(self):
        return Xz()


class Xz:
    name = "xz2"

    def compress(self, data):
        return lzma.compress(data, format=lzma.FORMAT_XZ)

    def decompress(self, data, max_output_size):
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data, max_output_size + 1)
        if len(out) > max_output_size:
            raise ValueError("xz payload larger than declared")
        return out


@hookimpl
def pg_register_components(registry):
    registry.register("compressor", "xz2", XzConfig)
'''


def test_an_installed_plugin_package_is_bundled_and_runs_where_it_is_not_installed(
    tmp_path, default_dataset, monkeypatch
):
    import json
    import os
    from unittest import mock

    from harness.tools.verify import verify_run

    site = tmp_path / "site"
    (site / "pgolf_xzcodec-0.1.dist-info").mkdir(parents=True)
    (site / "pgolf_xzcodec-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pgolf-xzcodec\nVersion: 0.1\n"
    )
    (site / "pgolf_xzcodec-0.1.dist-info" / "entry_points.txt").write_text("[pgolf]\nxz = pgolf_xzcodec\n")
    (site / "pgolf_xzcodec").mkdir()
    (site / "pgolf_xzcodec" / "__init__.py").write_text(XZ_PLUGIN)
    monkeypatch.syspath_prepend(str(site))  # installed in this process only, not in verify's children
    sub = write_tiny_submission(tmp_path / "xz")
    src = (sub / "train_gpt.py").read_text().replace("ZlibConfig(level=9)", "XzConfig()")
    (sub / "train_gpt.py").write_text(
        src.replace("def build_config()", "from pgolf_xzcodec import XzConfig\n\n\ndef build_config()", 1)
    )
    sets = {"train.iterations": "2", "train.warmup_steps": "0", "train.val_loss_every": "0"}
    try:
        record = run(build_submission_config(sub), submission_dir=sub, run_id="x", sets=sets)
    finally:
        sys.modules.pop("pgolf_xzcodec", None)
    run_dir = sub / "runs" / "x"
    readable = (run_dir / "train_gpt_readable.py").read_text()
    assert "# ---- pgolf_xzcodec/__init__.py" in readable  # carried, so its bytes are in bytes_code
    assert "('harness', 'plugins', 'pgolf_xzcodec')" in readable  # and served by the bundle
    assert record["compressor"] == "xz2"
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
        report = verify_run(run_dir, timeout_s=600)
    checks = {c.name: c for c in report.checks}
    # The shipped file ran in a fresh process where pgolf_xzcodec is not importable, and scored the same.
    assert checks["rerun"].ok and checks["rerun_val_bpb"].ok, checks["rerun"].detail
    # The trusted scorer rebuilds from installed plugins only: here it cannot, and says which one.
    assert not checks["trusted_scorer"].ok and "unverifiable" in checks["trusted_scorer"].detail
    assert "xz2" in checks["trusted_scorer"].detail
    assert json.loads((run_dir / "submission.json").read_text())["valid"] is True
