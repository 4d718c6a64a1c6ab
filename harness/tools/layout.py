"""The package layout as data: which layer each module belongs to, the static imports
between layers, and the drawing of them (``python -m harness.tools.layout`` prints it;
docs/architecture.md holds the current one, and a contract test keeps the two equal).

Layers, and the only directions imports may point (pattern: the layered-architecture
contracts of import-linter, checked here with `ast`, nothing imported or run):

    api <- plugins <- submissions        api <- pipeline <- datasets, leaderboard, tools
                      pipeline <- submissions (they call ``harness.pipeline.runner.run``)

A module the pipeline needs only for some configurations (the bundler, checkpointing, the
default dataset's builder) is reached by name at run time (``importlib.import_module``), so
no static arrow points back and no bundle carries it unless the configuration asks for it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ALLOWED: dict[str, frozenset[str]] = {
    "api": frozenset({"api"}),
    "plugins": frozenset({"api"}),
    "pipeline": frozenset({"api", "pipeline"}),
    "datasets": frozenset({"api", "pipeline", "datasets"}),
    "leaderboard": frozenset({"api", "leaderboard"}),
    "tools": frozenset({"api", "pipeline", "datasets", "leaderboard", "tools", "plugins", "entry"}),
    "entry": frozenset({"api", "pipeline"}),
    "submissions": frozenset({"api", "pipeline", "plugins"}),
}
"""Layer -> the layers its modules may import (``entry`` is ``harness/run.py``)."""


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name inside the project, or None (stdlib, third party)."""
    parts = module.split(".")
    if parts[0] == "plugins":
        return "plugins"
    if parts[0] == "submissions":
        return "submissions"
    if parts[0] != "harness":
        return None
    if len(parts) == 1:
        return "api"  # the root package holds the version only
    if parts[1] == "run":
        return "entry"
    return parts[1] if parts[1] in ALLOWED else None


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of a source file under ``root``."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def static_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, at any depth, ``TYPE_CHECKING`` blocks included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def source_files(root: Path = ROOT) -> list[Path]:
    """Every project source file the layers cover."""
    files = [*sorted((root / "harness").rglob("*.py")), *sorted((root / "plugins").rglob("*.py"))]
    return files + sorted((root / "submissions").glob("*/train_gpt.py"))


def layer_imports(root: Path = ROOT) -> list[tuple[Path, int, str, str, str]]:
    """(file, line, importer layer, imported layer, imported module) for every import between
    project modules."""
    out = []
    for path in source_files(root):
        src = "submissions" if path.parts[-3] == "submissions" else layer_of(module_name(path, root))
        for line, target in static_imports(path):
            dst = layer_of(target)
            if src is not None and dst is not None:
                out.append((path, line, src, dst, target))
    return out


def violations(root: Path = ROOT) -> list[str]:
    """One line per import that points against `ALLOWED`."""
    return [
        f"{path.relative_to(root)}:{line}: {src} imports {dst} ({target})"
        for path, line, src, dst, target in layer_imports(root)
        if dst not in ALLOWED[src]
    ]


def edges(root: Path = ROOT) -> set[tuple[str, str]]:
    """(importer layer, imported layer) pairs across layers."""
    return {(src, dst) for _, _, src, dst, _ in layer_imports(root) if src != dst}


def drawing(root: Path = ROOT) -> str:
    """The layer graph as a Mermaid flowchart; an arrow A --> B reads "A imports B" (counts
    are left out so that the drawing changes only when an arrow appears or goes)."""
    lines = ["```mermaid", "flowchart RL"]
    for src, dst in sorted(edges(root)):
        lines.append(f"    {src} --> {dst}")
    return "\n".join(lines + ["```"])


if __name__ == "__main__":
    print(drawing())
