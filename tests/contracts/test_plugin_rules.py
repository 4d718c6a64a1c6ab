"""Style rules enforced by tests: plugins import no other plugin, every module has a docstring,
every Config field is documented, registry name == module name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.pipeline.plugin_manager import full_manager

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_FILES = sorted(p for p in (ROOT / "plugins").rglob("*.py") if p.name != "__init__.py")
HARNESS_FILES = sorted((ROOT / "harness").rglob("*.py"))


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("path", PLUGIN_FILES + HARNESS_FILES, ids=_rel)
def test_module_has_docstring(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), (
        f"{_rel(path)} needs a module docstring saying what it does and where it comes from"
    )


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=_rel)
def test_plugin_imports_no_other_plugin(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["<relative>"]
        for name in names:
            assert not name.startswith("plugins") and name != "<relative>", f"{_rel(path)} imports {name}"


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=_rel)
def test_plugin_has_only_definitions_at_module_level(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = (
        ast.Import,
        ast.ImportFrom,
        ast.FunctionDef,
        ast.ClassDef,
        ast.Assign,
        ast.AnnAssign,
        ast.Expr,
        ast.If,
    )
    for node in tree.body:
        assert isinstance(node, allowed), f"{_rel(path)}:{node.lineno} runs code at import time"
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant), (
                f"{_rel(path)}:{node.lineno} calls something at import time"
            )


def _config_classes():
    manager = full_manager(entrypoints=False)
    return [(c.kind, c.name, c.config_cls) for c in manager.registry]


@pytest.mark.parametrize(
    ("kind", "name", "cls"), _config_classes(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_config_fields_documented_and_name_is_module(kind, name, cls):
    import inspect

    assert cls.__module__.rsplit(".", 1)[-1] == name, f"{kind} {name!r} is defined in {cls.__module__}"
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} must be frozen"
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    undocumented = []
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            nxt = body[i + 1] if i + 1 < len(body) else None
            if not (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                undocumented.append(node.target.id)
    assert not undocumented, f"{cls.__name__} fields without a docstring: {undocumented}"
