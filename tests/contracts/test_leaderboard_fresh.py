"""The committed ``leaderboard/`` must equal what `harness.leaderboard.render.regenerate` produces from
the committed run files (docs/pitfalls.md §3: a hand-edited or stale leaderboard is a bug).

Only files tracked by git under ``submissions/*/runs/`` count (``git ls-files``; read-only),
so a developer's local, untracked runs neither break nor satisfy the check; they are copied
into a temporary tree and regenerated there. On a clean clone with no committed runs the
committed leaderboard is the empty "no runs yet" version."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = ("submission.json", "train.log")


def _tracked_run_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--", "submissions"],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"git ls-files failed ({exc}); cannot tell committed runs from local ones")
    files = [f for f in out.split("\0") if f]
    return [
        f
        for f in files
        if len(Path(f).parts) == 5 and Path(f).parts[2] == "runs" and Path(f).name in RUN_FILES
    ]


def test_committed_leaderboard_is_fresh(tmp_path: Path) -> None:
    pytest.importorskip(
        "harness.leaderboard.records",
        reason="harness.leaderboard.records (the importer) is not importable yet",
    )
    from harness.leaderboard.render import FILES, regenerate

    for rel in _tracked_run_files():
        dest = tmp_path / "repo" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, dest)
    (tmp_path / "repo" / "submissions").mkdir(parents=True, exist_ok=True)
    fresh = regenerate(tmp_path / "repo", tmp_path / "out")
    stale = []
    for path in fresh:
        committed = REPO / "leaderboard" / path.name
        if not committed.is_file() or committed.read_bytes() != path.read_bytes():
            stale.append(path.name)
    assert [p.name for p in fresh] == list(FILES)
    assert not stale, (
        f"leaderboard/{', '.join(stale)} differ from regeneration: run `pgolf leaderboard` and commit"
    )
