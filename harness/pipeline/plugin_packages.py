"""Third-party plugin packages: the top-level packages of the ``pgolf`` entry-point group, and where their
sources live, so the bundler can carry them (pgolf issue 11: every byte that runs is counted).

A package that registers plugins through the ``pgolf`` entry point (`harness.pipeline.plugin_manager`,
pluggy's ``load_setuptools_entrypoints``) is code the run imports; the shipped ``train_gpt.py`` must embed
it like ``harness/`` and ``plugins/``, or it would run uncounted and fail where the package is not installed.
Nothing is imported here: `importlib.util.find_spec` locates a top-level package without running it.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from pathlib import Path

from harness.api.hooks import PROJECT


def plugin_package_roots(exclude: tuple[str, ...] = ("harness", "plugins")) -> dict[str, Path]:
    """``{top-level package: the folder holding it}`` for every installed ``pgolf`` entry point."""
    roots: dict[str, Path] = {}
    for ep in md.entry_points(group=PROJECT):
        top = ep.value.split(":", 1)[0].strip().partition(".")[0]
        if not top or top in exclude or top in roots:
            continue
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.origin or not spec.has_location:
            continue
        origin = Path(spec.origin).resolve()
        roots[top] = origin.parents[1] if spec.submodule_search_locations is not None else origin.parent
    return roots
