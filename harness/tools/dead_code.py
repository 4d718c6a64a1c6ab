"""Dead-code removal for the shipped bundle: top-level functions, classes and constants that
nothing the run can execute refers to are left out of the counted ``train_gpt.py`` (pgolf
issue 13: "dead code removed at function level").

The analysis is over names, with `ast`, across every embedded module and the submission at
once, and errs towards keeping:

* Every top-level statement that is not a definition (imports, registrations, ``if`` blocks,
  calls) is kept, and so is every definition whose name starts and ends with ``__``
  (``__getattr__``, ``__version__``; ``__all__`` only when some module star-imports, since it
  does nothing else at run time and its strings would keep every name it lists), every
  decorated definition whose decorators are not only ``dataclass`` (a ``@hookimpl`` function
  is found by pluggy scanning the module, never by name), and every assignment whose value
  calls something (the call may register or change state).
* A definition (``def``, ``class``, or an assignment to plain names) is kept when its name
  occurs anywhere in kept code: as a name, an attribute (``module.func``), an imported name,
  a keyword argument, or a word inside a string constant (``getattr(obj, "name")``, string
  annotations). Names are matched globally, not per module, so a name used in one module keeps
  every definition of that name everywhere. Kept definitions add their own names; this runs
  to a fixed point.

What is still left out can be reached only by a name built at run time (``getattr(m, f"x{i}")``)
or through ``vars(module)``; the harness and plugins do neither for module-level
definitions (the scoring snapshot of `harness.pipeline.integrity` reads ``vars`` but only
compares, and sees the same pruned module twice). tests/e2e/test_submissions_e2e.py runs
every submission's shipped (pruned) file and checks that it reproduces the harness run.

The idea is the "tree shaking" of JavaScript bundlers (Rollup), on names instead of exports.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping

IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A word of a string constant that may name a definition (``getattr(module, "name")``)."""
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _is_export_list(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]


def _star_imported(trees: Iterable[ast.Module]) -> bool:
    imports = (n for t in trees for n in ast.walk(t) if isinstance(n, ast.ImportFrom))
    return any(a.name == "*" for n in imports for a in n.names)


def _defined_names(node: ast.stmt, exports_removable: bool = False) -> list[str] | None:
    """The names a removable top-level definition binds, or None when ``node`` always stays.
    ``exports_removable``: ``__all__`` is an ordinary definition (no module star-imports)."""
    if exports_removable and _is_export_list(node):
        return ["__all__"]
    if isinstance(node, _DEFINITIONS):
        if any(not _is_dataclass(d) for d in node.decorator_list):
            return None
        names = [node.name]
    elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        names = [t.id for t in node.targets]  # type: ignore[attr-defined]
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        names = [node.target.id]
    else:
        return None
    value = getattr(node, "value", None)
    if value is not None and any(isinstance(n, ast.Call) for n in ast.walk(value)):
        return None  # a call may register or change something: kept whatever its name
    if any(n.startswith("__") and n.endswith("__") for n in names):
        return None
    return names


def _is_dataclass(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name == "dataclass"


def _names_used(nodes: Iterable[ast.AST]) -> set[str]:
    """Every identifier ``nodes`` may refer to (see the module docstring), their own names aside."""
    used: set[str] = set()
    for top in nodes:
        docs = {
            id(n.value)
            for n in ast.walk(top)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
        }  # a bare string statement (a docstring) refers to nothing
        for node in ast.walk(top):
            if id(node) in docs:
                continue
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.rpartition(".")[2])
                used.update(node.name.split("."))
            elif isinstance(node, ast.keyword) and node.arg:
                used.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.update(IDENTIFIER_RE.findall(node.value))
    return used


def _definition_span(node: ast.stmt) -> tuple[int, int]:
    """First and last line (1-based, inclusive) of ``node`` with its decorators."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno


def unreferenced_definitions(sources: Mapping[str, str], roots: Iterable[str] = ()) -> dict[str, list[str]]:
    """{module: names of its top-level definitions nothing kept refers to} for ``sources``
    ({module or file name: source}); a module with none is absent. The modules in ``roots``
    (the submission) are kept whole."""
    return _unreferenced({name: ast.parse(source) for name, source in sources.items()}, set(roots))


def _unreferenced(trees: Mapping[str, ast.Module], whole: set[str]) -> dict[str, list[str]]:
    exports_removable = not _star_imported(trees.values())
    pending: dict[tuple[str, int], tuple[list[str], ast.stmt]] = {}
    kept: list[ast.stmt] = []
    for name, tree in trees.items():
        for index, node in enumerate(tree.body):
            names = None if name in whole else _defined_names(node, exports_removable)
            if names is None:
                kept.append(node)
            else:
                pending[(name, index)] = (names, node)
    used = _names_used(kept)
    changed = True
    while changed:
        changed = False
        for key, (names, node) in list(pending.items()):
            if any(n in used for n in names):
                del pending[key]
                used |= _names_used([node])
                changed = True
    out: dict[str, list[str]] = {}
    for (module, _index), (names, _node) in sorted(pending.items(), key=lambda kv: kv[0]):
        out.setdefault(module, []).extend(names)
    return out


def prune_sources(sources: Mapping[str, str], roots: Iterable[str] = ()) -> dict[str, str]:
    """``sources`` with the top-level definitions nothing refers to removed (whole lines;
    everything else, comments and blank lines included, stays as written); ``roots`` are kept
    whole and count as references."""
    trees = {name: ast.parse(source) for name, source in sources.items()}
    dead = _unreferenced(trees, set(roots))
    exports_removable = not _star_imported(trees.values())
    out = dict(sources)
    for module, names in dead.items():
        # Lines as ast numbers them: split on "\n" only (sources come with universal newlines),
        # never on the form feeds or line separators str.splitlines also breaks at.
        lines = sources[module].split("\n")
        drop: set[int] = set()
        for node in trees[module].body:
            defined = _defined_names(node, exports_removable)
            if defined is not None and all(n in names for n in defined):
                first, last = _definition_span(node)
                drop.update(range(first - 1, last))
        out[module] = "\n".join(line for i, line in enumerate(lines) if i not in drop)
    return out


def prune_rewritten(sources: Mapping[str, str], roots: Iterable[str] = ()) -> dict[str, str]:
    """Like `prune_sources`, for sources whose lines may hold several statements (minified code,
    after `harness.tools.unused_imports` removed the imports only annotations used, which can
    leave type aliases and the like unreferenced): a module that loses a definition is rendered
    again by `ast.unparse` (so minify it again afterwards); the others are returned as they were."""
    trees = {name: ast.parse(source) for name, source in sources.items()}
    dead = _unreferenced(trees, set(roots))
    exports_removable = not _star_imported(trees.values())
    out = dict(sources)
    for module, names in dead.items():
        tree = trees[module]
        gone = set(names)
        tree.body = [
            node
            for node in tree.body
            if (defined := _defined_names(node, exports_removable)) is None or not set(defined) <= gone
        ]
        out[module] = ast.unparse(tree)
    return out
