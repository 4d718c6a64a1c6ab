"""`harness.tools.file_audit`: files read under the audit hook are judged against the allow-list
(pgolf issue 11). Each case runs in a fresh interpreter, since an audit hook cannot be removed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = """
import json, sys
from pathlib import Path
from harness.tools.file_audit import FileAudit
audit = FileAudit()
audit.install()
site, allowed = Path(sys.argv[1]), Path(sys.argv[2])
import pgolf_audited_pkg                        # code on sys.path: allowed
allowed.read_bytes()                           # named in the allow-list
(site / "pgolf_audited_pkg" / "payload.bin").read_bytes()   # data beside a package: not code
Path("/proc/self/status").read_text()          # a kernel pseudo-file
print(json.dumps(audit.violations([allowed])))
"""


def test_data_beside_a_package_is_a_violation_code_and_allowed_files_are_not(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "pgolf_audited_pkg").mkdir(parents=True)
    (site / "pgolf_audited_pkg" / "__init__.py").write_text("X = 1\n")
    (site / "pgolf_audited_pkg" / "payload.bin").write_bytes(b"\0" * 100)
    allowed = tmp_path / "model.pgolf"
    allowed.write_bytes(b"artifact")
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), str(allowed)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        str(site / "pgolf_audited_pkg" / "payload.bin")
    ]


def test_the_trusted_scorer_probes_the_temp_dir_before_auditing(monkeypatch):
    """`tempfile.gettempdir()` opens a random probe file under /tmp the first time it runs; under the
    hook that read failed `pgolf verify`'s file_access check on a real published run (conv_moe)."""
    import tempfile

    from harness.tools import trusted_score
    from harness.tools.file_audit import FileAudit

    monkeypatch.setattr(tempfile, "tempdir", None)  # as in a fresh process: nothing cached yet
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # the default folder is under it
    seen = {}

    def install(self):
        seen["tempdir"] = tempfile.tempdir
        raise SystemExit(0)  # stop before scoring: only the order is under test

    monkeypatch.setattr(FileAudit, "install", install)
    with pytest.raises(SystemExit):
        trusted_score.main(["a.pgolf", "--config", "c.json", "--data-path", "d", "--tokenizer", "t"])
    assert seen["tempdir"] is not None
