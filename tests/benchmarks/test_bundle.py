"""Bundle time: `harness.tools.bundle.bundle_submission` on ``submissions/baseline``, readable and
lzma+base85 self-extracting (the form a run ships by default)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from harness.tools.bundle import bundle_submission
from tests.benchmarks.conftest import ROOT


@pytest.mark.benchmark(group="bundle")
@pytest.mark.parametrize("compress", [False, True], ids=["readable", "compressed"])
def test_bundle(bench: Any, tmp_path: Path, compress: bool) -> None:
    counter = itertools.count()
    infos = []

    def setup() -> tuple[tuple, dict]:
        return (tmp_path / f"b{next(counter)}" / "train_gpt.py",), {}

    def run(out: Path) -> None:
        out.parent.mkdir()
        infos.append(bundle_submission(ROOT / "submissions" / "baseline", out, compress=compress))

    bench.pedantic(run, setup=setup, rounds=5, iterations=1)
    bench.extra_info.update(
        submission="baseline", compress=compress, bytes=infos[-1].bytes, modules=len(infos[-1].modules)
    )
    assert len({i.sha256 for i in infos}) == 1  # bundles are deterministic
