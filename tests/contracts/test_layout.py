"""The layout's rules, checked on the source (no import is run): imports point one way
between layers (`harness.tools.layout.ALLOWED`), docs/architecture.md shows the current
drawing, no module under harness/ or plugins/ exceeds 400 lines unless its docstring says
why, and no module imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.tools import layout

ROOT = layout.ROOT
MAX_LINES = 400
WHY_LONG = "Longer than 400 lines because"


def test_imports_point_one_way():
    assert layout.violations() == []


def test_the_import_drawing_in_the_docs_is_current():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert layout.drawing() in doc, "regenerate it: python -m harness.tools.layout"


def test_layer_of_names_every_package():
    assert layout.layer_of("harness.api.hooks") == "api"
    assert layout.layer_of("harness.pipeline.runner") == "pipeline"
    assert layout.layer_of("harness.tools.bundle") == "tools"
    assert layout.layer_of("harness.run") == "entry"
    assert layout.layer_of("plugins.arch.gpt") == "plugins"
    assert layout.layer_of("torch.nn") is None
    packages = {p.name for p in (ROOT / "harness").iterdir() if (p / "__init__.py").is_file()}
    assert {layout.layer_of(f"harness.{p}") for p in packages} <= set(layout.ALLOWED)


FILES = sorted([*(ROOT / "harness").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_short_or_says_why(path: Path):
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert WHY_LONG in doc, f"{lines} lines: split it, or say in the docstring '{WHY_LONG} ...'"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_imported_from_another_module(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in ("harness", "plugins")
        ):
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private, f"line {node.lineno}: imports {private} from {node.module}"
