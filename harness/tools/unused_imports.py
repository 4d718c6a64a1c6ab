"""Shipped-form rewrite: imports that only annotations used are dropped once the annotations the
minifier removes are gone (pgolf issue 13: every shipped byte is taken from the model).

The harness imports many names for type hints only (``from typing import Any``,
``from harness.api.config import RunConfig``) and keeps others under ``if TYPE_CHECKING:``.
Minifying removes argument, return and variable annotations, which leaves those imports
unused: about 0.9 % of a compressed bundle. `drop_annotations` removes the same annotations
first (so the bundle is minified once), then `drop_unused_imports` removes those imports, over
all embedded modules at once, and errs towards keeping:

* only ``from <absolute module> import name`` names go, never ``import x`` (which may be
  imported for what importing it does), ``from __future__``, ``*`` or relative imports;
* a name stays when its module refers to it at all (any ``Name`` node, which includes the
  annotations that class bodies keep for dataclass fields), when any embedded module imports
  it from this one (``from this import name``: a re-export), and when any embedded module
  reads an attribute of that name or spells it in a string (``module.name``,
  ``getattr(module, "name")``);
* ``if TYPE_CHECKING:`` blocks without ``else`` go whole: they never run.

Importing the module of a removed name is never what a bundle relies on: every embedded module
is imported by the modules that use it. tests/e2e/test_submissions_e2e.py runs every
submission's shipped file and checks that it reproduces the harness run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping

from harness.tools.dead_code import IDENTIFIER_RE


def _referenced_elsewhere(trees: Mapping[str, ast.Module]) -> tuple[set[tuple[str, str]], set[str]]:
    """(module, name) pairs some module imports with ``from module import name``, and every
    attribute name or word of a string constant in any module."""
    imported: set[tuple[str, str]] = set()
    words: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.update((node.module, a.name) for a in node.names)
            elif isinstance(node, ast.Attribute):
                words.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.update(IDENTIFIER_RE.findall(node.value))
    return imported, words


def _is_type_checking_block(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or node.orelse:
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _blocks(tree: ast.Module) -> Iterator[tuple[ast.AST, str, list[ast.stmt]]]:
    """(node, field, statements) for every statement list in ``tree``."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield node, field, body


def _set_block(node: ast.AST, field: str, statements: list[ast.stmt]) -> None:
    # A block may not be empty: one whose only statements were removed gets ``pass``.
    setattr(node, field, statements or ([] if isinstance(node, ast.Module) else [ast.Pass()]))


def _drop_type_checking_blocks(tree: ast.Module) -> bool:
    changed = False
    for node, field, body in list(_blocks(tree)):
        kept = [s for s in body if not _is_type_checking_block(s)]
        if len(kept) != len(body):
            _set_block(node, field, kept)
            changed = True
    return changed


class _AnnotationRemover(ast.NodeTransformer):
    """Argument, return and function-local variable annotations out, as the minifier removes
    them (`harness.tools.minify`); class-level ones stay (dataclass fields are declared by them)."""

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> ast.AST:
        if not isinstance(node, ast.Lambda):
            node.returns = None
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                arg.annotation = None
        self.generic_visit(node)
        if not isinstance(node, ast.Lambda):
            node.body = [self._local(s) for s in node.body]
            node.body = [s for s in node.body if s is not None] or [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _local(self, stmt: ast.stmt) -> ast.stmt | None:
        # ``x: T = v`` -> ``x = v``; a bare ``x: T`` in a function does nothing at run time.
        if isinstance(stmt, ast.AnnAssign):
            if stmt.value is None:
                return None
            return ast.copy_location(ast.Assign(targets=[stmt.target], value=stmt.value), stmt)
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(stmt, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                kept = [s for s in (self._local(s) for s in block) if s is not None]
                setattr(stmt, field, kept or [ast.Pass()])
            elif field == "handlers" and isinstance(block, list):
                for handler in block:
                    kept = [s for s in (self._local(s) for s in handler.body) if s is not None]
                    handler.body = kept or [ast.Pass()]
        return stmt


def drop_annotations(source: str) -> str:
    """``source`` rendered by `ast.unparse` without the annotations the minifier removes (see
    `_AnnotationRemover`), so that `drop_unused_imports` can run before the one minifying pass."""
    tree = _AnnotationRemover().visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree))


def drop_unused_imports(sources: Mapping[str, str]) -> dict[str, str]:
    """{module: source} with the imported names nothing uses removed (see the module docstring);
    a source that loses nothing is returned as it was, one that does is re-rendered by
    `ast.unparse` (so minify it again afterwards)."""
    trees = {name: ast.parse(source) for name, source in sources.items()}
    changed = {name: _drop_type_checking_blocks(tree) for name, tree in trees.items()}
    imported, words = _referenced_elsewhere(trees)
    out = dict(sources)
    for module, tree in trees.items():
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}

        def keep(alias: ast.alias, names: set[str] = names, module: str = module) -> bool:
            bound = alias.asname or alias.name
            return alias.name == "*" or bound in names or (module, bound) in imported or bound in words

        for node, field, body in list(_blocks(tree)):
            kept: list[ast.stmt] = []
            for stmt in body:
                if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module != "__future__":
                    names_kept = [a for a in stmt.names if keep(a)]
                    if len(names_kept) != len(stmt.names):
                        changed[module] = True
                        if not names_kept:
                            continue
                        stmt.names = names_kept
                kept.append(stmt)
            if len(kept) != len(body):
                _set_block(node, field, kept)
        if changed[module]:
            out[module] = ast.unparse(tree)
    return out
