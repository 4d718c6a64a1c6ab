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
    seen = _bundled_modules()
    assert "harness.pipeline.runner" in seen
    for name in seen:
        path = module_file(ROOT, name)
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        reads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "__doc__"]
        reads += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "__doc__"]
        assert not reads, f"{name} reads __doc__ at line(s) {reads}"


PRIVATE_SAMPLE = """
_CACHE_LIMIT = 8
def _helper_with_long_name(x):
    return x + _CACHE_LIMIT
class _PrivateAccumulator:
    total = 0
def public_entry(x):
    acc = _PrivateAccumulator()
    return _helper_with_long_name(x) + acc.total
def _bootstrap_hook():
    return 1
"""


def test_private_globals_are_renamed_public_names_and_kept_names_stay():
    out = minify_source(PRIVATE_SAMPLE, "private.py", keep=("_bootstrap_hook",))
    for gone in ("_CACHE_LIMIT", "_helper_with_long_name", "_PrivateAccumulator"):
        assert gone not in out
    ns = _run(out)
    assert ns["public_entry"](1) == 9 and ns["_bootstrap_hook"]() == 1


def _bundled_modules() -> list[str]:
    seen: set[str] = set()
    for sub in sorted((ROOT / "submissions").glob("*/train_gpt.py")):
        seen.update(collect_modules(sub, ROOT, BUNDLED_PACKAGES, ("harness.datasets.default",)))
    return sorted(seen)


def _private_globals(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_bundled_module_names_a_private_global_in_a_string():
    """Private globals are renamed in the shipped bundle, so a string naming one (``getattr``,
    ``globals()[...]``) would find nothing there while the repository run finds it."""
    checked = 0
    for name in _bundled_modules():
        path = module_file(ROOT, name)
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        private = _private_globals(tree)
        checked += len(private)
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        named = sorted(private & strings)
        assert not named, f"{name} names private global(s) {named} in a string"
    assert checked > 50  # the scan saw the bundled modules' private helpers
