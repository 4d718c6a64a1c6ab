"""The minifier behind the shipped bundle (harness/tools/minify.py): what it removes, what
it must keep for the code to behave the same, and the one thing bundled code must not do."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from harness.api.errors import ConfigError
from harness.tools.bundle import BUNDLED_PACKAGES, collect_modules, module_file
from harness.tools.minify import minify_source

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''"""Module docstring."""
from __future__ import annotations
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Config:
    """Class docstring."""

    width: int = 64
    """Field docstring."""
    name: str = "x"


def scaled(value: float, *, factor: float = 2.0) -> float:
    """Function docstring."""
    # a comment
    intermediate_result: float = value * factor
    return intermediate_result
'''


def _run(source: str) -> dict:
    """The namespace of ``source`` run as module ``sample`` (dataclasses look their module up)."""
    module = types.ModuleType("sample")
    sys.modules["sample"] = module
    try:
        exec(compile(source, "sample.py", "exec"), module.__dict__)
    finally:
        del sys.modules["sample"]
    return module.__dict__


def test_docstrings_comments_and_local_names_go_fields_and_keywords_stay():
    out = minify_source(SAMPLE, "sample.py")
    assert "docstring" not in out and "a comment" not in out and "intermediate_result" not in out
    assert len(out) < len(SAMPLE) / 2
    ns = _run(out)
    assert [f.name for f in ns["fields"](ns["Config"])] == ["width", "name"]
    assert ns["Config"]() == ns["Config"](width=64, name="x")
    assert ns["scaled"](3.0, factor=0.5) == 1.5


def test_unminifiable_source_names_its_file():
    with pytest.raises(ConfigError, match=r"harness/broken\.py: cannot be minified"):
        minify_source("def f(:\n", "harness/broken.py")


def test_no_bundled_module_reads_its_own_docstrings():
    """Minification drops docstrings, so code that ships must never read ``__doc__``."""
    extra = ("harness.datasets.default",)
    seen: set[str] = set()
    for sub in sorted((ROOT / "submissions").glob("*/train_gpt.py")):
        seen.update(collect_modules(sub, ROOT, BUNDLED_PACKAGES, extra))
    assert "harness.pipeline.runner" in seen
    for name in sorted(seen):
        path = module_file(ROOT, name)
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        reads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "__doc__"]
        reads += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "__doc__"]
        assert not reads, f"{name} reads __doc__ at line(s) {reads}"
